"""The KL autoencoder: its KL term and reparameterised sample, its loss, and its latents as a
first stage (and the VQ tokenizers' continuous latents)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from support import ROOT, load_config

from jaxgen.engine import first_stage
from jaxgen.errors import ConfigError
from jaxgen.families import autoencoder_kl as kl_family
from jaxgen.families import tokenizers, vqgan


def _config(*variants):
    config = load_config(
        ROOT / "configs" / "autoencoder_kl.py", ",".join(("mnist", "tiny", *variants))
    )
    config.data.image_shape = (16, 16, 1)
    return config


def _batch(n=8, seed=0, size=16):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    imgs = []
    for _ in range(n):
        cy, cx, r = rng.uniform(4, size - 4, 2).tolist() + [rng.uniform(2, 5)]
        imgs.append(255 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)))
    images = np.stack(imgs)[..., None].astype(np.uint8)
    return {"image": jnp.asarray(images), "label": jnp.zeros(n, jnp.int32), "index": jnp.arange(n)}


def test_kl_divergence_matches_the_closed_form():
    mean = jnp.array([[[[0.0, 1.0]]], [[[2.0, -1.0]]]])  # [2, 1, 1, 2]
    logvar = jnp.array([[[[0.0, 0.0]]], [[[np.log(4.0), np.log(0.25)]]]])
    # KL(N(m, s^2) || N(0, 1)) = (m^2 + s^2 - 1 - log s^2) / 2, summed over the latent
    expected = [0.5 * (1.0), 0.5 * (4 + 4 - 1 - np.log(4)) + 0.5 * (1 + 0.25 - 1 - np.log(0.25))]
    np.testing.assert_allclose(kl_family.kl_divergence(mean, logvar), expected, rtol=1e-6)


def test_the_sample_is_reparameterised_and_the_loss_is_the_weighted_kl():
    config = _config()
    config.kl.weight = 0.5
    d = config.kl.dim
    z_e = jax.random.normal(jax.random.PRNGKey(0), (4, 4, 4, 2 * d))
    bottleneck = kl_family.kl_bottleneck(config, jax.random.PRNGKey(1))
    z, loss, metrics, _ = bottleneck(None, z_e)
    mean, logvar = z_e[..., :d], z_e[..., d:]
    expected_kl = jnp.mean(kl_family.kl_divergence(mean, logvar))
    np.testing.assert_allclose(metrics["kl"], expected_kl, rtol=1e-6)
    np.testing.assert_allclose(loss, 0.5 * expected_kl / (16 * 16 * 1), rtol=1e-6)
    # z = mean + exp(logvar / 2) eps: the log-variance channels reach z (not only the KL)
    g = jax.grad(lambda e: jnp.sum(bottleneck(None, e)[0] * jnp.arange(1.0, 1.0 + d)))(z_e)
    assert float(jnp.abs(g[..., d:]).min()) > 0.0
    np.testing.assert_allclose(g[..., :d], jnp.broadcast_to(jnp.arange(1.0, 1.0 + d), mean.shape))
    other, *_ = kl_family.kl_bottleneck(config, jax.random.PRNGKey(2))(None, z_e)
    assert not np.allclose(z, other)  # the key draws the noise


@pytest.mark.slow
def test_train_step_loss_is_reconstruction_plus_kl_term():
    config = _config("noadv")
    config.kl.weight = 3.0
    batch = _batch()
    state = kl_family.init(config, jax.random.PRNGKey(0), batch)
    _, metrics = jax.jit(lambda s, b: kl_family.train_step(config, s, b))(state, batch)
    pixels = 16 * 16
    expected = metrics["rec_loss"] + 3.0 * metrics["kl"] / pixels
    np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-5)


@pytest.mark.slow
def test_a_tiny_kl_autoencoder_learns_to_reconstruct():
    config = _config("noadv")
    config.optimizer.learning_rate = 3e-3
    batches = [_batch(16, seed=k % 4) for k in range(60)]
    state = kl_family.init(config, jax.random.PRNGKey(0), batches[0])
    step = jax.jit(lambda s, b: kl_family.train_step(config, s, b))
    evaluate = jax.jit(lambda s, b: kl_family.eval_step(config, s, b))
    before = float(evaluate(state, batches[0])["mse"])
    for b in batches:
        state, _ = step(state, b)
    after = float(evaluate(state, batches[0])["mse"])
    assert after < 0.5 * before, (before, after)


def test_first_stage_gives_latents_not_codes():
    config = _config()
    t = kl_family.tokenizer(config)
    assert t.offers("latents") and not t.offers("codes")
    assert t.latent_shape == (4, 4, config.kl.dim)
    prior = load_config(ROOT / "configs" / "gpt.py", "mnist,tiny")
    prior.first_stage.workdir = "runs/kl"
    prior.first_stage.config = config
    prior.data.image_shape = config.data.image_shape
    with pytest.raises(ConfigError, match=r"gives no discrete codes; a 'gpt' model needs them"):
        first_stage.check(prior)


def test_vq_latents_decode_as_their_codes():
    """A VQ tokenizer's continuous latents (before quantisation) decode to what their codes
    decode to: ``decode_latents`` quantises first."""
    config = load_config(ROOT / "configs" / "vqgan.py", "mnist,tiny")
    config.data.image_shape = (16, 16, 1)
    batch = _batch()
    state = vqgan.init(config, jax.random.PRNGKey(0), batch)
    t = vqgan.tokenizer(config)
    params = tokenizers.vq_tokenizer_params(config, state)
    assert t.offers("latents") and t.offers("codes")
    z = t.encode_latents(params, batch["image"])
    assert z.shape == (8, *t.latent_shape)
    via_codes = t.decode(params, t.encode(params, batch["image"]))
    np.testing.assert_allclose(t.decode_latents(params, z), via_codes, atol=1e-6)
