"""What the priors over codes share (``jaxgen.families.code_priors``): the label dropout (the
diffusion models' ``drop_labels`` under the same key name), the one NLL train step, and the
sampling options each prior checks in ``prepare_sample`` before anything is compiled."""

import fake_tokenizer_family as fake
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from support import ROOT, load_config

from jaxgen.diffusion import guidance
from jaxgen.errors import ConfigError
from jaxgen.families import code_priors as cp
from jaxgen.families import get_family, maskgit
from jaxgen.families.common import make_optimizer
from jaxgen.families.state import State, TrainState


def _config(name, *variants):
    """A prior's tiny config over the test tokenizer (16x16 images, a 4x4 grid of 8 codes),
    resolved as the engine would, without training the tokenizer."""
    config = load_config(ROOT / "configs" / f"{name}.py", ",".join(("mnist", "tiny", *variants)))
    config.data = fake.get_config().data
    config.first_stage.config = fake.get_config()
    return config


def _options(name, **given):
    options = {o.name: o.default for o in get_family(name).sample_options}
    return {**options, **given}


def test_train_labels_are_drop_labels_under_model_p_uncond():
    config = _config("gpt", "cond")
    labels = jnp.arange(1000, dtype=jnp.int32) % 10
    key = jax.random.PRNGKey(3)
    out = cp.train_labels(config, labels, key)
    np.testing.assert_array_equal(out, guidance.drop_labels(labels, key, 0.1, 10))
    assert 0.05 < float(np.mean(np.asarray(out) == 10)) < 0.15
    config.model.p_uncond = 0.0
    np.testing.assert_array_equal(cp.train_labels(config, labels, key), labels)
    # A run saved before the rename names it model.cond_dropout.
    del config.model["p_uncond"]
    config.model.cond_dropout = 0.5
    assert cp.p_uncond(config) == 0.5
    # An unconditional prior trains on the null class only.
    uncond = _config("maskgit")
    np.testing.assert_array_equal(cp.train_labels(uncond, labels, key), np.zeros(1000))


def test_a_bad_p_uncond_is_named():
    config = _config("maskgit", "cond")
    config.model.p_uncond = 1.0
    with pytest.raises(ConfigError, match=r"model.p_uncond=1.0 must be in \[0, 1\)"):
        get_family("maskgit").validate_config(config)


def test_the_nll_train_step_takes_one_step_on_the_mean_bits():
    config = _config("gpt")
    config.optimizer.name, config.optimizer.b1, config.optimizer.learning_rate = "sgd", 0.0, 0.1
    w = jnp.array([1.0, -2.0])
    tx = make_optimizer(config.optimizer)
    state = State.create(jax.random.PRNGKey(0), {"model": TrainState.create({"w": w}, tx)})
    per_example = jnp.array([1.0, 2.0, 3.0])  # bits = |w|^2 * (1, 2, 3): mean 2 |w|^2

    new, metrics = cp.nll_train_step(config, state, lambda p: jnp.sum(p["w"] ** 2) * per_example)
    np.testing.assert_allclose(metrics["loss"], 10.0)
    np.testing.assert_allclose(metrics["nll_bits"], 10.0)
    np.testing.assert_allclose(metrics["bits_per_dim"], 10.0 * 16 / 256)  # 4x4 codes, 16x16x1
    np.testing.assert_allclose(metrics["grad_norm"], np.linalg.norm(4 * w), rtol=1e-6)
    np.testing.assert_allclose(new.model.params["w"], w - 0.1 * 4 * w, rtol=1e-6)
    assert int(new.step) == 1


@pytest.mark.parametrize(
    "name, given, message",
    [
        ("pixelcnn", {"temperature": 0.0}, r"--temperature=0.0 must be > 0"),
        ("gpt", {"temperature": -1.0}, r"--temperature=-1.0 must be > 0"),
        ("gpt", {"top-k": -1}, r"--top-k=-1 must be >= 0"),
        ("gpt", {"top-p": 0.0}, r"--top-p=0.0 must be in \(0, 1\]"),
        ("gpt", {"scale": 2.0}, r"--scale \(classifier-free guidance\) needs a class-cond"),
        ("maskgit", {"steps": 17}, r"--steps=17 must be an integer in \[1, 16\]"),
        ("maskgit", {"scale": 2.0}, r"--scale \(classifier-free guidance\) needs a class-cond"),
    ],
)
def test_prepare_sample_refuses_bad_options_by_their_flag(name, given, message):
    """Through the declared bounds (``SampleOption.check``, which ``sampling.prepare`` and the
    flags apply) and the family's own ``prepare_sample``."""
    family = get_family(name)
    with pytest.raises(ConfigError, match=message):
        for opt in family.sample_options:
            if opt.name in given:
                opt.check(given[opt.name])
        family.prepare_sample(_config(name), _options(name, **given))


def test_prepare_sample_gives_sample_its_keyword_arguments():
    config = _config("maskgit", "cond")
    assert get_family("maskgit").prepare_sample(config, _options("maskgit", scale=2.0)) == {
        "steps": 4,  # 0: the config's
        "temperature": 1.0,
        "choice_temperature": 4.5,  # < 0: the config's
        "scale": 2.0,
    }
    kwargs = get_family("maskgit").prepare_sample(
        config, _options("maskgit", steps=3, **{"choice-temperature": 0.0})
    )
    assert (kwargs["steps"], kwargs["choice_temperature"]) == (3, 0.0)
    gpt = get_family("gpt").prepare_sample(_config("gpt"), _options("gpt", **{"top-k": 5}))
    assert gpt == {"temperature": 1.0, "top_k": 5, "top_p": 1.0, "scale": None, "cache": True}


@pytest.mark.slow
def test_maskgit_eval_masks_come_from_the_runs_example_keys():
    """Each example's eval mask is fixed by the run's key and its index (``example_keys``, as in
    every family): the same for the batch in any order, another for another run's key."""
    config = _config("maskgit", "cond")
    batch = {
        "image": jax.random.randint(jax.random.PRNGKey(1), (8, 16, 16, 1), 0, 256).astype(
            jnp.uint8
        ),
        "label": jnp.arange(8, dtype=jnp.int32),
        "index": jnp.arange(8, dtype=jnp.int32) + 100,
    }
    state = maskgit.init(config, jax.random.PRNGKey(0), batch)
    state = state.replace(frozen={"levels": jnp.linspace(0.0, 1.0, fake.K)})
    bits = float(maskgit.eval_step(config, state, batch)["masked_nll_bits"])
    reverse = jax.tree.map(lambda x: x[::-1], batch)
    np.testing.assert_allclose(maskgit.eval_step(config, state, reverse)["masked_nll_bits"], bits)
    other = state.replace(rng=jax.random.PRNGKey(7))
    assert float(maskgit.eval_step(config, other, batch)["masked_nll_bits"]) != bits
