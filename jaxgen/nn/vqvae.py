"""Convolutional encoder and decoder of the VQ-VAE (van den Oord et al. 2017).

Shapes: images ``x: [B, H, W, C]`` in ``[0, 1]``; latents ``z: [B, H / 2^n, W / 2^n, D]`` with
``n = len(channels)`` stride-2 stages. The codebook is not part of these modules: it is a plain
``[K, D]`` array that the family keeps in its parameters (learned by the VQ loss) or in an EMA
state (``jaxgen.quantize.EmaCodebook``), and quantisation happens between ``encode`` and
``decode`` (``jaxgen.quantize.quantize``).

Both halves are conv stacks with pre-activation residual blocks (ReLU-3x3-ReLU-1x1, as in the
paper); the decoder upsamples with a 3x3 convolution to ``4c`` channels and a pixel shuffle
(the function class of a stride-2 transposed convolution, several times faster on XLA's CPU
backend: docs/notes/cpu.md#transposed-convolutions-pixel-shuffle-instead).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from jaxgen.nn.layers import depth_to_space


class Residual(nn.Module):
    """``x + conv1x1(relu(conv3x3(relu(x))))`` with a ``hidden``-wide bottleneck."""

    hidden: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.Conv(self.hidden, (3, 3), padding="SAME")(nn.relu(x))
        h = nn.Conv(x.shape[-1], (1, 1))(nn.relu(h))
        return x + h


class Encoder(nn.Module):
    """A 3x3 stem, one stride-2 4x4 convolution per ``channels`` entry, residual blocks, then a
    1x1 projection to ``latent_dim``: ``[B, H, W, C] -> [B, H / 2^n, W / 2^n, D]``."""

    latent_dim: int
    channels: Sequence[int] = (32, 64)
    num_res_blocks: int = 2
    res_hidden: int = 32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.Conv(self.channels[0], (3, 3), padding="SAME")(2.0 * x - 1.0)
        for c in self.channels:
            h = nn.Conv(c, (4, 4), strides=(2, 2), padding="SAME")(nn.relu(h))
        for _ in range(self.num_res_blocks):
            h = Residual(self.res_hidden)(h)
        return nn.Conv(self.latent_dim, (1, 1))(nn.relu(h))


class Decoder(nn.Module):
    """A 3x3 stem from ``D`` channels, residual blocks, then one pixel-shuffle upsampling per
    ``channels`` entry (in reverse) and a 3x3 convolution to the image's channels. Outputs are
    pixel values on the ``[0, 1]`` scale (unbounded; the loss is squared error)."""

    out_channels: int
    channels: Sequence[int] = (32, 64)
    num_res_blocks: int = 2
    res_hidden: int = 32

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        h = nn.Conv(self.channels[-1], (3, 3), padding="SAME")(z)
        for _ in range(self.num_res_blocks):
            h = Residual(self.res_hidden)(h)
        for c in reversed(self.channels):
            h = depth_to_space(nn.Conv(4 * c, (3, 3), padding="SAME")(nn.relu(h)))
        return nn.Conv(self.out_channels, (3, 3), padding="SAME")(nn.relu(h))


class VQVAE(nn.Module):
    """Encoder and decoder under one parameter tree (``encoder``, ``decoder``).

    ``__call__`` (used by ``init``) runs both with the identity in place of quantisation;
    training uses ``encode`` and ``decode`` with the quantiser between them.
    """

    image_channels: int
    latent_dim: int = 64
    channels: Sequence[int] = (32, 64)
    num_res_blocks: int = 2
    res_hidden: int = 32

    def setup(self):
        args = (self.channels, self.num_res_blocks, self.res_hidden)
        self.encoder = Encoder(self.latent_dim, *args)
        self.decoder = Decoder(self.image_channels, *args)

    def encode(self, x: jax.Array) -> jax.Array:
        return self.encoder(x)

    def decode(self, z_q: jax.Array) -> jax.Array:
        return self.decoder(z_q)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.decode(self.encode(x))
