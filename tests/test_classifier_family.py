"""The classifier family: a clean evaluator and a noise-aware classifier learn, the noisy one
is trained on the diffusion schedule's x_t, and its gradients serve guidance per example."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from support import ROOT, load_config

from jaxgen.diffusion import guidance
from jaxgen.engine import loop
from jaxgen.errors import ConfigError
from jaxgen.families import classifier


def _config(*variants, steps=120):
    """A classifier of the procedural 16x16 shapes (3 classes): needs no files."""
    config = load_config(ROOT / "configs" / "classifier.py", ",".join(["mnist", "tiny", *variants]))
    config.data.source = "shapes"
    config.data.image_shape = (16, 16, 1)
    config.data.num_train, config.data.num_test = 512, 128
    config.model.num_classes = 3
    config.train.num_steps = steps
    config.train.batch_size = 32
    config.train.log_every = 20
    config.train.checkpoint_every = steps  # one save at the end, not tiny's one every 2 steps
    config.optimizer.learning_rate = 3e-3
    config.eval.batch_size = 64
    config.eval.final_num_examples = 128
    return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = {}
    # The noisy task is harder (most training times leave little of the image), so more steps.
    for name, variants, steps in [("clean", ("clean",), 120), ("noisy", (), 300)]:
        config = _config(*variants, steps=steps)
        state, summary = loop.train_and_evaluate(config, str(tmp_path_factory.mktemp(name)))
        out[name] = (config, state, summary)
    return out


@pytest.mark.slow
def test_clean_classifier_learns_the_shapes(trained):
    _, _, summary = trained["clean"]
    assert summary["eval"]["accuracy"] > 0.9
    assert "samples" not in summary  # a classifier does not generate


@pytest.mark.slow
def test_noise_aware_classifier_sees_through_light_noise_and_not_through_pure_noise(trained):
    _, _, summary = trained["noisy"]
    ev = summary["eval"]
    assert ev["acc_t0.10"] > 0.5, ev  # well above chance (1/3) after 300 tiny steps
    assert ev["acc_t1.00"] < 0.5, ev  # x_1 is almost pure noise
    assert ev["acc_t0.10"] > ev["acc_t1.00"] + 0.1, ev


def test_noisy_inputs_follow_the_diffusion_schedule():
    config = _config()
    x0 = jnp.linspace(-1, 1, 4 * 16 * 16).reshape(4, 16, 16, 1)
    rng = jax.random.PRNGKey(3)
    x, t = classifier._inputs(config, x0, rng)
    t_rng, n_rng = jax.random.split(rng)
    schedule = classifier.make_schedule(config)
    noise = jax.random.normal(n_rng, x0.shape)
    a, s = schedule.alpha(t)[:, None, None, None], schedule.sigma(t)[:, None, None, None]
    np.testing.assert_allclose(x, a * x0 + s * noise, rtol=1e-6, atol=1e-6)
    # discrete times, as the diffusion family trains on
    n = np.round(np.asarray(t) * schedule.num_steps)
    np.testing.assert_allclose(np.asarray(t) * schedule.num_steps, n, atol=1e-3)
    x_clean, t_clean = classifier._inputs(_config("clean"), x0, rng)
    assert np.array_equal(x_clean, x0) and not np.any(t_clean)


@pytest.mark.slow
def test_guidance_gradient_is_per_example(trained):
    config, state, _ = trained["noisy"]
    logits = classifier.logits_fn(config, state.model.params)
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 16, 16, 1))
    t = jnp.full((4,), 0.3)
    labels = jnp.array([0, 1, 2, 0])
    grad = guidance.classifier_log_prob_grad(logits, labels)
    g = grad(x, t)
    assert float(jnp.abs(g).max()) > 0
    moved = x.at[1:].set(jax.random.normal(jax.random.PRNGKey(1), (3, 16, 16, 1)))
    np.testing.assert_allclose(grad(moved, t)[0], g[0], rtol=1e-5, atol=1e-6)
    # it points up the log-probability of the requested class
    step = x + 1e-2 * g / jnp.linalg.norm(g.reshape(4, -1), axis=1)[:, None, None, None]
    lp = lambda z: jnp.take_along_axis(jax.nn.log_softmax(logits(z, t)), labels[:, None], 1)  # noqa: E731
    assert bool(jnp.all(lp(step) > lp(x)))


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("model.num_classes", 1, "model.num_classes=1 must be an integer >= 2"),
        ("model.dropout", 1.0, r"model.dropout=1.0 must be in \[0, 1\)"),
        ("classifier.eval_times", (0.5, 2.0), r"classifier.eval_times=\(0.5, 2.0\)"),
        ("diffusion.schedule", "sigmoid", "diffusion.schedule='sigmoid'"),
    ],
)
def test_bad_classifier_config_values_are_named(key, value, message):
    config = _config()
    section, name = key.split(".")
    config[section][name] = value
    with pytest.raises(ConfigError, match=message):
        classifier.validate_config(config)
