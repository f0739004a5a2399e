"""Encoders and decoders for the VAE: a convolutional pair and an MLP pair.

Shapes: images ``x: [B, H, W, C]`` in ``[0, 1]``; latents ``z: [B, D]``.
The encoder returns ``(mean, logvar)`` of a diagonal Gaussian ``q(z|x)``; the decoder returns
one output per pixel (Bernoulli logits or Gaussian means, as the likelihood needs).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.nn.layers import depth_to_space

__all__ = [
    "VAE",
    "ConvDecoder",
    "ConvEncoder",
    "MLPDecoder",
    "MLPEncoder",
    "depth_to_space",
]


class ConvEncoder(nn.Module):
    """Strided 4x4 convolutions (each halves H and W), then a dense head to ``2 * latent_dim``."""

    latent_dim: int
    channels: Sequence[int] = (32, 64)
    hidden: int = 256

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = 2.0 * x - 1.0
        for c in self.channels:
            h = nn.swish(nn.Conv(c, (4, 4), strides=(2, 2), padding="SAME")(h))
        h = h.reshape(h.shape[0], -1)
        h = nn.swish(nn.Dense(self.hidden)(h))
        out = nn.Dense(2 * self.latent_dim)(h)
        mean, logvar = jnp.split(out, 2, axis=-1)
        return mean, logvar


class ConvDecoder(nn.Module):
    """Dense to a ``H / 2^n`` feature map, then ``n`` sub-pixel upsamplings back to ``H``.

    Each upsampling is a 3x3 convolution to ``4 * c`` channels and a pixel shuffle: the same
    function class as a stride-2 transposed convolution, and faster on XLA's CPU backend,
    whose transposed convolutions are slow (docs/notes/cpu.md, "Transposed convolutions").
    """

    image_shape: Sequence[int]
    channels: Sequence[int] = (32, 64)
    hidden: int = 256

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        height, width, out_channels = self.image_shape
        factor = 2 ** len(self.channels)
        h0, w0 = height // factor, width // factor
        h = nn.swish(nn.Dense(self.hidden)(z))
        h = nn.swish(nn.Dense(h0 * w0 * self.channels[-1])(h))
        h = h.reshape(z.shape[0], h0, w0, self.channels[-1])
        for c in reversed(self.channels):
            h = nn.swish(depth_to_space(nn.Conv(4 * c, (3, 3), padding="SAME")(h)))
        return nn.Conv(out_channels, (3, 3), padding="SAME")(h)


class MLPEncoder(nn.Module):
    latent_dim: int
    hidden: Sequence[int] = (512, 512)

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = 2.0 * x.reshape(x.shape[0], -1) - 1.0
        for width in self.hidden:
            h = nn.swish(nn.Dense(width)(h))
        out = nn.Dense(2 * self.latent_dim)(h)
        mean, logvar = jnp.split(out, 2, axis=-1)
        return mean, logvar


class MLPDecoder(nn.Module):
    image_shape: Sequence[int]
    hidden: Sequence[int] = (512, 512)

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        h = z
        for width in reversed(self.hidden):
            h = nn.swish(nn.Dense(width)(h))
        size = 1
        for s in self.image_shape:
            size *= s
        return nn.Dense(size)(h).reshape(z.shape[0], *self.image_shape)


class VAE(nn.Module):
    """Encoder + reparameterised sample + decoder.

    ``kind`` picks the conv or MLP pair. A learned per-channel ``log_scale`` is kept for
    Gaussian likelihoods (unused, and so receiving zero gradient, under a Bernoulli likelihood).
    """

    image_shape: Sequence[int]
    latent_dim: int = 32
    kind: str = "conv"
    channels: Sequence[int] = (32, 64)
    hidden: Sequence[int] = (512, 512)

    def setup(self):
        if self.kind == "conv":
            self.encoder = ConvEncoder(self.latent_dim, self.channels, self.hidden[0])
            self.decoder = ConvDecoder(self.image_shape, self.channels, self.hidden[0])
        else:
            self.encoder = MLPEncoder(self.latent_dim, self.hidden)
            self.decoder = MLPDecoder(self.image_shape, self.hidden)
        self.log_scale = self.param("log_scale", nn.initializers.zeros, (self.image_shape[-1],))

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.encoder(x)

    def decode(self, z: jax.Array) -> jax.Array:
        return self.decoder(z)

    def __call__(self, x: jax.Array, rng: jax.Array):
        """Returns ``(decoder_output, mean, logvar, z)`` with ``z = mean + sigma * eps``."""
        mean, logvar = self.encode(x)
        eps = jax.random.normal(rng, mean.shape, mean.dtype)
        z = mean + jnp.exp(0.5 * logvar) * eps
        return self.decode(z), mean, logvar, z
