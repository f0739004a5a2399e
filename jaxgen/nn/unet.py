"""A denoising UNet in the style of DDPM (Ho et al. 2020), for noise, data or velocity prediction.

Layout, for ``channel_mult = (m_0, .., m_{L-1})`` and base width ``channels``:

- time ``t`` in (0, 1] is scaled by 1000 (the discrete step scale the architecture was tuned for),
  embedded sinusoidally to ``channels`` features and passed through a two-layer MLP of width
  ``4 * channels``; with ``num_classes > 0`` a learned class embedding (``num_classes + 1``
  rows, the last one the *null* class used for classifier-free guidance) is added to it;
- a 3x3 input convolution, then ``L`` levels going down: ``num_res_blocks`` residual blocks of
  width ``channels * m_i`` (each followed by self-attention when the feature map's side is in
  ``attention_resolutions``) and a stride-2 convolution between levels;
- a middle of residual block, attention, residual block;
- ``L`` levels going up with ``num_res_blocks + 1`` residual blocks each, every one fed the
  concatenation of the current features and one stored skip, and a nearest-neighbour upsampling
  plus 3x3 convolution between levels;
- GroupNorm, SiLU and a 3x3 output convolution back to the input's channel count.

With ``context_resolutions`` (feature-map sides) the features at those sides also attend to a
``context [B, L, D]`` (a text encoder's output, ``jaxgen.nn.text``) after every residual block
and in the middle: cross-attention, padding keys masked by ``context_mask [B, L]``, its output
projection starting at zero like the others. With ``pooled_context`` the mean of the context
over its unmasked tokens, through a dense layer, is also added to the time embedding, as Imagen
adds a pooled text embedding: a global path to every residual block, as class labels have.

GroupNorm uses 32 groups, or fewer for narrow layers so that every group keeps at least 4
channels (see ``jaxgen.nn.layers.num_groups``). The residual block, down- and up-sampling
and the time embedding live in ``jaxgen.nn.layers`` (shared with the classifier).

The convolutions that close a residual branch, the attention output projection and the output
convolution start at zero, so at initialisation every block is the identity and the model
predicts 0.

Mixed precision: parameters are always float32; ``dtype`` is the compute dtype (e.g. bfloat16);
normalisation statistics and the attention softmax run in float32, and the output is float32.

Shapes: ``x: [B, H, W, C]`` (in [-1, 1] for images), ``t: [B]``, ``y: [B]`` int or ``None``;
the output has the shape of ``x``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# The shared blocks, importable from here as before (``from jaxgen.nn.unet import ...``).
from jaxgen.nn.layers import (
    TIME_SCALE,
    CrossAttention,
    Downsample,
    ResBlock,
    Upsample,
    attention,
    conv,
    group_norm,
    num_groups,
    timestep_embedding,
)

__all__ = [
    "TIME_SCALE",
    "AttentionBlock",
    "Downsample",
    "ResBlock",
    "UNet",
    "Upsample",
    "count_params",
    "num_groups",
    "timestep_embedding",
]


class AttentionBlock(nn.Module):
    """Self-attention over the ``H * W`` positions, with a residual connection; the output
    projection starts at zero. ``num_heads`` splits the channels evenly."""

    num_heads: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, hgt, wid, c = x.shape
        if c % self.num_heads:
            raise ValueError(f"attention: {c} channels do not split into {self.num_heads} heads")
        head = c // self.num_heads
        h = group_norm(c, self.dtype)(x).reshape(b, hgt * wid, c)
        dense = lambda name: nn.Dense(c, dtype=self.dtype, param_dtype=jnp.float32, name=name)
        split = lambda a: a.reshape(b, hgt * wid, self.num_heads, head)
        q, k, v = (split(dense(n)(h)) for n in ("query", "key", "value"))
        out = attention(q, k, v).reshape(b, hgt * wid, c)
        out = nn.Dense(
            c,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=nn.initializers.zeros,
            name="out",
        )(out)
        return x + out.reshape(b, hgt, wid, c)


class UNet(nn.Module):
    """The denoiser ``f(x, t, y)``; see the module docstring for the layout.

    ``num_classes = 0``: unconditional (``y`` must be ``None``). Otherwise ``y`` holds labels in
    ``0..num_classes``, where ``num_classes`` is the null class; ``y = None`` means all null.
    Dropout needs ``deterministic=False`` and a ``'dropout'`` rng.
    """

    channels: int = 128
    channel_mult: Sequence[int] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attention_resolutions: Sequence[int] = (16,)
    dropout: float = 0.1
    num_classes: int = 0
    num_heads: int = 1
    out_channels: int | None = None
    dtype: Any = jnp.float32
    # Feature-map sides at which the features attend to ``context`` (cross-attention).
    context_resolutions: Sequence[int] = ()
    pooled_context: bool = False  # add the context's masked mean to the time embedding

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        t: jax.Array,
        y: jax.Array | None = None,
        deterministic: bool = True,
        context: jax.Array | None = None,
        context_mask: jax.Array | None = None,
    ) -> jax.Array:
        dt = self.dtype
        out_channels = self.out_channels or x.shape[-1]
        emb_dim = 4 * self.channels
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (x.shape[0],))

        emb = timestep_embedding(t * TIME_SCALE, self.channels)
        emb = nn.Dense(emb_dim, dtype=dt, param_dtype=jnp.float32, name="time_in")(emb)
        emb = nn.Dense(emb_dim, dtype=dt, param_dtype=jnp.float32, name="time_out")(nn.silu(emb))
        if self.num_classes > 0:
            if y is None:
                y = jnp.full((x.shape[0],), self.num_classes, jnp.int32)
            table = nn.Embed(
                self.num_classes + 1, emb_dim, dtype=dt, param_dtype=jnp.float32, name="class_emb"
            )
            emb = emb + table(jnp.asarray(y, jnp.int32))
        elif y is not None:
            raise ValueError("labels were given to an unconditional UNet (num_classes=0)")

        if bool(self.context_resolutions) != (context is not None):
            raise ValueError(
                "a context (and only a context) needs context_resolutions: "
                f"{tuple(self.context_resolutions)} with context "
                f"{None if context is None else context.shape}"
            )
        if context is not None and context_mask is None:
            context_mask = jnp.ones(context.shape[:2], bool)
        if self.pooled_context and context is not None:
            weight = context_mask.astype(jnp.float32)[..., None]
            pooled = jnp.sum(context.astype(jnp.float32) * weight, axis=1) / jnp.maximum(
                jnp.sum(weight, axis=1), 1.0
            )
            dense = nn.Dense(emb_dim, dtype=dt, param_dtype=jnp.float32, name="context_emb")
            emb = emb + dense(pooled.astype(dt))
        res = lambda f: ResBlock(f, self.dropout, dt)

        def attn():
            self_attention = AttentionBlock(self.num_heads, dt)

            def apply(h):
                h = self_attention(h)
                if h.shape[1] in self.context_resolutions:
                    h = CrossAttention(self.num_heads, dt)(h, context, context_mask)
                return h

            return apply

        def cross(h):
            if h.shape[1] in self.context_resolutions:
                h = CrossAttention(self.num_heads, dt)(h, context, context_mask)
            return h

        h = conv(self.channels, dt)(x.astype(dt))
        skips = [h]
        for level, mult in enumerate(self.channel_mult):
            for _ in range(self.num_res_blocks):
                h = res(self.channels * mult)(h, emb, deterministic)
                if h.shape[1] in self.attention_resolutions:
                    h = attn()(h)
                else:
                    h = cross(h)
                skips.append(h)
            if level != len(self.channel_mult) - 1:
                h = Downsample(dt)(h)
                skips.append(h)

        h = res(h.shape[-1])(h, emb, deterministic)
        h = attn()(h)
        h = res(h.shape[-1])(h, emb, deterministic)

        for level, mult in reversed(list(enumerate(self.channel_mult))):
            for _ in range(self.num_res_blocks + 1):
                h = jnp.concatenate([h, skips.pop()], axis=-1)
                h = res(self.channels * mult)(h, emb, deterministic)
                if h.shape[1] in self.attention_resolutions:
                    h = attn()(h)
                else:
                    h = cross(h)
            if level != 0:
                h = Upsample(dt)(h)
        assert not skips

        h = nn.silu(group_norm(h.shape[-1], dt)(h))
        h = conv(out_channels, dt, zero=True)(h)
        return h.astype(jnp.float32)


def count_params(model: UNet, image_shape: Sequence[int]) -> int:
    """Parameter count of ``model`` on ``[1, *image_shape]`` inputs, by shape inference only."""
    x = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    t = jax.ShapeDtypeStruct((1,), jnp.float32)
    y = jax.ShapeDtypeStruct((1,), jnp.int32) if model.num_classes > 0 else None
    init = lambda x, t, y: model.init(jax.random.PRNGKey(0), x, t, y)
    shapes = jax.eval_shape(init, x, t, y)
    return sum(math.prod(a.shape) for a in jax.tree.leaves(shapes["params"]))
