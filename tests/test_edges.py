"""Bad input below the command line: the checks the tools rely on, one behaviour each, fast.

The command-line table (``test_bad_input.py``) runs the same cases end to end; these pin down
the pieces: declared option bounds, images entering the evaluator, checkpoints read without a
trace and interrupted saves cleaned up in our own words, a prior's first stage, seeds, the
order of a family's checks, and the hints for missing weights and data.
"""

from __future__ import annotations

import importlib.util
import logging
import os

import fake_tokenizer_family as fake
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from support import ROOT, load_config

from jaxgen.engine import checkpoint as ckpt_lib
from jaxgen.engine import config as config_lib
from jaxgen.engine import first_stage, loop
from jaxgen.errors import ConfigError
from jaxgen.eval import evaluator as evaluator_lib
from jaxgen.families import FAMILIES, get_family, maskgit


def _option(family: str, name: str):
    return next(o for o in get_family(family).sample_options if o.name == name)


@pytest.mark.parametrize(
    "family, name, value, message",
    [
        ("gan", "temperature", 0.0, r"--temperature=0.0 must be > 0"),
        ("gan", "temperature", -1.0, r"--temperature=-1.0 must be > 0"),
        ("vae", "temperature", 0.0, r"must be > 0"),
        ("maskgit", "choice-temperature", -5.0, r"--choice-temperature=-5.0 must be >= 0"),
        ("diffusion", "eta", -1.0, r"--eta=-1.0 must be >= 0"),
        ("diffusion", "order", 4, r"--order=4 must be in \[0, 3\]"),
        ("gpt", "top-p", 0.0, r"--top-p=0.0 must be in \(0, 1\]"),
        ("gpt", "temperature", float("inf"), r"--temperature=inf is not a finite number"),
    ],
)
def test_declared_option_bounds_refuse_values_out_of_them(family, name, value, message):
    with pytest.raises(ConfigError, match=message):
        _option(family, name).check(value)


def test_every_temperature_is_bounded_above_zero():
    """No family takes a temperature of 0 (N identical images) or below: one rule for all."""
    for name in FAMILIES:
        for opt in get_family(name).sample_options:
            if "temperature" in opt.name and opt.name != "choice-temperature":
                assert (opt.minimum, opt.above) == (0.0, True), (name, opt.name)


def test_no_option_uses_a_negative_value_to_mean_the_configs():
    """A sentinel such as ``-1: the config's`` turns a typo into a silent default; "not given"
    is ``None``."""
    for name in FAMILIES:
        for opt in get_family(name).sample_options:
            if isinstance(opt.default, (int, float)) and not isinstance(opt.default, bool):
                assert opt.default >= 0, (name, opt.name, opt.default)


def test_maskgit_choice_temperature_absent_is_the_configs_and_zero_is_zero():
    config = load_config(ROOT / "configs" / "maskgit.py", "mnist,tiny")
    config.data = fake.get_config().data
    config.first_stage.config = fake.get_config()
    options = {o.name: o.default for o in maskgit.SAMPLE_OPTIONS}
    given = maskgit.prepare_sample(config, options)
    assert given["choice_temperature"] == config.maskgit.choice_temperature
    zero = maskgit.prepare_sample(config, {**options, "choice-temperature": 0.0})
    assert zero["choice_temperature"] == 0.0


def test_images_entering_the_evaluator_are_checked():
    x = np.random.default_rng(0).uniform(0, 1, (6, 4, 4, 1)).astype(np.float32)
    np.testing.assert_array_equal(evaluator_lib.checked_images(x), evaluator_lib.to_uint8(x))
    with_nan = x.copy()
    with_nan[2, 0, 0, 0] = np.nan
    with pytest.raises(ConfigError, match=r"f\.npz: 1 of 6 images have NaN or Inf"):
        evaluator_lib.checked_images(with_nan, "f.npz: ")
    with pytest.raises(ConfigError, match=r"\[0, 1\] \(images in 0\.\.255: divide by 255"):
        evaluator_lib.checked_images(x * 255)
    with pytest.raises(ConfigError, match=r"values -3\.\.7; expected 0\.\.255"):
        evaluator_lib.checked_images(np.array([[[[-3]]], [[[7]]]], np.int64))
    # a model's raw outputs slightly out of range are clipped, NaN still refused
    np.testing.assert_array_equal(
        evaluator_lib.checked_images(x * 1.5, strict_range=False), evaluator_lib.to_uint8(x * 1.5)
    )
    with pytest.raises(ConfigError, match="NaN"):
        evaluator_lib.checked_images(with_nan, strict_range=False)


def _save_one(workdir: str, step: int) -> None:
    checkpoints = ckpt_lib.Checkpointer(workdir, async_save=False)
    checkpoints.save(step, {"w": jnp.arange(3.0)}, force=True)
    checkpoints.close()


def test_reading_a_run_creates_and_removes_nothing(tmp_path):
    missing = tmp_path / "never_trained"
    checkpoints = ckpt_lib.Checkpointer(str(missing), read_only=True)
    assert checkpoints.latest_step() is None
    checkpoints.close()
    assert not missing.exists()
    assert not loop.has_checkpoint(str(missing)) and not missing.exists()
    # a finished step and an interrupted one: read-only leaves both as they are
    _save_one(str(tmp_path / "run"), 2)
    unfinished = tmp_path / "run" / "checkpoints" / "3.orbax-checkpoint-tmp"
    unfinished.mkdir()
    before = sorted(os.listdir(tmp_path / "run" / "checkpoints"))
    reader = ckpt_lib.Checkpointer(str(tmp_path / "run"), read_only=True)
    state = reader.restore({"w": jax.ShapeDtypeStruct((3,), jnp.float32)})
    reader.close()
    np.testing.assert_array_equal(state["w"], np.arange(3.0))
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == before


def test_an_interrupted_save_is_discarded_in_one_line_of_our_own(tmp_path, caplog):
    _save_one(str(tmp_path), 2)
    unfinished = tmp_path / "checkpoints" / "3.orbax-checkpoint-tmp"
    (unfinished / "d").mkdir(parents=True)
    lines = []
    with caplog.at_level(logging.WARNING):
        checkpoints = ckpt_lib.Checkpointer(str(tmp_path), report=lines.append)
        checkpoints.save(3, {"w": jnp.arange(3.0)}, force=True)
        checkpoints.close()
    assert lines == [
        "the unfinished save of step 3 (interrupted before it completed) was discarded: "
        f"{unfinished}"
    ]
    assert not any("orbax-checkpoint-tmp" in r.getMessage() for r in caplog.records)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "3", "checksums"]


def _prior_config(dataset_of_tokenizer: str):
    config = load_config(ROOT / "configs" / "maskgit.py", "mnist,tiny")
    config.data = fake.get_config().data
    config.data.dataset = "mnist"
    config.first_stage.config = fake.get_config()
    config.first_stage.config.data.dataset = dataset_of_tokenizer
    return config


def test_a_prior_over_a_tokenizer_of_another_data_set_needs_consent():
    first_stage.check(_prior_config("mnist"))
    config = _prior_config("fashion_mnist")
    with pytest.raises(
        ConfigError,
        match=r"trained on 'fashion_mnist', this prior on 'mnist'.*"
        r"first_stage\.allow_other_data=True",
    ):
        first_stage.check(config)
    config.first_stage.allow_other_data = True
    first_stage.check(config)


def test_a_familys_own_check_names_its_key_before_the_contracts_derived_value():
    config = load_config(ROOT / "configs" / "gan.py", "mnist,tiny")
    config.gan.n_critic = 0  # the contract would see batches_per_step=0
    with pytest.raises(ConfigError, match=r"gan\.n_critic=0"):
        loop.make_setup(config, need_data=False)


@pytest.mark.parametrize("seed, ok", [(0, True), (2**32 - 1, True), (2**32, False), (-1, False)])
def test_seeds_outside_32_bits_are_refused_by_name(seed, ok):
    config = load_config(ROOT / "configs" / "vae.py", "mnist,tiny")
    config.seed = seed
    if ok:
        config_lib.validate(config, 1, need_data=False)
        jax.random.PRNGKey(seed)  # and the bound is one JAX takes
    else:
        with pytest.raises(
            ConfigError, match=rf"seed={seed} must be an integer in \[0, 4294967295\]"
        ):
            config_lib.validate(config, 1, need_data=False)


def test_missing_lpips_weights_say_the_command_line_flag(monkeypatch):
    from jaxgen.weights import lpips as lpips_weights

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"--config\.vqgan\.lpips_weights=PATH on the command"):
        lpips_weights.default_weights_path()


def test_missing_mnist_says_how_to_get_it_and_the_default_follows_jaxgen_mnist(monkeypatch):
    config = load_config(ROOT / "configs" / "vae.py", "mnist,tiny")
    config.data.path = "/nowhere/mnist.npz"
    with pytest.raises(ConfigError, match=r"mnist\.npz that Keras distributes.*JAXGEN_MNIST="):
        config_lib.validate(config, 1)
    monkeypatch.setenv("JAXGEN_MNIST", "/data/elsewhere/mnist.npz")
    assert load_config(ROOT / "configs" / "vae.py", "mnist").data.path == (
        "/data/elsewhere/mnist.npz"
    )
