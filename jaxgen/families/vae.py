"""Variational autoencoder (Kingma & Welling 2014) with an importance-weighted NLL estimate.

Loss per batch, in nats: ``-mean_b log p(x_b | z_b) + beta_t * KL`` with ``z_b ~ q(z | x_b)``
by reparameterisation; ``KL`` is the analytic Gaussian KL averaged over the batch (with optional
free bits) and ``beta_t`` ramps linearly from 0 to ``loss.beta`` over ``loss.kl_warmup_steps``.
With ``beta = 1``, no warm-up and no free bits the loss is exactly the negative ELBO.

Likelihoods (``loss.likelihood``):
- ``bernoulli``: logits per pixel; with ``loss.binarize = 'dynamic'`` each training batch is
  binarised afresh (pixel ~ Bernoulli(intensity)) and the test set is binarised once, each
  example by a key derived from its index, so test numbers are repeatable.
- ``discretized_gaussian``: a Gaussian mean per pixel and a learned per-channel scale,
  integrated over the 256 grey levels (a true discrete likelihood; reported also in bits/dim).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxgen import losses
from jaxgen.errors import ConfigError
from jaxgen.families import Capabilities, Family, SampleOption, Samples
from jaxgen.families.common import (
    check_choice,
    check_optimizer,
    example_keys,
    make_optimizer,
    to_unit_interval,
)
from jaxgen.families.state import State, TrainState, gradient_step
from jaxgen.nn.vae import VAE

LIKELIHOODS = ("bernoulli", "discretized_gaussian")
BINARIZE = ("dynamic", "none")
MODEL_KINDS = ("conv", "mlp")
SAMPLE_OPTIONS = (
    SampleOption(
        "temperature", 1.0, "Prior noise scale: z ~ N(0, t^2 I) (> 0).", minimum=0.0, above=True
    ),
)
_MIN_LOG_SCALE = -7.0


def build_model(config) -> VAE:
    m = config.model
    return VAE(
        image_shape=tuple(config.data.image_shape),
        latent_dim=m.latent_dim,
        kind=m.kind,
        channels=tuple(m.channels),
        hidden=tuple(m.hidden),
    )


def validate_config(config) -> None:
    check_choice(config, "model.kind", MODEL_KINDS)
    check_choice(config, "loss.likelihood", LIKELIHOODS)
    check_choice(config, "loss.binarize", BINARIZE)
    check_optimizer(config.optimizer)
    if config.model.latent_dim < 1:
        raise ConfigError(f"model.latent_dim={config.model.latent_dim!r} must be >= 1")
    for key in ("beta", "kl_warmup_steps", "free_bits"):
        if config.loss[key] < 0:
            raise ConfigError(f"loss.{key}={config.loss[key]!r} must be >= 0")
    if config.model.kind == "conv":
        factor = 2 ** len(config.model.channels)
        h, w, _ = config.data.image_shape
        if h % factor or w % factor:
            raise ConfigError(
                f"model.channels={tuple(config.model.channels)} halves the image "
                f"{len(config.model.channels)} times, so data.image_shape={tuple((h, w))} must "
                f"be divisible by {factor}; use fewer channels entries or the mlp model"
            )
    k, chunk = config.eval.iwae_k, config.eval.iwae_chunk
    if k < 1 or chunk < 1 or k % chunk:
        raise ConfigError(
            f"eval.iwae_k={k!r} must be >= 1 and a multiple of eval.iwae_chunk={chunk!r}"
        )


def capabilities(config) -> Capabilities:
    del config
    return Capabilities(generates=True, reconstructs=True, likelihoods=("nll_iwae", "bpd_iwae"))


def init(config, rng: jax.Array, example_batch) -> State:
    model = build_model(config)
    x = to_unit_interval(example_batch["image"])
    params = model.init(jax.random.fold_in(rng, 0), x, jax.random.fold_in(rng, 1))["params"]
    return State.create(rng, {"model": TrainState.create(params, make_optimizer(config.optimizer))})


def _targets(config, images: jax.Array, rng: jax.Array) -> jax.Array:
    """Images as the likelihood sees them: [0, 1] grey levels, or a binarised draw."""
    x = to_unit_interval(images)
    if config.loss.likelihood == "bernoulli" and config.loss.binarize == "dynamic":
        x = jax.random.bernoulli(rng, x).astype(jnp.float32)
    return x


def _log_likelihood(config, params, x: jax.Array, decoded: jax.Array) -> jax.Array:
    """log p(x | z) per example, in nats."""
    if config.loss.likelihood == "bernoulli":
        return losses.bernoulli_log_likelihood(x, decoded)
    log_scale = jnp.maximum(params["log_scale"], _MIN_LOG_SCALE)
    return losses.discretized_gaussian_log_likelihood(x, decoded, log_scale)


def _mean_image(config, decoded: jax.Array) -> jax.Array:
    if config.loss.likelihood == "bernoulli":
        return jax.nn.sigmoid(decoded)
    return jnp.clip(decoded, 0.0, 1.0)


def kl_weight(config, step: jax.Array) -> jax.Array:
    """beta_t: linear warm-up from 0 to loss.beta over loss.kl_warmup_steps steps."""
    warmup = config.loss.kl_warmup_steps
    if warmup == 0:
        return jnp.asarray(config.loss.beta, jnp.float32)
    return config.loss.beta * jnp.minimum(1.0, (step + 1).astype(jnp.float32) / warmup)


def loss_fn(config, params, x: jax.Array, rng: jax.Array, step: jax.Array):
    """Scalar training loss and its metrics for targets ``x: [B, H, W, C]``."""
    model = build_model(config)
    decoded, mean, logvar, _ = model.apply({"params": params}, x, rng)
    log_px = _log_likelihood(config, params, x, decoded)
    kl = losses.gaussian_kl(mean, logvar)
    kl_term = losses.kl_with_free_bits(mean, logvar, config.loss.free_bits)
    beta = kl_weight(config, step)
    loss = -log_px.mean() + beta * kl_term
    metrics = {
        "loss": loss,
        "elbo": losses.elbo(log_px, kl).mean(),
        "recon": -log_px.mean(),
        "kl": kl.mean(),
        "beta": beta,
    }
    return loss, metrics


def train_step(config, state: State, batch) -> tuple[State, dict]:
    binarize_rng, z_rng = jax.random.split(state.step_key())
    x = _targets(config, batch["image"], binarize_rng)
    objective = functools.partial(loss_fn, config, x=x, rng=z_rng, step=state.step)
    model, metrics, grad_norm = gradient_step(
        state.model, make_optimizer(config.optimizer), objective
    )
    metrics["grad_norm"] = grad_norm
    return state.advance(model=model), metrics


def log_importance_weights(config, params, x: jax.Array, eps: jax.Array) -> jax.Array:
    """``log p(x, z_i) - log q(z_i | x)`` for ``z_i = mean + sigma * eps[i]``.

    Args:
      x: ``[B, H, W, C]`` targets. eps: ``[k, B, D]`` standard normal noise.
    Returns:
      ``[k, B]`` log weights, in nats.
    """
    model = build_model(config)
    mean, logvar = model.apply({"params": params}, x, method=VAE.encode)
    z = mean + jnp.exp(0.5 * logvar) * eps
    k, b, d = eps.shape
    decoded = model.apply({"params": params}, z.reshape(k * b, d), method=VAE.decode)
    x_rep = jnp.broadcast_to(x, (k, *x.shape)).reshape(k * b, *x.shape[1:])
    log_px = _log_likelihood(config, params, x_rep, decoded).reshape(k, b)
    log_pz = losses.diag_gaussian_log_prob(z, jnp.zeros_like(z), jnp.zeros_like(z))
    log_qz = losses.diag_gaussian_log_prob(z, mean, logvar)
    return log_px + log_pz - log_qz


def iwae_log_likelihood(config, params, x: jax.Array, keys: jax.Array, k: int, chunk: int):
    """IWAE estimate of log p(x) per example, ``[B]``, with ``k`` samples drawn ``chunk`` at a
    time (``lax.map`` over chunks keeps memory at ``chunk * B`` decoder passes)."""
    d = config.model.latent_dim

    def one_chunk(c):
        eps = jax.vmap(lambda key: jax.random.normal(jax.random.fold_in(key, c), (chunk, d)))(keys)
        return log_importance_weights(config, params, x, jnp.swapaxes(eps, 0, 1))

    log_w = jax.lax.map(one_chunk, jnp.arange(k // chunk))
    return losses.iwae_bound(log_w.reshape(k, x.shape[0]), axis=0)


def eval_step(config, state: State, batch) -> dict:
    """Held-out ELBO terms and the IWAE NLL estimate (``eval.iwae_k`` samples), batch means."""
    keys = example_keys(state.rng, batch["index"])
    images = to_unit_interval(batch["image"])
    if config.loss.likelihood == "bernoulli" and config.loss.binarize == "dynamic":
        draws = jax.vmap(lambda key, im: jax.random.bernoulli(jax.random.fold_in(key, 0), im))
        x = draws(keys, images).astype(jnp.float32)
    else:
        x = images
    eps = jax.vmap(
        lambda key: jax.random.normal(jax.random.fold_in(key, 1), (config.model.latent_dim,))
    )(keys)
    params = state.model.params
    decoded, mean, logvar, _ = _apply_with_noise(config, params, x, eps)
    log_px = _log_likelihood(config, params, x, decoded)
    kl = losses.gaussian_kl(mean, logvar)
    log_px_iwae = iwae_log_likelihood(
        config, params, x, keys, config.eval.iwae_k, config.eval.iwae_chunk
    )
    num_dims = x[0].size
    metrics = {
        "elbo": losses.elbo(log_px, kl).mean(),
        "recon": -log_px.mean(),
        "kl": kl.mean(),
        "nll_iwae": -log_px_iwae.mean(),
    }
    if config.loss.likelihood == "discretized_gaussian":
        metrics["bpd_iwae"] = losses.bits_per_dim(-log_px_iwae, num_dims).mean()
    return metrics


def _apply_with_noise(config, params, x: jax.Array, eps: jax.Array):
    """Like ``VAE.__call__`` but with the noise given: ``(decoded, mean, logvar, z)``."""
    model = build_model(config)
    mean, logvar = model.apply({"params": params}, x, method=VAE.encode)
    z = mean + jnp.exp(0.5 * logvar) * eps
    return model.apply({"params": params}, z, method=VAE.decode), mean, logvar, z


def reconstruct(config, state: State, images: jax.Array) -> jax.Array:
    """Decoder mean at the posterior mean: ``[B, H, W, C]`` in ``[0, 1]``."""
    model = build_model(config)
    x = to_unit_interval(images)
    params = state.model.params
    mean, _ = model.apply({"params": params}, x, method=VAE.encode)
    return _mean_image(config, model.apply({"params": params}, mean, method=VAE.decode))


def sample(config, state: State, rng: jax.Array, num: int, temperature: float = 1.0) -> Samples:
    """Decoder means for ``z ~ N(0, temperature^2 I)``: ``[num, H, W, C]`` in ``[0, 1]``."""
    model = build_model(config)
    z = temperature * jax.random.normal(rng, (num, config.model.latent_dim))
    params = state.model.params
    return Samples(_mean_image(config, model.apply({"params": params}, z, method=VAE.decode)))


FAMILY = Family(
    name="vae",
    validate_config=validate_config,
    capabilities=capabilities,
    init=init,
    train_step=train_step,
    eval_step=eval_step,
    sample=sample,
    sample_options=SAMPLE_OPTIONS,
    reconstruct=reconstruct,
)
