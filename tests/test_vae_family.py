"""The VAE family: where gradients go, what beta does, that training works, and eval bounds."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.data import load_splits, train_batch
from jaxgen.families import vae


def _batch(config, step=0, size=16):
    train, _ = load_splits(config.data)
    return train_batch(train, config.seed, step, size)


def _loss_and_grads(config, state, batch):
    x = vae._targets(config, jnp.asarray(batch["image"]), jax.random.PRNGKey(1))
    fn = jax.value_and_grad(functools.partial(vae.loss_fn, config), has_aux=True)
    return jax.jit(fn)(state.model.params, x, jax.random.PRNGKey(2), state.step)  # one compile


@pytest.mark.parametrize("kind", ["conv", "mlp"])
@pytest.mark.parametrize("likelihood", ["bernoulli", "discretized_gaussian"])
@pytest.mark.slow
def test_gradients_reach_encoder_and_decoder(tiny_vae_config, kind, likelihood):
    config = tiny_vae_config
    config.model.kind = kind
    config.loss.likelihood = likelihood
    batch = _batch(config)
    state = vae.init(config, jax.random.PRNGKey(0), batch)
    (_, _), grads = _loss_and_grads(config, state, batch)
    for part in ("encoder", "decoder"):
        leaves = jax.tree_util.tree_leaves_with_path(grads[part])
        assert leaves
        for path, g in leaves:
            assert np.any(np.asarray(g) != 0), f"{part}{jax.tree_util.keystr(path)} got no gradient"
    # The scale of the Gaussian likelihood is learned; under a Bernoulli it is unused.
    assert np.any(grads["log_scale"] != 0) == (likelihood == "discretized_gaussian")


def test_beta_weights_exactly_the_kl_term(tiny_vae_config):
    config = tiny_vae_config
    batch = _batch(config)
    state = vae.init(config, jax.random.PRNGKey(0), batch)
    (loss1, m1), _ = _loss_and_grads(config, state, batch)
    config.loss.beta = 3.0
    (loss3, m3), _ = _loss_and_grads(config, state, batch)
    np.testing.assert_allclose(loss3 - loss1, 2.0 * m1["kl"], rtol=1e-5)
    # With beta = 1 and no free bits or warm-up, the loss is the negative ELBO.
    np.testing.assert_allclose(loss1, -m1["elbo"], rtol=1e-6)


def test_kl_warmup_ramps_beta_linearly(tiny_vae_config):
    config = tiny_vae_config
    config.loss.beta, config.loss.kl_warmup_steps = 2.0, 10
    betas = [float(vae.kl_weight(config, jnp.asarray(s))) for s in (0, 4, 9, 50)]
    np.testing.assert_allclose(betas, [0.2, 1.0, 2.0, 2.0], rtol=1e-6)


@pytest.mark.slow
def test_a_tiny_run_learns(tiny_vae_config):
    config = tiny_vae_config
    config.optimizer.learning_rate = 3e-3
    state = vae.init(config, jax.random.PRNGKey(0), _batch(config))
    step = jax.jit(functools.partial(vae.train_step, config))
    eval_step = jax.jit(functools.partial(vae.eval_step, config))
    _, test = load_splits(config.data)
    test_batch = test.get(np.arange(32))
    test_batch["index"] = np.arange(32, dtype=np.int32)
    before = eval_step(state, test_batch)
    losses = []
    for k in range(150):
        state, metrics = step(state, _batch(config, k, 32))
        losses.append(float(metrics["loss"]))
    after = eval_step(state, test_batch)
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10])
    assert after["nll_iwae"] < 0.7 * before["nll_iwae"]
    # The IWAE estimate (k = eval.iwae_k) is a tighter bound than the single-sample ELBO.
    assert after["nll_iwae"] <= -after["elbo"] + 0.5
    # Eval is a pure function of the state and the examples' indices.
    again = eval_step(state, test_batch)
    assert float(again["nll_iwae"]) == float(after["nll_iwae"])


def test_samples_are_images_and_follow_the_key(tiny_vae_config):
    config = tiny_vae_config
    state = vae.init(config, jax.random.PRNGKey(0), _batch(config))
    a = vae.sample(config, state, jax.random.PRNGKey(3), 8).images
    b = vae.sample(config, state, jax.random.PRNGKey(3), 8).images
    c = vae.sample(config, state, jax.random.PRNGKey(4), 8).images
    assert a.shape == (8, 16, 16, 1)
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    np.testing.assert_array_equal(a, b)
    assert np.any(np.asarray(a) != np.asarray(c))
    # Temperature 0 decodes z = 0 for every sample.
    cold = vae.sample(config, state, jax.random.PRNGKey(3), 4, temperature=0.0).images
    np.testing.assert_allclose(cold, jnp.broadcast_to(cold[:1], cold.shape))
