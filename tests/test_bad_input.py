"""Bad input at every command-line tool: exit code 2, one ``error:`` line that names the flag or
config key, and nothing written or changed.

``ROWS`` is the table: a tool, its arguments and what its error line must name. Every flag of
``train.py``, ``sample.py`` and ``python -m jaxgen.eval``, and every bounded sampling option of
every family, must have a row (``test_every_flag_has_a_row``): add one with each new flag.
Placeholders in the arguments: ``{<family>}`` is a finished tiny run of that family (``{vqvae}``,
``{maskgit}``, ...), ``{tokenizer_config}`` a folder with a tokenizer's ``config.json`` and no
checkpoint, ``{evaluator}`` a finished but weak (tiny) MNIST evaluator, ``{new}`` a workdir
that does not exist yet, ``{file}`` a plain file, ``{dir}`` the folder of all of them and
``{nan_npz}`` / ``{float255_npz}`` / ``{labels_npz}`` / ``{npy}`` bad sample files.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from support import ROOT, require_data, train_tiny

pytestmark = pytest.mark.cli

MNIST = ROOT.parent / "shared" / "data" / "mnist.npz"
HUGE = "99999999999999999999"  # over 2**64: an OverflowError deep inside, before

# (tool, arguments, regex the single error line must match: the flag or key it names)
ROWS = [
    # train.py
    (
        "train",
        ["--config=configs/gan.py:mnist,tiny", "--workdir={new}", "--config.gan.n_critic=0"],
        r"gan\.n_critic=0",
    ),
    (
        "train",
        ["--config=configs/vae.py:mnist,tiny", "--workdir={new}", f"--config.seed={HUGE}"],
        r"seed=",
    ),
    (
        "train",
        ["--config=configs/vae.py:mnist,tiny", "--workdir={new}", "--config.train.batch_size=0"],
        r"train\.batch_size=0",
    ),
    (
        "train",
        [
            "--config=configs/vae.py:mnist,tiny",
            "--workdir={new}",
            "--config.data.path={dir}/none.npz",
        ],
        r"data\.path=.*JAXGEN_MNIST",
    ),
    (
        "train",
        ["--config=configs/vae.py:mnist,tiny", "--workdir={new}", "--config.no.such=1"],
        r"unknown config key",
    ),
    ("train", ["--config=configs/nope.py", "--workdir={new}"], r"nope"),
    ("train", ["--config=configs/vae.py:mnist,tiny", "--workdir={file}"], r"a_file"),
    (
        "train",
        [
            "--config=configs/maskgit.py:mnist,tiny",
            "--workdir={new}",
            "--config.first_stage.workdir={tokenizer_config}",
        ],
        r"first_stage\.workdir=.*no checkpoint",
    ),
    (
        "train",
        [
            "--config=configs/maskgit.py:fashion_mnist,tiny",
            "--workdir={new}",
            "--config.first_stage.workdir={vqvae}",
        ],
        r"first_stage\.allow_other_data",
    ),
    (
        "train",
        [
            "--config=configs/vqgan.py:mnist,tiny",
            "--workdir={new}",
            "--config.vqgan.lpips_weights={dir}/none.ckpt",
        ],
        r"lpips_weights|none\.ckpt",
    ),
    ("train", ["--workdir={new}", "--eval_only=maybe"], r"--eval_only"),
    ("train", ["--workdir={new}", "--eval_only"], r"--workdir"),
    (
        "train",
        ["--config=configs/vae.py:mnist,tiny", "--workdir={new}", "--allow_config_change=maybe"],
        r"--allow_config_change",
    ),
    # sample.py
    ("sample", ["--workdir={dir}/none"], r"--workdir="),
    ("sample", ["--workdir={gan}", "--num=0"], r"--num"),
    ("sample", ["--workdir={gan}", "--batch=0"], r"--batch"),
    ("sample", ["--workdir={gan}", f"--seed={HUGE}"], r"--seed"),
    ("sample", ["--workdir={gan}", "--seed=-1"], r"--seed"),
    ("sample", ["--workdir={gan}", "--out={file}/grid.png"], r"--out"),
    ("sample", ["--workdir={gan}", "--out={dir}"], r"--out"),
    ("sample", ["--workdir={gan}", "--class=3"], r"--class"),
    ("sample", ["--workdir={diffusion}", "--prompt=a 3"], r"--prompt is for text-conditional"),
    ("sample", ["--workdir={gan}", "--negative-prompt=9"], r"--negative-prompt is for text"),
    ("sample", ["--workdir={vae}", "--prompts-file={file}"], r"--prompts-file is for text"),
    ("sample", ["--workdir={vqvae}", "--class=3"], r"--class"),
    ("sample", ["--workdir={gan}", "--reconstruct=maybe"], r"--reconstruct"),
    ("sample", ["--workdir={gan}", "--temperature=0"], r"--temperature"),
    ("sample", ["--workdir={gan}", "--temperature=-1"], r"--temperature"),
    ("sample", ["--workdir={gan}", "--top-k=3"], r"--top-k"),
    ("sample", ["--workdir={vae}", "--temperature=0"], r"--temperature"),
    ("sample", ["--workdir={pixelcnn}", "--temperature=0"], r"--temperature"),
    ("sample", ["--workdir={gpt}", "--temperature=nan"], r"--temperature"),
    ("sample", ["--workdir={gpt}", "--top-k=-1"], r"--top-k"),
    ("sample", ["--workdir={gpt}", "--top-p=0"], r"--top-p"),
    ("sample", ["--workdir={maskgit}", "--choice-temperature=-5"], r"--choice-temperature"),
    ("sample", ["--workdir={maskgit}", "--steps=-1"], r"--steps"),
    ("sample", ["--workdir={maskgit}", "--temperature=0"], r"--temperature"),
    ("sample", ["--workdir={diffusion}", "--eta=-1"], r"--eta"),
    ("sample", ["--workdir={diffusion}", "--steps=-3"], r"--steps"),
    ("sample", ["--workdir={diffusion}", "--order=4"], r"--order"),
    (
        "sample",
        ["--workdir={diffusion}", "--guidance=cfg", "--scale=2", "--rescale=2"],
        r"--rescale",
    ),
    # python -m jaxgen.eval
    ("eval", ["--workdir={gan}", "--evaluator={evaluator}"], r"--allow_weak_evaluator"),
    (
        "eval",
        [
            "--workdir={gan}",
            "--evaluator={evaluator}",
            "--allow_weak_evaluator",
            "--out={file}/eval.json",
        ],
        r"--out",
    ),
    (
        "eval",
        ["--workdir={gan}", "--evaluator={evaluator}", "--allow_weak_evaluator", "--out={dir}"],
        r"--out",
    ),
    ("eval", ["--workdir={gan}", "--num=0"], r"--num"),
    ("eval", ["--workdir={gan}", "--batch=0"], r"--batch"),
    ("eval", ["--workdir={gan}", "--keep=0"], r"--keep"),
    ("eval", ["--workdir={gan}", f"--seed={HUGE}"], r"--seed"),
    ("eval", ["--workdir={gan}", "--temperature=0"], r"--temperature"),
    ("eval", ["--workdir={gan}", "--evaluator={dir}/none"], r"--evaluator"),
    ("eval", ["--workdir={gan}", "--likelihood=maybe"], r"--likelihood"),
    ("eval", ["--reference=train"], r"--dataset"),
    ("eval", ["--reference=both", "--dataset=mnist"], r"--reference"),
    ("eval", ["--reference=train", "--dataset=cifar11"], r"--dataset"),
    (
        "eval",
        [
            "--reference=train",
            "--dataset=mnist",
            "--data_path={dir}/none",
            "--evaluator={evaluator}",
            "--allow_weak_evaluator",
        ],
        r"--data_path=",
    ),
    (
        "eval",
        ["--evaluator={evaluator}", "--allow_weak_evaluator", "{nan_npz}"],
        r"nan\.npz: 1 of 8 images have NaN",
    ),
    (
        "eval",
        ["--evaluator={evaluator}", "--allow_weak_evaluator", "{float255_npz}"],
        r"float255\.npz: .*expected \[0, 1\]",
    ),
    (
        "eval",
        ["--evaluator={evaluator}", "--allow_weak_evaluator", "{labels_npz}"],
        r"labels\.npz: labels run",
    ),
    ("eval", ["--evaluator={evaluator}", "--allow_weak_evaluator", "{npy}"], r"bare\.npy is not a"),
]

TOOLS = {
    "train": [sys.executable, "train.py"],
    "sample": [sys.executable, "sample.py"],
    "eval": [sys.executable, "-m", "jaxgen.eval"],
}
# Flags every tool shares through absl (verbosity, help, ...) are not ours to test.
OWN_FLAG_MODULES = {
    "train": "jaxgen.train",
    "sample": "jaxgen.sample",
    "eval": "jaxgen.eval.__main__",
}


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """Finished tiny runs of every family with sampling options, and the bad files."""
    require_data(MNIST) or pytest.skip(f"{MNIST} is not on this machine")
    root = tmp_path_factory.mktemp("bad_input")
    p = {"dir": str(root)}
    p["vqvae"] = train_tiny("vqvae.py", "mnist,tiny", root / "vqvae")
    for name, arg in (
        ("gan", "mnist,tiny"),
        ("vae", "mnist,tiny"),
        ("diffusion", "mnist,tiny,cond"),
    ):
        p[name] = train_tiny(f"{name}.py", arg, root / name)
    for name in ("pixelcnn", "gpt", "maskgit"):
        p[name] = train_tiny(
            f"{name}.py", "mnist,tiny", root / name, first_stage__workdir=p["vqvae"]
        )
    p["evaluator"] = train_tiny("classifier.py", "mnist,tiny,evaluator", root / "evaluator")
    tokenizer_config = root / "tokenizer_config"
    tokenizer_config.mkdir()
    shutil.copy(root / "vqvae" / "config.json", tokenizer_config / "config.json")
    p["tokenizer_config"] = str(tokenizer_config)
    (root / "a_file").write_text("not a folder")
    p["file"] = str(root / "a_file")
    images = np.random.default_rng(0).uniform(0, 1, (8, 28, 28, 1)).astype(np.float32)
    with_nan = images.copy()
    with_nan[3, 5, 5, 0] = np.nan
    np.savez(root / "nan.npz", images=with_nan)
    np.savez(root / "float255.npz", images=images * 255)
    np.savez(root / "labels.npz", images=images, labels=np.arange(8) + 5)
    for name in ("nan", "float255", "labels"):
        p[f"{name}_npz"] = str(root / f"{name}.npz")
    np.save(root / "bare.npy", images)
    p["npy"] = str(root / "bare.npy")
    return p


def _snapshot(root: str) -> dict:
    """Every file and folder under ``root``: size and modification time."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            out[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns)
    return out


def _run(tool, args):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    return subprocess.run(
        TOOLS[tool] + args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def _row_id(index: int, row) -> str:
    tool, args, _ = row
    return f"{index}-{tool}-{os.path.basename(args[-1])[:40]}"


@pytest.mark.parametrize("tool, args, names", ROWS, ids=[_row_id(i, r) for i, r in enumerate(ROWS)])
def test_bad_values_exit_2_with_one_error_line_and_change_nothing(places, tool, args, names):
    new = os.path.join(places["dir"], "new_run")
    args = [a.format(new=new, **places) for a in args]
    before = _snapshot(places["dir"])
    proc = _run(tool, args)
    after = _snapshot(places["dir"])
    if os.path.exists(new):  # a row that wrongly trains must not leave a run for the next rows
        shutil.rmtree(new)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert re.search(names, errors[0]), errors[0]
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"{tool} {args} wrote or changed {changed}"


def _own_flags(tool: str) -> set[str]:
    """The flags ``tool``'s module defines (each tool in its own process: they share names)."""
    code = (
        "import importlib; from absl import flags\n"
        f"m = importlib.import_module({OWN_FLAG_MODULES[tool]!r})\n"
        "print(' '.join(f.name for f in flags.FLAGS.get_key_flags_for_module(m)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return set(proc.stdout.split())


def test_every_flag_has_a_row(places):
    """A flag added to a tool, or a bounded option added to a family, without a row here fails."""
    from jaxgen.families import FAMILIES, get_family

    covered = {(tool, a.split("=", 1)[0].lstrip("-")) for tool, args, _ in ROWS for a in args}
    missing = []
    for tool in TOOLS:
        for flag in sorted(_own_flags(tool)):
            if (tool, flag) not in covered:
                missing.append(f"{tool} --{flag}")
    for name in FAMILIES:
        for opt in get_family(name).sample_options:
            bounded = opt.minimum is not None or opt.maximum is not None
            if bounded and ("sample", opt.name) not in covered:
                missing.append(f"sample --{opt.name} ({name})")
    assert not missing, f"flags without a row in ROWS: {missing}"
