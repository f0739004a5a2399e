"""The building blocks shared by the networks: the sinusoidal time embedding, GroupNorm and
convolution factories, the GAN networks' choice of normalisation (``Norm``, with DCGAN's
initialisation), scaled dot-product attention (``jaxgen.nn.transformer``, ``jaxgen.nn.vqgan``),
the pre-LayerNorm transformer ``Block`` (the priors' transformer and the text encoder),
``CrossAttention`` of image features to a context (the UNet reading a caption),
the time-conditioned residual block, stride-2 down- and nearest-neighbour
up-sampling (``jaxgen.nn.unet``, ``jaxgen.nn.classifier``), and the pixel shuffle
``depth_to_space`` (the decoders of ``jaxgen.nn.vae`` and ``jaxgen.nn.vqvae``).

Flax names a submodule after its class (``ResBlock_0``, ``Conv_0``, ``GroupNorm_0``), not after
the file that defines it, so a network's parameter tree does not depend on where these live.

Mixed precision: parameters are always float32; ``dtype`` is the compute dtype.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# Time t in (0, 1] is multiplied by this before ``timestep_embedding``: the discrete step scale
# that DDPM's architecture was tuned for.
TIME_SCALE = 1000.0


def num_groups(channels: int, max_groups: int = 32, min_group_size: int = 4) -> int:
    """GroupNorm's group count: the largest divisor of ``channels`` that is at most
    ``max_groups`` and leaves at least ``min_group_size`` channels per group (32 for DDPM's
    widths of 128 and more).

    Groups of one channel would be instance norm, which subtracts every per-channel constant,
    and so would erase the time and class embeddings that the residual blocks add per channel
    just before their second norm; narrow test-sized UNets would then ignore ``t`` and ``y``.
    """
    for g in range(max(1, min(max_groups, channels // min_group_size)), 0, -1):
        if channels % g == 0:
            return g
    return 1


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
    """Sinusoidal features of ``t: [B]``: ``[B, dim]``, sines then cosines, in float32.

    Frequencies fall geometrically from 1 to ``1 / max_period``; an odd ``dim`` gets a zero
    column at the end.
    """
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / max(half - 1, 1))
    angles = jnp.asarray(t, jnp.float32)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


# A masked attention logit: finite, so a fully masked row gives uniform weights instead of NaN.
MASKED_LOGIT = -1e9


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Scaled dot-product attention per head, ``softmax(q k^T / sqrt(D)) v``.

    ``q: [B, Tq, H, D]``, ``k, v: [B, Tk, H, D]`` -> ``[B, Tq, H, D]``. ``mask`` (bool,
    broadcastable to ``[Tq, Tk]``; True = may attend) sets the other logits to ``MASKED_LOGIT``.
    Logits and softmax are float32 whatever the compute dtype; the weights return to ``v``'s.

    The heads move next to the batch first, so that both products are plain batched matrix
    products: contracting ``[B, T, H, D]`` in place made XLA's CPU backend up to 6x slower forward
    (``bench/results/attention_layout.md``).
    """
    q, k, v = (jnp.swapaxes(a, 1, 2) for a in (q, k, v))  # [B, H, T, D]
    logits = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32)
    logits = logits / np.sqrt(q.shape[-1])
    if mask is not None:
        logits = jnp.where(mask, logits, MASKED_LOGIT)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.swapaxes(jnp.einsum("bhqk,bhkd->bhqd", weights, v), 1, 2)


def group_norm(channels: int, dtype: Any) -> nn.GroupNorm:
    """GroupNorm over ``channels`` with ``num_groups(channels)`` groups (float32 parameters)."""
    return nn.GroupNorm(num_groups=num_groups(channels), dtype=dtype, param_dtype=jnp.float32)


def conv(features: int, dtype: Any, stride: int = 1, zero: bool = False, kernel: int = 3):
    """A ``kernel x kernel`` convolution with symmetric padding ``kernel // 2`` (so stride 1
    keeps H and W, stride 2 halves them); ``zero=True`` starts its kernel at zero (the bias
    starts at zero either way), otherwise LeCun normal."""
    pad = kernel // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=nn.initializers.zeros if zero else nn.initializers.lecun_normal(),
    )


# Batch norm: running = BN_MOMENTUM * running + (1 - BN_MOMENTUM) * this batch's statistic.
BN_MOMENTUM = 0.9
NORMS = ("batch", "layer", "none")


# DCGAN's initialisation: weights ~ N(0, 0.02); norm scales ~ N(1, 0.02).
def dcgan_init(std: float = 0.02):
    return nn.initializers.normal(std)


def scale_init_near_one(std: float = 0.02):
    """Normalisation scales drawn from ``N(1, std^2)`` (DCGAN's and the PatchGAN's start)."""

    def init(key, shape, dtype=jnp.float32):
        return 1.0 + std * jax.random.normal(key, shape, dtype)

    return init


class Norm(nn.Module):
    """The chosen normalisation of a ``[B, ..., C]`` activation, one of ``NORMS``: ``"batch"``,
    ``"layer"`` (per example over every axis but the batch's, as the WGAN-GP paper recommends for
    its critic) or ``"none"``.

    Batch norm either keeps running statistics (``keep_running=True``, the ``batch_stats``
    collection: batch statistics while training, the averages when ``use_running_average``) or
    always normalises by the statistics of the batch it is given (``keep_running=False``: a
    discriminator's, which is only ever used in training). ``init_std > 0`` starts the scales at
    ``N(1, init_std)``, DCGAN's initialisation; ``0`` starts them at one.
    """

    kind: str
    use_running_average: bool = False
    init_std: float = 0.0
    # False: batch norm by the batch's own statistics, with no running averages (the
    # discriminator's, which is only ever used in training).
    keep_running: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale_init = scale_init_near_one(self.init_std) if self.init_std else nn.initializers.ones
        if self.kind == "batch" and not self.keep_running:
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(x, axis=axes)
            var = jnp.mean(jnp.square(x - mean), axis=axes)
            scale = self.param("scale", scale_init, (x.shape[-1],))
            bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],))
            return (x - mean) * jax.lax.rsqrt(var + 1e-5) * scale + bias
        if self.kind == "batch":
            return nn.BatchNorm(
                use_running_average=self.use_running_average,
                momentum=BN_MOMENTUM,
                epsilon=1e-5,
                scale_init=scale_init,
            )(x)
        if self.kind == "layer":
            axes = tuple(range(1, x.ndim))
            return nn.LayerNorm(
                reduction_axes=axes, feature_axes=-1, epsilon=1e-5, scale_init=scale_init
            )(x)
        if self.kind == "none":
            return x
        raise ValueError(f"norm={self.kind!r} is not one of {NORMS}")


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, plus a projection of the time embedding, then
    GroupNorm-SiLU-dropout-conv (zero-initialised); a 1x1 projection on the skip path when the
    width changes."""

    features: int
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, emb: jax.Array, deterministic: bool = True) -> jax.Array:
        in_features = x.shape[-1]
        h = nn.silu(group_norm(in_features, self.dtype)(x))
        h = conv(self.features, self.dtype)(h)
        proj = nn.Dense(self.features, dtype=self.dtype, param_dtype=jnp.float32, name="emb_proj")
        h = h + proj(nn.silu(emb))[:, None, None, :]
        h = nn.silu(group_norm(self.features, self.dtype)(h))
        h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
        h = conv(self.features, self.dtype, zero=True)(h)
        if in_features != self.features:
            x = nn.Dense(self.features, dtype=self.dtype, param_dtype=jnp.float32, name="skip")(x)
        return x + h


class Downsample(nn.Module):
    """A stride-2 3x3 convolution that keeps the width: ``[B, H, W, C] -> [B, H/2, W/2, C]``."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return conv(x.shape[-1], self.dtype, stride=2)(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 convolution: ``[B, H, W, C] -> [B, 2H, 2W, C]``."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)  # nearest neighbour, x2
        return conv(x.shape[-1], self.dtype)(x)


def depth_to_space(x: jax.Array, factor: int = 2) -> jax.Array:
    """``[B, H, W, f*f*C] -> [B, f*H, f*W, C]`` (pixel shuffle)."""
    b, h, w, c = x.shape
    c_out = c // (factor * factor)
    x = x.reshape(b, h, w, factor, factor, c_out).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h * factor, w * factor, c_out)


class Block(nn.Module):
    width: int
    heads: int
    mlp_ratio: int = 4
    dtype: Any = jnp.float32

    def setup(self):
        dense = dict(dtype=self.dtype, param_dtype=jnp.float32)
        self.ln1 = nn.LayerNorm(dtype=jnp.float32)
        # No bias on the keys: it adds q . b_k to every logit of a query's row, which the
        # softmax removes, so its gradient is zero up to rounding, and Adam would turn that
        # rounding noise into full-size steps.
        self.query = nn.Dense(self.width, **dense)
        self.key = nn.Dense(self.width, use_bias=False, **dense)
        self.value = nn.Dense(self.width, **dense)
        self.proj = nn.Dense(self.width, **dense)
        self.ln2 = nn.LayerNorm(dtype=jnp.float32)
        self.fc1 = nn.Dense(self.mlp_ratio * self.width, **dense)
        self.fc2 = nn.Dense(self.width, **dense)

    def _qkv(self, x):
        b, t, _ = x.shape
        h = self.ln1(x).astype(self.dtype)
        return [f(h).reshape(b, t, self.heads, -1) for f in (self.query, self.key, self.value)]

    def _rest(self, x, attended):
        b, t = x.shape[:2]
        x = x + self.proj(attended.reshape(b, t, self.width)).astype(jnp.float32)
        h = self.fc1(self.ln2(x).astype(self.dtype))
        return x + self.fc2(nn.gelu(h)).astype(jnp.float32)

    def __call__(self, x, mask):
        q, k, v = self._qkv(x)
        return self._rest(x, attention(q, k, v, mask))

    def step(self, x, cache_k, cache_v, pos):
        """One position ``x [B, 1, W]`` at index ``pos``; ``cache_* [B, T, H, D]`` hold the keys
        and values of positions ``< pos``. Returns ``(y, cache_k, cache_v)`` with ``pos``'s
        written in."""
        q, k, v = self._qkv(x)
        cache_k = jax.lax.dynamic_update_slice_in_dim(cache_k, k.astype(cache_k.dtype), pos, 1)
        cache_v = jax.lax.dynamic_update_slice_in_dim(cache_v, v.astype(cache_v.dtype), pos, 1)
        mask = (jnp.arange(cache_k.shape[1]) <= pos)[None, :]
        return self._rest(x, attention(q, cache_k, cache_v, mask)), cache_k, cache_v


class CrossAttention(nn.Module):
    """``x + out(attention(q(norm(x)), k(context), v(context)))`` over the unmasked context."""

    num_heads: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array, mask: jax.Array) -> jax.Array:
        b, hgt, wid, c = x.shape
        if c % self.num_heads:
            raise ValueError(f"cross-attention: {c} channels do not split into {self.num_heads}")
        heads, head = self.num_heads, c // self.num_heads
        dense = lambda name, **kw: nn.Dense(
            c, dtype=self.dtype, param_dtype=jnp.float32, name=name, **kw
        )
        h = group_norm(c, self.dtype)(x).reshape(b, hgt * wid, c)
        q = dense("query")(h).reshape(b, hgt * wid, heads, head)
        ctx = context.astype(self.dtype)
        k = dense("key", use_bias=False)(ctx).reshape(b, -1, heads, head)
        v = dense("value")(ctx).reshape(b, -1, heads, head)
        out = attention(q, k, v, mask[:, None, None, :]).reshape(b, hgt * wid, c)
        out = dense("out", kernel_init=nn.initializers.zeros)(out)
        return x + out.reshape(b, hgt, wid, c).astype(x.dtype)
