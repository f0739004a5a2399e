"""What a prior over codes needs of its first stage, through the ``Tokenizer`` interface only.

A prior's config names a trained tokenizer run in ``first_stage.workdir``; the engine copies that
run's config into ``first_stage.config`` and its parameters into ``State.frozen``
(``jaxgen.engine.first_stage``). These helpers give a prior family the tokenizer of that config,
placeholder parameters of the right shapes for ``init``, and images <-> codes with the frozen
parameters (never differentiated). PixelCNN, GPT and MaskGIT priors share them.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections

from jaxgen.errors import ConfigError
from jaxgen.families import Tokenizer, get_family


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


def bits_per_dim(config, bits_per_code: jax.Array) -> jax.Array:
    """A prior's bits per code spread over the image's dimensions (``h w / (H W C)`` of it): for
    comparison with pixel models, a bound on the codes and not a pixel likelihood."""
    h, w = tokenizer_of(config).grid_shape
    return bits_per_code * (h * w) / math.prod(config.data.image_shape)
