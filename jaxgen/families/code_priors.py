"""What the priors over codes (``pixelcnn``, ``gpt``, ``maskgit``) share.

All three read a trained tokenizer through ``jaxgen.families.tokenizers`` (any VQ-VAE or VQ-GAN
workdir), train by one optimiser step on a loss of the codes (``train_step``; the likelihood
priors' ``nll_train_step``) and take their classes from the data the same way (``eval_labels``,
``sample_labels``).

The transformer priors (``gpt``, ``maskgit``) see the ``h x w`` code grid as a raster-order
sequence of ``N = h w`` codes and run a ``jaxgen.nn.transformer.CodeTransformer`` whose position
0 holds the class. The class table has ``model.num_classes + 1`` rows: the last is the *null*
class, the only one an unconditional prior uses, and the one a conditional prior trains on for a
share ``model.p_uncond`` of its examples (``train_labels``: the diffusion models' label dropout,
``jaxgen.diffusion.guidance.drop_labels``), so that the same network gives the unconditional
logits classifier-free guidance needs (``jaxgen.tokens.guide``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxgen.diffusion.guidance import drop_labels
from jaxgen.errors import ConfigError
from jaxgen.families import Capabilities, Samples, tokenizers
from jaxgen.families.common import check_optimizer, make_optimizer
from jaxgen.families.state import State, gradient_step
from jaxgen.nn.transformer import CodeTransformer


def num_codes(config) -> int:
    return tokenizers.tokenizer_of(config).num_codes


def seq_len(config) -> int:
    h, w = tokenizers.tokenizer_of(config).grid_shape
    return h * w


def null_label(config) -> int:
    return config.model.num_classes


def p_uncond(config) -> float:
    """``model.p_uncond``: the share of training examples whose class is replaced by the null
    class (the diffusion family's ``diffusion.p_uncond``, under the same name)."""
    # Runs saved before 2026-12-03 stored it as model.cond_dropout.
    return config.model.get("p_uncond", config.model.get("cond_dropout", 0.0))


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
    p = p_uncond(config)
    if not 0.0 <= p < 1.0:
        raise ConfigError(
            f"model.p_uncond={p!r} must be in [0, 1): the share of training examples whose "
            "class is replaced by the null class"
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
    ``model.p_uncond`` (always, for an unconditional prior)."""
    if config.model.num_classes == 0:
        return jnp.full(labels.shape, null_label(config), jnp.int32)
    return drop_labels(labels, rng, p_uncond(config), null_label(config))


def eval_labels(config, labels: jax.Array) -> jax.Array:
    """The data's classes as int32, or the null class for an unconditional prior."""
    if config.model.num_classes == 0:
        return jnp.full(labels.shape, null_label(config), jnp.int32)
    return labels.astype(jnp.int32)


def sample_labels(config, num: int, label) -> jax.Array:
    """Labels ``[num]`` of the images to draw: ``label`` (an int or ``[num]`` ints), or classes
    0, 1, .. in turn, or the null class for an unconditional prior, which refuses a class."""
    k = config.model.num_classes
    if k == 0:
        if label is not None:
            raise ValueError("a class was given but this prior is unconditional (num_classes=0)")
        return jnp.full((num,), null_label(config), jnp.int32)
    if label is None:
        return jnp.arange(num, dtype=jnp.int32) % k
    return jnp.broadcast_to(jnp.asarray(label, jnp.int32), (num,))


def check_scale(config, options: dict) -> None:
    """``prepare_sample``'s check of ``--scale``: guidance needs the null class of a conditional
    prior."""
    if options["scale"] is not None and config.model.num_classes == 0:
        raise ConfigError(
            "--scale (classifier-free guidance) needs a class-conditional prior "
            "(model.num_classes > 0, trained with model.p_uncond > 0)"
        )


def train_step(config, state: State, objective) -> tuple[State, dict]:
    """One optimiser step of a prior's single player on ``objective(params) -> (loss, metrics)``;
    the metrics gain ``grad_norm``."""
    tx = make_optimizer(config.optimizer)
    model, metrics, grad_norm = gradient_step(state.model, tx, objective)
    return state.advance(model=model), {**metrics, "grad_norm": grad_norm}


def nll_metrics(config, bits: jax.Array) -> dict:
    """``nll_bits`` (bits per code) and ``bits_per_dim`` of a likelihood prior."""
    return {"nll_bits": bits, "bits_per_dim": tokenizers.bits_per_dim(config, bits)}


def nll_train_step(config, state: State, bits_fn) -> tuple[State, dict]:
    """``train_step`` on the mean of ``bits_fn(params) -> [B]``, each example's negative
    log-likelihood in bits per code (PixelCNN, GPT): metrics ``loss`` (the same number),
    ``nll_bits``, ``bits_per_dim`` and ``grad_norm``."""

    def objective(params):
        bits = bits_fn(params).mean()
        return bits, {"loss": bits, **nll_metrics(config, bits)}

    return train_step(config, state, objective)


def decode(config, state, codes: jax.Array) -> jax.Array:
    """Codes ``[B, N]`` (or ``[B, h, w]``) -> images in ``[0, 1]`` through the frozen tokenizer."""
    h, w = tokenizers.tokenizer_of(config).grid_shape
    return tokenizers.decode(config, state.frozen, codes.reshape(codes.shape[0], h, w))


def samples(config, state, codes: jax.Array, labels: jax.Array) -> Samples:
    """``Samples`` of decoded ``codes [B, N]`` (or ``[B, h, w]``); the labels only for a
    conditional prior."""
    out_labels = labels if config.model.num_classes > 0 else None
    return Samples(decode(config, state, codes), out_labels)
