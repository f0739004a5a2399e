"""The KL autoencoder of latent diffusion (Rombach et al. 2022): the VQ-GAN's networks with a
diagonal Gaussian bottleneck in place of the quantiser, trained with the VQ-GAN's losses.

The encoder gives ``2 D`` channels per latent position, a mean and a log-variance (clipped to
``[-30, 20]``, as latent diffusion's ``DiagonalGaussianDistribution``); the decoder gets a sample
``z = mean + exp(logvar / 2) * eps``. The loss is the VQ-GAN's (``jaxgen.families.vqgan``: L1 +
LPIPS + the PatchGAN's adversarial term with the adaptive weight) with the KL term in place of
the codebook terms::

    L = L_rec + kl.weight * KL(q(z | x) || N(0, I)) / (H W C)  +  lambda * L_adv

The KL divergence is summed over the latent's ``h w D`` values and averaged over images, as in
latent diffusion, where it is added to a reconstruction loss *summed* over pixels; ours is a
mean over pixels, so the KL term is divided by the pixel count ``H W C`` to keep the paper's
balance and its weight (1e-6: the latents are barely regularised, only kept from drifting to
arbitrary scales).

As a first stage (``tokenizer``) it gives continuous latents only, no codes:
``encode_latents`` is the posterior *mean* (deterministic; with so small a KL weight the
posterior's spread is small next to the mean's), ``decode_latents`` the decoder. A diffusion
model trains on them (``configs/ldm.py``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxgen.errors import ConfigError
from jaxgen.families import Capabilities, Family, Tokenizer, tokenizers, vqgan
from jaxgen.families.common import check_int, make_optimizer, to_model_range
from jaxgen.families.state import State, TrainState

LOGVAR_RANGE = (-30.0, 20.0)  # latent diffusion's clamp on the log-variance


def validate_config(config) -> None:
    vqgan.check_autoencoder(config)
    check_int(config.kl.dim, "kl.dim", 1)
    if not config.kl.weight >= 0:
        raise ConfigError(f"kl.weight={config.kl.weight!r} must be >= 0 (1e-6 in the paper)")


def capabilities(config) -> Capabilities:
    del config
    return Capabilities(reconstructs=True, is_tokenizer=True, progress_metric="rec_loss")


def init(config, rng: jax.Array, example_batch) -> State:
    x = to_model_range(example_batch["image"])
    d = config.kl.dim

    def through(module, x):  # the decoder takes D channels, the encoder gives 2 D
        return module.decode(module.encode(x)[..., :d])

    params = vqgan.build_model(config).init(jax.random.fold_in(rng, 0), x, method=through)
    d_params = vqgan.build_discriminator(config).init(jax.random.fold_in(rng, 2), x)["params"]
    players = {
        "model": TrainState.create(params["params"], make_optimizer(config.optimizer)),
        "discriminator": TrainState.create(d_params, make_optimizer(config.optimizer_d)),
    }
    return State.create(rng, players, constants=vqgan.constants(config))


def posterior(z_e: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(mean, logvar)``, each ``[B, h, w, D]``, from the encoder's ``2 D`` channels."""
    mean, logvar = jnp.split(z_e.astype(jnp.float32), 2, axis=-1)
    return mean, jnp.clip(logvar, *LOGVAR_RANGE)


def kl_divergence(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """``KL(N(mean, exp(logvar)) || N(0, I))`` per example, summed over its latent: ``[B]``."""
    terms = mean**2 + jnp.exp(logvar) - 1.0 - logvar
    return 0.5 * jnp.sum(terms, axis=tuple(range(1, mean.ndim)))


def kl_bottleneck(config, rng: jax.Array):
    """``bottleneck(params, z_e) -> (z, loss, metrics, None)`` for ``vqgan.autoencoder_grads``:
    a reparameterised sample and the weighted KL term (module docstring)."""
    pixels = math.prod(config.data.image_shape)

    def bottleneck(params, z_e):
        del params
        mean, logvar = posterior(z_e)
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, jnp.float32)
        kl = jnp.mean(kl_divergence(mean, logvar))
        metrics = {"kl": kl, "posterior_std": jnp.mean(jnp.exp(0.5 * logvar))}
        return z, config.kl.weight * kl / pixels, metrics, None

    return bottleneck


def train_step(config, state: State, batch) -> tuple[State, dict]:
    x = to_model_range(batch["image"])
    bottleneck = kl_bottleneck(config, jax.random.fold_in(state.step_key(), 1))
    model, disc, metrics, _, _ = vqgan.adversarial_step(config, state, x, bottleneck)
    return state.advance(model=model, discriminator=disc), metrics


def encode_mean(config, params, x: jax.Array) -> jax.Array:
    """The posterior mean ``[B, h, w, D]`` of images ``x`` on ``[-1, 1]``."""
    return posterior(vqgan.encode(config, params, x))[0]


def eval_step(config, state: State, batch) -> dict:
    """Reconstruction figures of the posterior mean on the ``[0, 1]`` scale (MSE, PSNR, L1,
    LPIPS when the config uses it), the KL term, and the latents' spread."""
    x = to_model_range(batch["image"])
    params = state.model.params
    mean, logvar = posterior(vqgan.encode(config, params, x))
    x_hat = jnp.clip(vqgan.decode(config, params, mean), -1.0, 1.0)
    unit, unit_hat = (x + 1.0) / 2.0, (x_hat + 1.0) / 2.0
    return {
        **tokenizers.reconstruction_figures(unit, unit_hat),
        "l1": jnp.mean(jnp.abs(unit_hat - unit)),
        "lpips": vqgan.perceptual(config, state.constants, x_hat, x),
        "kl": jnp.mean(kl_divergence(mean, logvar)),
        "latent_std": jnp.std(mean),
    }


def tokenizer(config) -> Tokenizer:
    """The KL autoencoder as a first stage: continuous ``(h, w, kl.dim)`` latents, no codes."""

    def encode_latents(frozen, images):
        return encode_mean(config, frozen["params"], to_model_range(images))

    def decode_latents(frozen, z):
        return jnp.clip((vqgan.decode(config, frozen["params"], z) + 1.0) / 2.0, 0.0, 1.0)

    return Tokenizer(
        num_codes=0,
        grid_shape=vqgan.latent_shape(config),
        image_shape=tuple(config.data.image_shape),
        latent_dim=config.kl.dim,
        encode_latents=encode_latents,
        decode_latents=decode_latents,
    )


def tokenizer_params(config, state: State) -> dict:
    del config
    return {"params": state.model.params}


def reconstruct(config, state: State, images: jax.Array) -> jax.Array:
    """Images through the encoder's posterior mean and the decoder, in ``[0, 1]``."""
    t, frozen = tokenizer(config), tokenizer_params(config, state)
    return t.decode_latents(frozen, t.encode_latents(frozen, images))


FAMILY = Family(
    name="autoencoder_kl",
    validate_config=validate_config,
    capabilities=capabilities,
    init=init,
    train_step=train_step,
    eval_step=eval_step,
    reconstruct=reconstruct,
    tokenizer=tokenizer,
    tokenizer_params=tokenizer_params,
    constants=vqgan.constants,
)
