"""train.py and sample.py as a user runs them (subprocesses)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image
from support import ROOT, load_config, offline_data, run_script

pytestmark = pytest.mark.cli

CONFIG = "configs/vae.py:fashion_mnist,tiny"


def _offline_flags():
    config = offline_data(load_config(ROOT / "configs" / "vae.py", "fashion_mnist,tiny"))
    if config.data.source == "shapes":
        return [
            "--config.data.source=shapes",
            "--config.data.num_train=256",
            "--config.data.num_test=64",
        ]
    return []


def test_train_then_sample_end_to_end(tmp_path):
    workdir = str(tmp_path / "run")
    result = run_script("train.py", f"--config={CONFIG}", f"--workdir={workdir}", *_offline_flags())
    assert result.returncode == 0, result.stderr[-3000:]
    assert "summary | steps=4" in result.stdout and "final eval" in result.stdout
    assert {"checkpoints", "config.json", "metrics.jsonl", "samples"} <= set(os.listdir(workdir))

    out = str(tmp_path / "grid.png")
    result = run_script("sample.py", f"--workdir={workdir}", "--num=9", "--seed=1", f"--out={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    images = np.load(str(tmp_path / "grid.npz"))["images"]
    assert images.shape == (9, 28, 28, 1) and 0 <= images.min() and images.max() <= 1
    assert Image.open(out).size[0] > 28 * 3

    result = run_script("sample.py", f"--workdir={workdir}", "--num=8", "--reconstruct")
    assert result.returncode == 0, result.stderr[-3000:]
    arrays = np.load(os.path.join(workdir, "reconstructions.npz"))
    assert arrays["originals"].shape == arrays["reconstructions"].shape == (8, 28, 28, 1)


def test_sample_without_checkpoint_and_bad_config_exit_with_a_message(tmp_path):
    result = run_script("sample.py", f"--workdir={tmp_path}")
    assert result.returncode == 2 and "holds no jaxgen run" in result.stderr
    result = run_script(
        "train.py",
        f"--config={CONFIG}",
        f"--workdir={tmp_path / 'r'}",
        "--config.loss.likelihood=laplace",
        *_offline_flags(),
    )
    assert result.returncode == 2
    assert "loss.likelihood='laplace' is not one of" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_saves_a_checkpoint_and_the_run_resumes(tmp_path):
    workdir = tmp_path / "run"
    args = [
        sys.executable,
        "train.py",
        f"--config={CONFIG}",
        f"--workdir={workdir}",
        "--config.train.num_steps=100000",
        "--config.train.log_every=1",
        "--config.train.checkpoint_every=0",
        *_offline_flags(),
    ]
    proc = subprocess.Popen(
        args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-3000:]
    assert "stopped early" in stdout
    last = json.loads(metrics.read_text().splitlines()[-1])["step"]
    assert sorted(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit()) == [last]

    args[4] = f"--config.train.num_steps={last + 2}"
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resumed from checkpoint at step {last}" in result.stdout
    assert f"summary | steps={last + 2}" in result.stdout


def test_sample_py_runs_every_diffusion_solver(tmp_path):
    workdir = str(tmp_path / "diff")
    result = run_script(
        "train.py",
        "--config=configs/diffusion.py:fashion_mnist,tiny",
        f"--workdir={workdir}",
        *_offline_flags(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Every solver samples in-process (tests/test_diffusion_family.py); here, that the solver
    # flags reach it: --eta for DDIM, --order and --method for DPM-Solver(++).
    for solver, extra in (
        ("ddim", ["--eta=0.5"]),
        ("dpm_solver", ["--order=3", "--method=singlestep"]),
    ):
        out = str(tmp_path / f"{solver}.png")
        result = run_script(
            "sample.py",
            f"--workdir={workdir}",
            "--num=4",
            f"--solver={solver}",
            "--steps=6",
            *extra,
            f"--out={out}",
        )
        assert result.returncode == 0, (solver, result.stderr[-3000:])
        images = np.load(out.replace(".png", ".npz"))["images"]
        assert images.shape == (4, 28, 28, 1) and np.isfinite(images).all()
        assert 0 <= images.min() and images.max() <= 1 and images.std() > 0
    result = run_script("sample.py", f"--workdir={workdir}", "--solver=euler")
    assert result.returncode == 2 and "solver='euler' is not one of" in result.stderr


def test_sample_py_guided_generation(tmp_path):
    """CFG with --class=all and a negative class, classifier guidance with DDPM's mean shift,
    and an unknown class."""
    diff, clf = str(tmp_path / "cfg"), str(tmp_path / "clf")
    for config, workdir in (
        ("configs/diffusion.py:fashion_mnist,tiny,cond", diff),
        ("configs/classifier.py:fashion_mnist,tiny", clf),
    ):
        result = run_script(
            "train.py", f"--config={config}", f"--workdir={workdir}", *_offline_flags()
        )
        assert result.returncode == 0, result.stderr[-3000:]
    out = str(tmp_path / "cfg.png")
    result = run_script(
        "sample.py",
        f"--workdir={diff}",
        "--sampler=dpm_solver++",
        "--steps=4",
        "--guidance=cfg",
        "--scale=3",
        "--class=all",
        "--negative-class=1",
        "--num=20",
        f"--out={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    saved = np.load(out.replace(".png", ".npz"))
    assert saved["images"].shape == (20, 28, 28, 1) and np.isfinite(saved["images"]).all()
    np.testing.assert_array_equal(saved["labels"], np.repeat(np.arange(10), 2))
    width, height = Image.open(out).size
    assert height > 4 * width  # 10 rows of 2
    result = run_script(
        "sample.py",
        f"--workdir={diff}",
        "--solver=ddpm",
        "--steps=4",
        "--guidance=classifier",
        f"--classifier-workdir={clf}",
        "--scale=2",
        "--class=3",
        "--num=4",
        f"--out={tmp_path / 'clf.png'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (np.load(tmp_path / "clf.npz")["labels"] == 3).all()

    result = run_script(
        "sample.py", f"--workdir={diff}", "--guidance=cfg", "--scale=3", "--class=12"
    )
    assert result.returncode == 2 and "--class='12' is not a class" in result.stderr

    # --rescale and --interval reach the sampler: each changes the images.
    common = [f"--workdir={diff}", "--steps=4", "--guidance=cfg", "--scale=3", "--class=2"]
    grids = {}
    for name, extra in (("plain", []), ("rescale", ["--rescale=0.7"]), ("interval", [])):
        if name == "interval":
            extra = ["--interval=0.5,1.0"]
        out = str(tmp_path / f"{name}.png")
        result = run_script("sample.py", *common, "--num=4", *extra, f"--out={out}")
        assert result.returncode == 0, (name, result.stderr[-3000:])
        grids[name] = np.load(out.replace(".png", ".npz"))["images"]
    # (Sampling is deterministic, so any change shows the flag reached the sampler; the tiny
    # model's images are nearly binary, so the changes are small.)
    assert not np.array_equal(grids["rescale"], grids["plain"])
    assert not np.array_equal(grids["interval"], grids["plain"])

    # Flags left out take the config's sample_defaults (the cond variant: CFG at w = 2), not
    # the flags' own defaults (no guidance).
    common = [f"--workdir={diff}", "--steps=4", "--class=2", "--num=4"]
    for name, extra in (
        ("default", []),
        ("w2", ["--guidance=cfg", "--scale=2"]),
        ("none", ["--guidance=none"]),
    ):
        out = str(tmp_path / f"{name}.png")
        result = run_script("sample.py", *common, *extra, f"--out={out}")
        assert result.returncode == 0, (name, result.stderr[-3000:])
        grids[name] = np.load(out.replace(".png", ".npz"))["images"]
    np.testing.assert_array_equal(grids["default"], grids["w2"])
    assert not np.array_equal(grids["default"], grids["none"])

    # --eval_only: the run's config with a new eval section, metrics printed as JSON.
    result = run_script(
        "train.py",
        "--config=configs/diffusion.py:fashion_mnist,tiny,cond",
        f"--workdir={diff}",
        "--eval_only",
        "--config.eval.final_num_examples=48",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(result.stdout[result.stdout.index("{") :])
    assert metrics["examples"] == 48 and np.isfinite(metrics["loss"])


def test_sample_py_chunks_and_refuses_nan_images_bad_values_and_folders(tmp_path, tiny_vae_config):
    """--batch chunks as sampling.generate does; a checkpoint with NaN parameters, --batch=0,
    --temperature=inf and an --out that is a folder exit 2 with one error line and write
    nothing (no temporary file either)."""
    import jax
    import jax.numpy as jnp

    from jaxgen.engine import checkpoint, loop, sampling

    # Two runs written directly (sampling needs no training): a fresh one, and one whose
    # parameters are NaN (a diverged run).
    setup = loop.make_setup(tiny_vae_config, need_data=False)
    state = setup.init_state()
    nan = lambda x: jnp.full_like(x, jnp.nan) if jnp.issubdtype(x.dtype, jnp.floating) else x
    workdir, broken = str(tmp_path / "run"), str(tmp_path / "broken")
    for path, run_state in (
        (workdir, state),
        (broken, state.replace(players=jax.tree.map(nan, state.players))),
    ):
        checkpoint.save_config(path, tiny_vae_config)
        checkpoints = checkpoint.Checkpointer(path)
        checkpoints.save(0, run_state, force=True)
        checkpoints.close()

    out = tmp_path / "ok" / "grid.png"
    result = run_script("sample.py", f"--workdir={workdir}", "--num=5", "--batch=2", f"--out={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sample: 100%" in result.stderr  # a progress bar: three chunks
    kwargs = sampling.prepare(setup, {}, None)
    expected = sampling.generate(setup, state, jax.random.PRNGKey(0), 5, kwargs, batch=2)
    np.testing.assert_array_equal(np.load(tmp_path / "ok" / "grid.npz")["images"], expected[0])

    def refused(*args, match):
        result = run_script("sample.py", *args)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.returncode == 2 and len(errors) == 1, result.stderr[-3000:]
        assert match in errors[0] and "Traceback" not in result.stderr, errors[0]
        return errors[0]

    line = refused(f"--workdir={broken}", "--num=5", "--batch=2", match="5 of 5 images")
    assert "NaN or Inf" in line and "diverged or corrupt checkpoint" in line
    assert sorted(os.listdir(broken)) == ["checkpoints", "config.json"]  # no samples.*
    refused(f"--workdir={broken}", "--batch=0", match="--batch=0: 0 is not a positive integer")
    refused(f"--workdir={workdir}", "--temperature=inf", match="--temperature=inf: is not a finite")
    folder = tmp_path / "ok"
    refused(f"--workdir={workdir}", f"--out={folder}", match=f"--out ({folder}) is a folder")
    refused(f"--workdir={workdir}", f"--out={out}/x.png", match=f"{out} is a file, not a folder")
    assert sorted(os.listdir(folder)) == ["grid.npz", "grid.png"]
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]
