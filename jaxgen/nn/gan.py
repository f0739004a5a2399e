"""Generators and discriminators of the GAN family: DCGAN-style convolutional pairs for small
images and MLP pairs for low-dimensional data (the 2-D mode-collapse benchmark).

Shapes: a generator maps noise ``z: [B, Z]`` to samples in ``[-1, 1]`` of ``out_shape``
(``(H, W, C)`` images or ``(D,)`` points); a discriminator maps samples to one real score per
example, ``[B]`` (a logit, or a Wasserstein critic's value).

Normalisation (``norm``, :class:`jaxgen.nn.layers.Norm`): ``"batch"``, ``"layer"`` (per example
over H, W and C, as the WGAN-GP paper recommends for its critic) or ``"none"``.

- A batch-normed **generator** keeps running statistics (the ``batch_stats`` collection, which
  the family stores in ``State.extra``): batch statistics while training, the running averages
  when sampling, so a sample does not depend on what else is in its batch.
- A batch-normed **discriminator** always normalises by the statistics of the batch it is given
  (it is only ever used in training) and keeps no running averages; the family calls it on real
  and fake batches separately, as DCGAN does. Such a critic mixes the examples of a batch, so
  the gradient penalties, which need each example's own input gradient, refuse it.

The generator upsamples by a 3x3 convolution to ``4c`` channels and a pixel shuffle (the
function class of DCGAN's stride-2 transposed convolutions, and faster on XLA's CPU backend:
docs/notes/cpu.md#transposed-convolutions-pixel-shuffle-instead).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.nn.layers import Norm, dcgan_init, depth_to_space


class ConvGenerator(nn.Module):
    """Noise -> dense to ``channels[0]`` maps at ``H / 2^n`` -> ``n = len(channels)`` x2
    upsampling stages (norm, ReLU, conv + pixel shuffle), the last of which outputs the image's
    C channels directly (as DCGAN's last transposed convolution does) -> tanh.

    Stage ``i`` ends with ``channels[i + 1]`` channels (the image's C after the last), e.g.
    (128, 64) for 7x7x128 -> 14x14x64 -> 28x28xC."""

    out_shape: Sequence[int]
    channels: Sequence[int] = (128, 64)
    norm: str = "batch"
    init_std: float = 0.02

    @nn.compact
    def __call__(self, z: jax.Array, train: bool = True) -> jax.Array:
        h_img, w_img, c_img = self.out_shape
        n = len(self.channels)
        h0, w0 = h_img // 2**n, w_img // 2**n
        kinit = dcgan_init(self.init_std) if self.init_std else nn.initializers.lecun_normal()

        def norm(x):
            return Norm(self.norm, use_running_average=not train, init_std=self.init_std)(x)

        # A bias just before batch norm has no effect (the norm subtracts it again), so its
        # gradient is pure rounding noise, which Adam would scale up to full-size steps.
        bias = self.norm != "batch"
        x = nn.Dense(h0 * w0 * self.channels[0], kernel_init=kinit, use_bias=bias)(z)
        x = x.reshape(z.shape[0], h0, w0, self.channels[0])
        for i in range(n):
            last = i + 1 == n
            out = c_img if last else self.channels[i + 1]
            x = nn.relu(norm(x))
            x = nn.Conv(4 * out, (3, 3), padding="SAME", kernel_init=kinit, use_bias=bias or last)(
                x
            )
            x = depth_to_space(x, 2)
        return jnp.tanh(x)


class ConvDiscriminator(nn.Module):
    """``len(channels)`` stride-2 4x4 convolutions with LeakyReLU(0.2) (no norm after the
    first, as in DCGAN), then a dense layer to one score: ``[B, H, W, C] -> [B]``."""

    channels: Sequence[int] = (64, 128)
    norm: str = "batch"
    init_std: float = 0.02

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kinit = dcgan_init(self.init_std) if self.init_std else nn.initializers.lecun_normal()
        for i, c in enumerate(self.channels):
            bias = i == 0 or self.norm != "batch"  # no bias just before batch norm
            x = nn.Conv(
                c,
                (4, 4),
                strides=(2, 2),
                padding=((1, 1), (1, 1)),
                kernel_init=kinit,
                use_bias=bias,
            )(x)
            if i > 0:
                x = Norm(self.norm, init_std=self.init_std, keep_running=False)(x)
            x = nn.leaky_relu(x, 0.2)
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(1, kernel_init=kinit)(x)[:, 0]


class MLPGenerator(nn.Module):
    """Noise -> ``hidden`` ReLU layers -> a linear map to ``out_shape``, through tanh when
    ``tanh`` (images in ``[-1, 1]``; 2-D data such as the Gaussian ring and grid live outside)."""

    out_shape: Sequence[int]
    hidden: Sequence[int] = (256, 256, 256)
    norm: str = "none"
    tanh: bool = False

    @nn.compact
    def __call__(self, z: jax.Array, train: bool = True) -> jax.Array:
        x = z
        for width in self.hidden:
            x = nn.Dense(width, use_bias=self.norm != "batch")(x)
            x = nn.relu(Norm(self.norm, use_running_average=not train)(x))
        size = math.prod(self.out_shape)
        x = nn.Dense(size)(x).reshape(z.shape[0], *self.out_shape)
        return jnp.tanh(x) if self.tanh else x


class MLPDiscriminator(nn.Module):
    """Flattened input -> ``hidden`` ReLU layers -> one score: ``[B, ...] -> [B]``."""

    hidden: Sequence[int] = (256, 256, 256)
    norm: str = "none"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        for width in self.hidden:
            x = nn.Dense(width, use_bias=self.norm != "batch")(x)
            x = nn.relu(Norm(self.norm, keep_running=False)(x))
        return nn.Dense(1)(x)[:, 0]
