"""Tokenizers from both sides of the ``Tokenizer`` interface.

The VQ tokenizer families (``vqvae``, ``vqgan``) share their ``vq`` config section
(``check_vq``), their codebook state (``codebook_init``, ``codebook_step``: a
``quantize.CodebookState`` in ``State.extra``, the codebook itself a parameter when the loss
learns it), and one tokenizer factory (``vq_tokenizer``, ``vq_tokenizer_params``).

What a prior over codes needs of its first stage, through the ``Tokenizer`` interface only:
a prior's config names a trained tokenizer run in ``first_stage.workdir``; the engine copies that
run's config into ``first_stage.config`` and its parameters into ``State.frozen``
(``jaxgen.engine.first_stage``). These helpers give a prior family the tokenizer of that config,
placeholder parameters of the right shapes for ``init``, and images <-> codes with the frozen
parameters (never differentiated). PixelCNN, GPT and MaskGIT priors share them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections

from jaxgen import quantize as vq
from jaxgen.errors import ConfigError
from jaxgen.families import Tokenizer, get_family
from jaxgen.families.common import check_choice, to_model_range, to_unit_interval
from jaxgen.families.state import State

# ----------------------------------------------------------------- the VQ tokenizer families
CODEBOOKS = ("ema", "loss")
# The pixel scales a VQ family's networks work on: uint8 -> network input, output -> [0, 1].
PIXELS = {
    "unit": (to_unit_interval, lambda y: y),
    "model": (to_model_range, lambda y: (y + 1.0) / 2.0),
}


def check_vq(config) -> None:
    """The ``vq`` section's checks."""
    check_choice(config, "vq.codebook", CODEBOOKS)
    for key in ("num_codes", "dim"):
        if not isinstance(config.vq[key], int) or config.vq[key] < 1:
            raise ConfigError(f"vq.{key}={config.vq[key]!r} must be a positive integer")
    if config.vq.beta < 0:
        raise ConfigError(f"vq.beta={config.vq.beta!r} must be >= 0 (0.25 in the paper)")
    if not 0 <= config.vq.ema_decay < 1:
        raise ConfigError(f"vq.ema_decay={config.vq.ema_decay!r} must be in [0, 1) (e.g. 0.99)")
    if not config.vq.ema_eps > 0:
        raise ConfigError(f"vq.ema_eps={config.vq.ema_eps!r} must be > 0 (e.g. 1e-5)")
    seed = config.vq.get("seed_from_data", False)  # absent in runs saved before 2026-12-03
    if not isinstance(seed, bool):
        raise ConfigError(f"vq.seed_from_data={seed!r} must be True or False")
    if not isinstance(config.vq.restart_after, int) or config.vq.restart_after < 0:
        raise ConfigError(
            f"vq.restart_after={config.vq.restart_after!r} must be an integer >= 0 "
            "(0: no dead-code restarts)"
        )


def uses_ema(config) -> bool:
    return config.vq.codebook == "ema"


def codebook_init(config, params: dict, rng: jax.Array) -> tuple[dict, vq.CodebookState]:
    """A new codebook ``U(-1/K, 1/K)^{K x D}`` for the networks' ``params``: ``(params,
    state)``, the codebook in ``params["codebook"]`` when the loss learns it, else in the
    state's EMA statistics."""
    k = config.vq.num_codes
    codebook = jax.random.uniform(rng, (k, config.vq.dim), jnp.float32, -1.0 / k, 1.0 / k)
    if not uses_ema(config):
        params = {**params, "codebook": codebook}
    return params, vq.CodebookState.init(codebook, ema=uses_ema(config))


def learned_codebook(config, params: dict) -> jax.Array | None:
    """The gradient-trained codebook in ``params``, ``None`` with an EMA codebook."""
    return None if uses_ema(config) else params["codebook"]


def codebook_of(state: State) -> jax.Array:
    """The ``[K, D]`` codebook in use of a VQ family's state."""
    return state.extra.codebook(state.model.params.get("codebook"))


def nets(params: dict) -> dict:
    """The networks' parameters without the codebook."""
    return {k: v for k, v in params.items() if k != "codebook"}


def codebook_step(config, params: dict, state: State, z_e: jax.Array, indices: jax.Array):
    """``CodebookState.step`` with the ``vq`` settings after a gradient step: ``params`` are the
    updated parameters (holding the codebook when the loss learns it), ``z_e`` and ``indices``
    the step's encoder outputs and codes; with ``vq.seed_from_data`` every code is seeded from
    the batch at step 0. Keys: the step's (``State.step_key``). Returns ``(params,
    CodebookState, restarted)``."""
    seed = state.step == 0 if config.vq.get("seed_from_data", False) else False
    codes, learned, restarted = state.extra.step(
        learned_codebook(config, params),
        z_e,
        indices,
        state.step_key(),
        decay=config.vq.ema_decay,
        eps=config.vq.ema_eps,
        restart_after=config.vq.restart_after,
        seed=seed,
    )
    if learned is not None:
        params = {**params, "codebook": learned}
    return params, codes, restarted


def vq_tokenizer_params(config, state: State) -> dict:
    """What a VQ tokenizer needs of a trained state: ``{"params": nets, "codebook": [K, D]}``."""
    del config
    return {"params": nets(state.model.params), "codebook": codebook_of(state)}


def vq_tokenizer(
    config, grid_shape: tuple[int, int], encode: Callable, decode: Callable, pixels: str
) -> Tokenizer:
    """A VQ family's ``Tokenizer``: ``encode(params, x) -> z_e [B, h, w, D]`` and
    ``decode(params, z_q) -> images`` are its networks on the pixel scale ``pixels`` (``"unit"``:
    ``[0, 1]``, ``"model"``: ``[-1, 1]``); codes are the nearest codebook rows, and decoded
    images are clipped to ``[0, 1]``. Its continuous latents are the encoder's outputs before
    quantisation (latent diffusion's VQ-regularised first stage), which ``decode_latents``
    quantises before decoding. Its parameters are ``vq_tokenizer_params``."""
    to_input, to_unit = PIXELS[pixels]

    def encode_codes(frozen, images):
        z_e = encode(frozen["params"], to_input(images))
        return vq.nearest_code(z_e, frozen["codebook"])[0]

    def decode_codes(frozen, codes):
        z_q = jnp.take(frozen["codebook"], codes, axis=0)
        return jnp.clip(to_unit(decode(frozen["params"], z_q)), 0.0, 1.0)

    def encode_latents(frozen, images):
        return encode(frozen["params"], to_input(images)).astype(jnp.float32)

    def decode_latents(frozen, z_e):
        return decode_codes(frozen, vq.nearest_code(z_e, frozen["codebook"])[0])

    return Tokenizer(
        num_codes=config.vq.num_codes,
        grid_shape=grid_shape,
        image_shape=tuple(config.data.image_shape),
        encode=encode_codes,
        decode=decode_codes,
        latent_dim=config.vq.dim,
        encode_latents=encode_latents,
        decode_latents=decode_latents,
    )


def round_trip(tokenizer: Tokenizer, frozen, images: jax.Array) -> jax.Array:
    """uint8 images -> codes -> images in ``[0, 1]``: a tokenizer's reconstructions."""
    return tokenizer.decode(frozen, tokenizer.encode(frozen, images))


def vq_reconstructor(tokenizer_fn: Callable[[ml_collections.ConfigDict], Tokenizer]):
    """A VQ tokenizer family's ``reconstruct(config, state, images)``: the images through its
    encoder, codebook and decoder, ``[B, H, W, C]`` in ``[0, 1]``."""

    def reconstruct(config, state: State, images: jax.Array) -> jax.Array:
        return round_trip(tokenizer_fn(config), vq_tokenizer_params(config, state), images)

    return reconstruct


def reconstruction_figures(x: jax.Array, x_hat: jax.Array) -> dict:
    """``mse`` and ``psnr`` (mean over images of each image's PSNR) of reconstructions on the
    ``[0, 1]`` scale, clipped to it first, as an image viewer sees them. Shared by the
    tokenizers so their figures mean the same."""
    per_image = jnp.mean((jnp.clip(x_hat, 0.0, 1.0) - x) ** 2, axis=(1, 2, 3))
    return {
        "mse": per_image.mean(),
        "psnr": jnp.mean(-10.0 * jnp.log10(jnp.maximum(per_image, 1e-10))),
    }


# ---------------------------------------------------------------- a prior's first stage


def first_stage_config(config) -> ml_collections.ConfigDict:
    """The tokenizer run's config, once the engine has resolved ``first_stage.workdir``."""
    fs = config.first_stage.config
    if "family" not in fs:
        raise ConfigError(
            f"first_stage.workdir={config.first_stage.workdir!r} has not been resolved to a "
            "trained tokenizer run; the engine does this when the run starts"
        )
    return fs


def tokenizer_of(config) -> Tokenizer:
    fs = first_stage_config(config)
    return get_family(fs.family).tokenizer(fs)


def frozen_placeholder(config, rng: jax.Array, example_batch):
    """Zeros shaped like the tokenizer's parameters, for a prior's ``init``: the engine copies
    the trained ones in, and tracing the tokenizer's initialisers would only slow compiling."""
    fs = first_stage_config(config)
    family = get_family(fs.family)

    def params_of(r, batch):
        return family.tokenizer_params(fs, family.init(fs, r, batch))

    shapes = jax.eval_shape(params_of, rng, example_batch)
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def encode(config, frozen, images: jax.Array) -> jax.Array:
    """uint8 images ``[B, H, W, C]`` -> int32 codes ``[B, h, w]`` with the frozen tokenizer."""
    return tokenizer_of(config).encode(jax.lax.stop_gradient(frozen), images)


def decode(config, frozen, codes: jax.Array) -> jax.Array:
    """int32 codes ``[B, h, w]`` -> images in ``[0, 1]`` with the frozen tokenizer."""
    return tokenizer_of(config).decode(frozen, codes)


def encode_latents(config, frozen, images: jax.Array) -> jax.Array:
    """uint8 images -> float32 latents ``[B, h, w, D]`` with the frozen first stage."""
    return tokenizer_of(config).encode_latents(jax.lax.stop_gradient(frozen), images)


def decode_latents(config, frozen, latents: jax.Array) -> jax.Array:
    """Latents ``[B, h, w, D]`` -> images in ``[0, 1]`` with the frozen first stage."""
    return tokenizer_of(config).decode_latents(frozen, latents)


def bits_per_dim(config, bits_per_code: jax.Array) -> jax.Array:
    """A prior's bits per code spread over the image's dimensions (``h w / (H W C)`` of it): for
    comparison with pixel models, a bound on the codes and not a pixel likelihood."""
    h, w = tokenizer_of(config).grid_shape
    return bits_per_code * (h * w) / math.prod(config.data.image_shape)
