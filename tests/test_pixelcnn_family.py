"""The PixelCNN prior family: it trains on the codes of a frozen, restored VQ-VAE, its
checkpoint carries that VQ-VAE, and it generates per class."""

import os
import shutil

import jax
import numpy as np
import pytest
from support import ROOT, leaves, load_config, run_script

from jaxgen.engine import loop
from jaxgen.engine.metrics import read_metrics
from jaxgen.errors import ConfigError


def _shapes(config):
    config.data.source = "shapes"
    config.data.image_shape = (16, 16, 1)
    config.data.num_train, config.data.num_test = 256, 64
    return config


@pytest.fixture(scope="module")
def first_stage(tmp_path_factory):
    config = _shapes(load_config(ROOT / "configs" / "vqvae.py", "mnist,tiny"))
    config.train.num_steps = 10
    config.train.checkpoint_every = 0
    config.optimizer.learning_rate = 3e-3
    workdir = str(tmp_path_factory.mktemp("vqvae"))
    state, _ = loop.train_and_evaluate(config, workdir)
    return workdir, state


def _prior_config(workdir, *variants):
    config = load_config(ROOT / "configs" / "pixelcnn.py", ",".join(["mnist", "tiny", *variants]))
    config.first_stage.workdir = workdir
    return _shapes(config)


@pytest.fixture(scope="module")
def prior(first_stage, tmp_path_factory):
    config = _prior_config(first_stage[0], "cond")
    config.model.num_classes = 3  # the shapes data has 3 classes
    config.train.num_steps = 60
    config.train.batch_size = 32
    config.train.log_every = 10
    config.train.checkpoint_every = 0
    config.optimizer.learning_rate = 3e-3
    workdir = str(tmp_path_factory.mktemp("prior"))
    state, summary = loop.train_and_evaluate(config, workdir)
    return config, workdir, state, summary


@pytest.mark.slow
def test_prior_learns_the_codes_of_the_frozen_first_stage(first_stage, prior):
    _, vq_state = first_stage
    config, workdir, state, summary = prior
    # The VQ-VAE came in from its checkpoint and left training untouched.
    frozen = {
        "params": {k: v for k, v in vq_state.model.params.items()},
        "codebook": vq_state.extra.ema.codebook,
    }
    for a, b in zip(leaves(frozen), leaves(state.frozen), strict=True):
        np.testing.assert_array_equal(a, b)
    rows = [r for r in read_metrics(workdir) if r["split"] == "train"]
    k = config.first_stage.config.vq.num_codes
    assert rows[0]["nll_bits"] > rows[-1]["nll_bits"] + 0.5, (rows[0], rows[-1])
    assert rows[-1]["nll_bits"] < np.log2(k)  # better than uniform over the K codes
    ev = summary["eval"]
    h = w = 16 // 4
    np.testing.assert_allclose(ev["bits_per_dim"], ev["nll_bits"] * h * w / (16 * 16), rtol=1e-5)


@pytest.mark.slow
def test_the_prior_checkpoint_generates_without_the_first_stage_workdir(first_stage, prior):
    vq_dir = first_stage[0]
    _, workdir, _, _ = prior
    moved = vq_dir + "_moved"
    shutil.move(vq_dir, moved)
    try:
        setup, state = loop.restore_for_inference(workdir)
        family, cfg = setup.family, setup.config
        draw = jax.jit(lambda s, r, y: family.sample(cfg, s, r, 8, label=y).images)
        a = np.asarray(draw(state, jax.random.PRNGKey(0), 0))
        b = np.asarray(draw(state, jax.random.PRNGKey(0), 2))
        c = np.asarray(draw(state, jax.random.PRNGKey(0), 0))
    finally:
        shutil.move(moved, vq_dir)
    assert a.shape == (8, 16, 16, 1) and 0 <= a.min() and a.max() <= 1
    np.testing.assert_array_equal(a, c)  # same key, same label: same images
    assert np.abs(a - b).max() > 0  # the label steers the prior


def test_a_missing_first_stage_is_named_and_nothing_is_written(tmp_path):
    config = _prior_config(str(tmp_path / "no_such_run"))
    with pytest.raises(ConfigError, match=r"first_stage.workdir='.*no_such_run' is not a trained"):
        loop.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_first_stage_of_other_images_is_refused(first_stage, tmp_path):
    config = _prior_config(first_stage[0])
    config.data.image_shape = (32, 32, 1)
    with pytest.raises(ConfigError, match=r"data.image_shape=\(32, 32, 1\) differs"):
        loop.train_and_evaluate(config, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.cli
def test_sample_py_generates_per_class_and_shows_a_vqvae_alone_as_reconstructions(
    first_stage, prior, tmp_path
):
    _, workdir, _, _ = prior
    out = str(tmp_path / "grid.png")
    result = run_script(
        "sample.py", f"--workdir={workdir}", "--class=all", "--num=6", f"--out={out}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    arrays = np.load(str(tmp_path / "grid.npz"))
    assert arrays["images"].shape == (6, 16, 16, 1)
    np.testing.assert_array_equal(arrays["labels"], [0, 0, 1, 1, 2, 2])
    result = run_script("sample.py", f"--workdir={workdir}", "--class=3")
    assert result.returncode == 2 and "--class='3' is not a class of this model" in result.stderr
    result = run_script("sample.py", f"--workdir={first_stage[0]}", "--num=8")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "does not generate on its own" in result.stdout
    recon = np.load(os.path.join(first_stage[0], "reconstructions.npz"))
    assert recon["originals"].shape == recon["reconstructions"].shape == (8, 16, 16, 1)
