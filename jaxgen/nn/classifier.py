"""An image classifier with a time input: the noise-aware classifier for classifier guidance,
and (fed ``t = 0`` and trained on clean data) the evaluator that scores samples.

The layout is the UNet's down path (``jaxgen.nn.unet``), built from the same blocks
(``jaxgen.nn.layers``): a sinusoidal time embedding through a two-layer MLP, a 3x3 input
convolution, then per level ``num_res_blocks`` residual blocks that add the time embedding, with
a stride-2 convolution between levels. A head of GroupNorm, SiLU and global average pooling
gives the features; one dense layer gives the logits. GroupNorm (not BatchNorm) keeps
examples independent, which the per-example gradients of guidance need.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxgen.nn.layers import TIME_SCALE, Downsample, ResBlock, conv, group_norm, timestep_embedding


class Classifier(nn.Module):
    """``logits = f(x, t)``; with ``features=True``, ``(logits, pooled features)``.

    ``x: [B, H, W, C]`` in [-1, 1] (noised or clean), ``t: [B]`` or a scalar in [0, 1].
    """

    num_classes: int
    channels: int = 32
    channel_mult: Sequence[int] = (1, 2, 2)
    num_res_blocks: int = 1
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, t, deterministic: bool = True, features: bool = False):
        dt = self.dtype
        emb_dim = 4 * self.channels
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (x.shape[0],))
        emb = timestep_embedding(t * TIME_SCALE, self.channels)
        emb = nn.Dense(emb_dim, dtype=dt, param_dtype=jnp.float32, name="time_in")(emb)
        emb = nn.Dense(emb_dim, dtype=dt, param_dtype=jnp.float32, name="time_out")(nn.silu(emb))

        h = conv(self.channels, dt)(x.astype(dt))
        for level, mult in enumerate(self.channel_mult):
            for _ in range(self.num_res_blocks):
                h = ResBlock(self.channels * mult, self.dropout, dt)(h, emb, deterministic)
            if level != len(self.channel_mult) - 1:
                h = Downsample(dt)(h)
        h = nn.silu(group_norm(h.shape[-1], dt)(h))
        pooled = jnp.mean(h.astype(jnp.float32), axis=(1, 2))
        logits = nn.Dense(self.num_classes, param_dtype=jnp.float32, name="head")(pooled)
        return (logits, pooled) if features else logits
