"""The VQ-GAN's networks (Esser et al. 2021): a residual conv encoder and decoder with GroupNorm
and self-attention at the lowest resolution, and a PatchGAN discriminator (Isola et al. 2017).

Shapes: images ``x: [B, H, W, C]`` in ``[-1, 1]``; latents ``z: [B, H / f, W / f, D]`` with the
downsampling factor ``f = 2^(len(channel_mult) - 1)``. As in the VQ-VAE, the codebook is not part
of these modules (the family keeps it), and quantisation happens between ``encode`` and
``decode``.

Encoder: a 3x3 stem, then one level per ``channel_mult`` entry (``num_res_blocks`` residual
blocks of width ``channels * mult``, then a stride-2 3x3 convolution except after the last
level), a middle of residual block - attention - residual block, GroupNorm-SiLU and a 3x3
convolution to ``D``. The decoder mirrors it (nearest-neighbour upsampling then a 3x3
convolution) and ends in a separate 3x3 convolution, ``conv_out`` (its own entry in the
parameter tree): the "last layer" on which the family measures the adaptive adversarial weight.
Decoder outputs are unbounded; the losses compare them with images on ``[-1, 1]``.

PatchGAN: a 4x4 stride-2 convolution (no norm), ``n_layers - 1`` more 4x4 stride-2 convolutions
with norm, one 4x4 stride-1 convolution with norm, then a 4x4 stride-1 convolution to one logit
per patch; widths ``channels * min(2^i, 8)``, LeakyReLU 0.2, padding 1 everywhere, so each
stride-2 layer halves the side (rounding down) and each stride-1 layer takes one off: a 28x28
image gives 14, 7, 6 and a 5x5 map of logits with ``n_layers = 2``, and 14, 7, 3, 2, 1x1 with 3.
Initialised as taming-transformers' PatchGAN: kernels ``N(0, 0.02)``, norm scales
``N(1, 0.02)``, biases 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.nn.layers import Norm, attention, conv, group_norm, num_groups, scale_init_near_one

PATCH_NORMS = ("batch", "group", "none")
PATCH_INIT_STD = 0.02  # taming-transformers' PatchGAN: kernels N(0, s), norm scales N(1, s)


def _conv(features: int, stride: int = 1):
    """A 3x3 convolution in float32 (``jaxgen.nn.layers.conv``)."""
    return conv(features, jnp.float32, stride=stride)


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-3x3 conv, twice, on a residual path (a 1x1 projection on the skip path when
    the width changes)."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = _conv(self.features)(nn.silu(group_norm(x.shape[-1], jnp.float32)(x)))
        h = _conv(self.features)(nn.silu(group_norm(self.features, jnp.float32)(h)))
        if x.shape[-1] != self.features:
            x = nn.Dense(self.features, name="skip")(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the ``H * W`` positions, pre-GroupNorm, residual."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        y = group_norm(c, jnp.float32)(x).reshape(b, h * w, c)
        # No bias on the keys: it adds the same q.b to every logit of a query, which the
        # softmax removes, so it would only ever get rounding noise as its gradient (and Adam
        # turns noise into full-size steps).
        q = nn.Dense(c, name="q")(y)
        k = nn.Dense(c, use_bias=False, name="k")(y)
        v = nn.Dense(c, name="v")(y)
        attended = attention(q[:, :, None], k[:, :, None], v[:, :, None])[:, :, 0]  # one head
        out = nn.Dense(c, name="proj")(attended)
        return x + out.reshape(b, h, w, c)


class Encoder(nn.Module):
    latent_dim: int
    channels: int = 64
    channel_mult: Sequence[int] = (1, 2, 2)
    num_res_blocks: int = 1
    attention: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = _conv(self.channels)(x)
        for level, mult in enumerate(self.channel_mult):
            for _ in range(self.num_res_blocks):
                h = ResnetBlock(self.channels * mult)(h)
            if level < len(self.channel_mult) - 1:
                h = _conv(h.shape[-1], stride=2)(h)
        width = self.channels * self.channel_mult[-1]
        h = ResnetBlock(width)(h)
        if self.attention:
            h = AttnBlock()(h)
        h = ResnetBlock(width)(h)
        return _conv(self.latent_dim)(nn.silu(group_norm(width, jnp.float32)(h)))


class Decoder(nn.Module):
    """Everything of the decoder but its last convolution (which ``VQGANAutoencoder`` keeps
    apart as ``conv_out``): ``[B, h, w, D] -> [B, H, W, channels * channel_mult[0]]``."""

    channels: int = 64
    channel_mult: Sequence[int] = (1, 2, 2)
    num_res_blocks: int = 1
    attention: bool = True

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        width = self.channels * self.channel_mult[-1]
        h = _conv(width)(z)
        h = ResnetBlock(width)(h)
        if self.attention:
            h = AttnBlock()(h)
        h = ResnetBlock(width)(h)
        for level, mult in reversed(list(enumerate(self.channel_mult))):
            for _ in range(self.num_res_blocks):
                h = ResnetBlock(self.channels * mult)(h)
            if level > 0:
                h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
                h = _conv(h.shape[-1])(h)
        return nn.silu(group_norm(h.shape[-1], jnp.float32)(h))


class VQGANAutoencoder(nn.Module):
    """Encoder, decoder and the decoder's last convolution under one parameter tree
    (``encoder``, ``decoder``, ``conv_out``)."""

    image_channels: int
    latent_dim: int = 64
    channels: int = 64
    channel_mult: Sequence[int] = (1, 2, 2)
    num_res_blocks: int = 1
    attention: bool = True

    def setup(self):
        args = (self.channels, self.channel_mult, self.num_res_blocks, self.attention)
        self.encoder = Encoder(self.latent_dim, *args)
        self.decoder = Decoder(*args)
        self.conv_out = _conv(self.image_channels)

    def encode(self, x: jax.Array) -> jax.Array:
        return self.encoder(x)

    def decode_body(self, z_q: jax.Array) -> jax.Array:
        """The decoder up to (not including) ``conv_out``."""
        return self.decoder(z_q)

    def decode(self, z_q: jax.Array) -> jax.Array:
        return self.conv_out(self.decoder(z_q))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.decode(self.encode(x))


def apply_conv_out(conv_params: dict, h: jax.Array) -> jax.Array:
    """The decoder's last layer as a function of its own parameters (``params['conv_out']``)."""
    return _conv(conv_params["kernel"].shape[-1]).apply({"params": conv_params}, h)


class PatchDiscriminator(nn.Module):
    """PatchGAN: ``[B, H, W, C] -> [B, h, w]`` logits, one per overlapping patch."""

    channels: int = 64
    n_layers: int = 2
    norm: str = "batch"

    def _norm(self, x):
        c = x.shape[-1]
        if self.norm == "group":
            scale_init = scale_init_near_one(PATCH_INIT_STD)
            return nn.GroupNorm(
                num_groups(c), dtype=jnp.float32, param_dtype=jnp.float32, scale_init=scale_init
            )(x)
        if self.norm == "batch":
            return Norm("batch", keep_running=False, init_std=PATCH_INIT_STD)(x)
        return x

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        pad = ((1, 1), (1, 1))
        kernel_init = nn.initializers.normal(PATCH_INIT_STD)
        h = nn.Conv(self.channels, (4, 4), (2, 2), pad, kernel_init=kernel_init)(x)
        h = nn.leaky_relu(h, 0.2)
        for i in range(1, self.n_layers + 1):
            width = self.channels * min(2**i, 8)
            stride = 2 if i < self.n_layers else 1
            h = nn.Conv(
                width,
                (4, 4),
                (stride, stride),
                pad,
                use_bias=self.norm == "none",
                kernel_init=kernel_init,
            )(h)
            h = nn.leaky_relu(self._norm(h), 0.2)
        return nn.Conv(1, (4, 4), (1, 1), pad, kernel_init=kernel_init)(h)[..., 0]
