"""What the transformer priors over codes (``gpt``, ``maskgit``) share.

Both read a trained tokenizer through ``jaxgen.families.tokenizers`` (any VQ-VAE or VQ-GAN
workdir), see its ``h x w`` code grid as a raster-order sequence of ``N = h w`` codes, and run a
``jaxgen.nn.transformer.CodeTransformer`` whose position 0 holds the class. The class table has
``model.num_classes + 1`` rows: the last is the *null* class, the only one an unconditional
prior uses, and the one a conditional prior trains on for a share ``model.cond_dropout`` of its
examples, so that the same network gives the unconditional logits classifier-free guidance
needs (``jaxgen.tokens.guide``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxgen.errors import ConfigError
from jaxgen.families import Capabilities, Samples, tokenizers
from jaxgen.families.common import check_optimizer
from jaxgen.nn.transformer import CodeTransformer


def num_codes(config) -> int:
    return tokenizers.tokenizer_of(config).num_codes


def seq_len(config) -> int:
    h, w = tokenizers.tokenizer_of(config).grid_shape
    return h * w


def null_label(config) -> int:
    return config.model.num_classes


def build_transformer(config, *, causal: bool, extra_tokens: int = 0) -> CodeTransformer:
    m = config.model
    return CodeTransformer(
        num_codes=num_codes(config),
        max_len=seq_len(config) + 1,
        num_classes=m.num_classes,
        width=m.width,
        depth=m.depth,
        heads=m.heads,
        mlp_ratio=m.mlp_ratio,
        causal=causal,
        extra_tokens=extra_tokens,
    )


def check_model(config) -> None:
    check_optimizer(config.optimizer)
    m = config.model
    for key in ("width", "depth", "heads", "mlp_ratio"):
        if not isinstance(m[key], int) or m[key] < 1:
            raise ConfigError(f"model.{key}={m[key]!r} must be a positive integer")
    if m.width % m.heads:
        raise ConfigError(
            f"model.width={m.width} must be divisible by model.heads={m.heads} (one slice each)"
        )
    if not isinstance(m.num_classes, int) or m.num_classes < 0:
        raise ConfigError(f"model.num_classes={m.num_classes!r} must be an integer >= 0")
    if not 0.0 <= m.cond_dropout < 1.0:
        raise ConfigError(
            f"model.cond_dropout={m.cond_dropout!r} must be in [0, 1): the share of training "
            "examples whose class is replaced by the null class"
        )


def capabilities(config, likelihoods: tuple[str, ...]) -> Capabilities:
    k = config.model.num_classes
    return Capabilities(
        generates=True,
        num_classes=k,
        label_classes=k,
        first_stage=True,
        likelihoods=likelihoods,
    )


def codes_of(config, state, images: jax.Array) -> jax.Array:
    """uint8 images -> the frozen tokenizer's codes as sequences ``[B, N]`` in raster order."""
    codes = tokenizers.encode(config, state.frozen, images)
    return codes.reshape(codes.shape[0], -1)


def train_labels(config, labels: jax.Array, rng: jax.Array) -> jax.Array:
    """The class of each training example, replaced by the null class with probability
    ``model.cond_dropout`` (always, for an unconditional prior)."""
    null = null_label(config)
    if config.model.num_classes == 0:
        return jnp.full(labels.shape, null, jnp.int32)
    drop = jax.random.bernoulli(rng, config.model.cond_dropout, labels.shape)
    return jnp.where(drop, null, labels.astype(jnp.int32))


def eval_labels(config, labels: jax.Array) -> jax.Array:
    if config.model.num_classes == 0:
        return jnp.full(labels.shape, null_label(config), jnp.int32)
    return labels.astype(jnp.int32)


def sample_labels(config, num: int, label, scale) -> jax.Array:
    """Labels ``[num]`` of the images to draw: ``label`` (an int or ``[num]`` ints), or classes
    0, 1, .. in turn, or the null class for an unconditional prior. Refuses a class or a guidance
    scale for an unconditional prior."""
    k = config.model.num_classes
    if k == 0:
        if label is not None:
            raise ConfigError("a class was given but this prior is unconditional (num_classes=0)")
        if scale is not None:
            raise ConfigError(
                "--scale (classifier-free guidance) needs a class-conditional prior "
                "(model.num_classes > 0, trained with model.cond_dropout > 0)"
            )
        return jnp.full((num,), null_label(config), jnp.int32)
    if label is None:
        return jnp.arange(num, dtype=jnp.int32) % k
    return jnp.broadcast_to(jnp.asarray(label, jnp.int32), (num,))


def check_positive(name: str, value) -> None:
    if isinstance(value, (int, float)) and not value > 0:
        raise ConfigError(f"--{name}={value!r} must be > 0")


def decode(config, state, codes: jax.Array) -> jax.Array:
    """Sequences ``[B, N]`` -> images in ``[0, 1]`` through the frozen tokenizer."""
    h, w = tokenizers.tokenizer_of(config).grid_shape
    return tokenizers.decode(config, state.frozen, codes.reshape(codes.shape[0], h, w))


def samples(config, state, codes: jax.Array, labels: jax.Array) -> Samples:
    """``Samples`` of decoded ``codes [B, N]``; the labels only for a conditional prior."""
    out_labels = labels if config.model.num_classes > 0 else None
    return Samples(decode(config, state, codes), out_labels)
