"""LPIPS, the learned perceptual distance of Zhang et al. (2018), on a VGG16 backbone.

Two images are compared through the activations of a frozen ImageNet VGG16, not through their
pixels. Both images (in ``[-1, 1]``) first pass a fixed per-channel affine map
``(x - shift) / scale`` (shift ``(-0.030, -0.088, -0.188)``, scale ``(0.458, 0.448, 0.450)``)
that puts them in the statistics the backbone was trained on. Five feature maps are read off
the network, after the ReLUs of conv1_2, conv2_2, conv3_3, conv4_3 and conv5_3 (3x3 convolutions
with padding 1; a 2x2 max-pool of stride 2 between the stages). At each pixel of each map the
channel vector is scaled to unit length, ``f / (||f||_2 + 1e-10)``, so the distance compares the
*direction* of the responses, not their magnitude. The squared difference of the two unit
vectors is weighted per channel by the stage's learned head (a bias-free 1x1 convolution to one
output whose weights are non-negative, so every term is a non-negative distance), averaged over
the pixels of the map, and the five stage values are summed::

    d(x, y) = sum_l mean_{h,w} sum_c w_lc (u_lhwc(x) - u_lhwc(y))^2,   u = f / (||f|| + eps)

one number per image pair, zero for identical images. This module is the pure distance; its
parameters, ``{"convs": [(kernel, bias)] * 13, "heads": [w] * 5}`` with kernels HWIO and each
head a ``[C]`` vector, are read from disk by ``jaxgen.weights.lpips.load_vgg16``.

Small images. Four 2x2 pools shrink a 28x28 image to 14, 7, 3 and finally 1x1 at conv5_3, so the
deepest stage sees a single position and no spatial structure at all. ``resize=32`` gives it 2x2
and ``resize=64`` gives 4x4, at about ``(size / 28)^2`` times the compute (1.3x and 5.2x).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

# Output channels of the 13 convolutions of VGG16 (configuration D).
VGG16_CHANNELS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
# Indices of the convolutions whose ReLU output is a tapped feature map: conv1_2, conv2_2,
# conv3_3, conv4_3, conv5_3. A 2x2 max-pool follows each tap except the last.
TAPS = (1, 3, 6, 9, 12)
HEAD_CHANNELS = tuple(VGG16_CHANNELS[i] for i in TAPS)
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10


def resized_shape(shape, resize: int) -> tuple[int, int]:
    """``(H, W)`` scaled so that the shorter side is ``resize``, keeping the aspect ratio
    (28x28 -> 32x32; a 28x56 pair of digits -> 32x64)."""
    h, w = shape
    factor = resize / min(h, w)
    return round(h * factor), round(w * factor)


def _network_input(x: jax.Array, resize: int | None) -> jax.Array:
    """``[B, H, W, C]`` in ``[0, 1]``, ``C`` in ``(1, 3)`` -> the VGG16 input ``[B, H', W', 3]``
    (``resize``: the shorter side brought to ``resize``, ``resized_shape``)."""
    chex.assert_rank(x, 4)
    if x.shape[-1] not in (1, 3):
        raise ValueError(f"images have {x.shape[-1]} channels; expected 1 or 3")
    x = jnp.asarray(x, jnp.float32)
    if resize is not None:
        h, w = resized_shape(x.shape[1:3], resize)
        x = jax.image.resize(x, (x.shape[0], h, w, x.shape[-1]), "bilinear")
    x = jnp.broadcast_to(x, (*x.shape[:3], 3))  # grey as R = G = B
    x = 2.0 * x - 1.0
    return (x - jnp.asarray(SHIFT)) / jnp.asarray(SCALE)


def _conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """A 3x3 convolution, stride 1, zero padding 1: ``[B, H, W, I]``, ``[3, 3, I, O]`` (HWIO)."""
    _, h, w, c = x.shape
    if h * w <= 9:
        # XLA's CPU convolution is pathologically slow on tiny maps, and conv5 of a 32x32 image
        # is 2x2: one matmul over the nine shifted copies of the map instead, the same numbers
        # (docs/notes/cpu.md#convolutions-on-tiny-maps-a-matmul).
        padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        shifted = [padded[:, i : i + h, j : j + w] for i in range(3) for j in range(3)]
        return jnp.concatenate(shifted, axis=-1) @ kernel.reshape(9 * c, -1)
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _conv_features(params: dict, x: jax.Array) -> list[jax.Array]:
    features = []
    for i, (kernel, bias) in enumerate(params["convs"]):
        x = jax.nn.relu(_conv3x3(x, kernel) + bias)
        if i in TAPS:
            features.append(x)
            if i != TAPS[-1]:
                x = jax.lax.reduce_window(
                    x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID"
                )
    return features


def vgg16_features(params: dict, x: jax.Array, *, resize: int | None = None) -> list[jax.Array]:
    """The five tapped VGG16 feature maps (after the ReLUs of conv1_2 ... conv5_3) of images
    ``x: [B, H, W, C]`` in ``[0, 1]`` (``C`` = 1 or 3), after the LPIPS input scaling and an
    optional bilinear ``resize`` to ``resize x resize``. Shapes ``[B, H / 2^l, W / 2^l, C_l]``
    (floored). ``params`` are treated as constants."""
    params = jax.lax.stop_gradient(params)
    return _conv_features(params, _network_input(x, resize))


def _unit(f: jax.Array) -> jax.Array:
    """``f / (||f|| + eps)`` along channels. Where every channel is 0, ``sqrt``'s infinite slope
    gives a NaN cotangent, but ``f`` is a ReLU output there and ``jax.nn.relu`` *selects* a zero
    gradient for inactive units (it does not multiply), so no NaN reaches the images."""
    return f / (jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True)) + EPS)


def lpips(params: dict, x: jax.Array, y: jax.Array, *, resize: int | None = None) -> jax.Array:
    """LPIPS distance ``[B]`` between images ``x`` and ``y``: ``[B, H, W, C]`` in ``[0, 1]``,
    ``C`` = 1 or 3 (grey is tiled to RGB; ``x`` and ``y`` may differ in ``C``). ``resize``:
    bilinear resizing first, of the shorter side to ``resize`` (the aspect ratio kept; see
    the module docstring for why 28x28 images want it). Differentiable in ``x`` and ``y``;
    ``params`` (from ``jaxgen.weights.lpips.load_vgg16``) are constants. Pass them as an
    argument of the jitted function, not as a closure, so they are
    not baked into the compiled program."""
    chex.assert_rank([x, y], 4)
    chex.assert_equal_shape_prefix([x, y], 3)
    params = jax.lax.stop_gradient(params)
    both = jnp.concatenate([_network_input(x, resize), _network_input(y, resize)])
    n = x.shape[0]
    total = jnp.zeros((n,), jnp.float32)
    for f, w in zip(_conv_features(params, both), params["heads"], strict=True):
        d = (_unit(f[:n]) - _unit(f[n:])) ** 2
        total = total + jnp.mean(jnp.einsum("bhwc,c->bhw", d, w), axis=(1, 2))
    return total
