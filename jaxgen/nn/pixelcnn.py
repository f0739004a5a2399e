"""A gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
Decoders") over a grid of discrete codes, e.g. the prior of a VQ-VAE.

The model factorises ``p(codes) = prod_p p(code_p | codes before p)`` in raster order (row by
row, left to right within a row). ``logits[:, i, j]`` is a function of the codes in rows
``< i`` and of those in row ``i`` at columns ``< j`` only (and of the label, when
class-conditional), so one forward pass gives every conditional at once for training.

Two stacks keep the receptive field free of the *blind spot* of a single masked convolution
(the region up and to the right of the current position, which a stack of masked 3x3 kernels
never reaches):

- the **vertical stack** convolves with a ``(k//2 + 1) x k`` kernel over rows ``i - k//2 .. i``
  and columns ``j - k//2 .. j + k//2`` (top padding only), so its features at row ``i`` see
  every column of the rows ``<= i`` within reach, to the right as well as to the left. It never
  reads the horizontal stack;
- the **horizontal stack** convolves with a ``1 x (k//2 + 1)`` kernel over columns
  ``j - k//2 .. j`` of its own row. The first layer reads its input shifted right by one column
  (mask *A*: the current code is excluded); later layers include the current column (mask *B*:
  they only hold information about earlier codes already);
- in every layer the vertical stack's pre-activation, **shifted down by one row**, goes through
  a 1x1 convolution into the horizontal stack's pre-activation. After the shift, position
  ``(i, j)`` only gets vertical features of rows ``< i``, which may come from any column.

Each gated unit computes ``tanh(a) * sigmoid(b)`` from a ``2 * channels`` pre-activation split in
halves. With ``num_classes > 0`` a learned per-class bias (one per layer and stack) is added to
the pre-activations before the gates. The horizontal stack's gated output goes through a 1x1
convolution and, after the first layer, is added to its input (residual connection).

The output head is ReLU, 1x1 convolution to ``head_channels``, ReLU, 1x1 convolution to
``num_codes`` logits, applied to the horizontal stack's last features.

All shifts are explicit (``jnp.pad`` plus slicing) and all convolutions ``VALID`` on padded
inputs, so no kernel weight needs a mask: no path leads from a code to a logit at or before its
position. (The convolution algorithm may still mix a tile's inputs and cancel them out again, so
in floating point a later code can move an earlier logit by a rounding error, ~1e-7.)

Mixed precision: parameters are float32; ``dtype`` is the compute dtype; logits are float32.

Shapes: ``codes: [B, H, W]`` int in ``[0, num_codes)``, ``labels: [B]`` int or ``None``;
logits ``[B, H, W, num_codes]``.

:func:`sample_codes` draws code grids from any such model, one position at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def _shift_down(x: jax.Array) -> jax.Array:
    """Row ``i`` of the result is row ``i - 1`` of ``x``; row 0 is zeros. ``x: [B, H, W, C]``."""
    return jnp.pad(x, ((0, 0), (1, 0), (0, 0), (0, 0)))[:, :-1]


def _shift_right(x: jax.Array) -> jax.Array:
    """Column ``j`` of the result is column ``j - 1`` of ``x``; column 0 is zeros."""
    return jnp.pad(x, ((0, 0), (0, 0), (1, 0), (0, 0)))[:, :, :-1]


def _gate(x: jax.Array) -> jax.Array:
    """``tanh(a) * sigmoid(b)`` for ``a, b`` the two halves of the last axis."""
    a, b = jnp.split(x, 2, axis=-1)
    return jnp.tanh(a) * jax.nn.sigmoid(b)


def _conv(features: int, kernel: tuple[int, int], padding, dtype: Any, name: str) -> nn.Conv:
    return nn.Conv(
        features, kernel, padding=padding, dtype=dtype, param_dtype=jnp.float32, name=name
    )


class GatedLayer(nn.Module):
    """One layer of both stacks; ``first`` selects mask A (the horizontal stack excludes the
    current position and has no residual connection). Returns the new ``(v, h)``.

    ``class_bias`` (``[B, 4 * channels]`` or ``None``) holds the per-class biases of the two
    stacks' pre-activations, vertical then horizontal.
    """

    channels: int
    kernel_size: int
    first: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, v: jax.Array, h: jax.Array, class_bias: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        r = self.kernel_size // 2
        width = 2 * self.channels
        v_pre = _conv(width, (r + 1, self.kernel_size), ((r, 0), (r, r)), self.dtype, "v_conv")(v)
        h_in = _shift_right(h) if self.first else h
        h_pre = _conv(width, (1, r + 1), ((0, 0), (r, 0)), self.dtype, "h_conv")(h_in)
        h_pre = h_pre + _conv(width, (1, 1), "VALID", self.dtype, "v_to_h")(_shift_down(v_pre))
        if class_bias is not None:
            v_bias, h_bias = jnp.split(class_bias.astype(self.dtype), 2, axis=-1)
            v_pre = v_pre + v_bias[:, None, None, :]
            h_pre = h_pre + h_bias[:, None, None, :]
        v_out = _gate(v_pre)
        h_out = _conv(self.channels, (1, 1), "VALID", self.dtype, "h_out")(_gate(h_pre))
        if not self.first:
            h_out = h + h_out
        return v_out, h_out


class GatedPixelCNN(nn.Module):
    """Autoregressive logits over a ``[B, H, W]`` grid of codes; see the module docstring.

    ``num_layers`` counts the mask-B gated layers after the first (mask-A) gated layer. With
    ``kernel_size = k`` each of the ``num_layers + 1`` layers widens the receptive field by
    ``k // 2`` rows and columns, so every earlier position is reached once
    ``(num_layers + 1) * (k // 2) >= max(H, W) - 1`` (the reach to the upper right is the
    tightest).

    ``num_classes = 0``: unconditional, ``labels`` must be ``None``. Otherwise ``labels: [B]``
    in ``0 .. num_classes - 1`` is required.
    """

    num_codes: int
    channels: int = 64
    num_layers: int = 8
    kernel_size: int = 3
    num_classes: int = 0
    head_channels: int = 128
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, codes: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"GatedPixelCNN: kernel_size must be odd, got {self.kernel_size}")
        if codes.ndim != 3:
            raise ValueError(f"GatedPixelCNN: codes must be [B, H, W], got shape {codes.shape}")
        if self.num_classes > 0:
            if labels is None:
                raise ValueError(
                    f"GatedPixelCNN: labels are required (num_classes={self.num_classes})"
                )
            labels = jnp.asarray(labels, jnp.int32)
            if labels.shape != codes.shape[:1]:
                raise ValueError(
                    f"GatedPixelCNN: labels must be [B] = {codes.shape[:1]}, got {labels.shape}"
                )
        elif labels is not None:
            raise ValueError("GatedPixelCNN: labels were given to an unconditional model")

        dt = self.dtype
        x = nn.Embed(
            self.num_codes, self.channels, dtype=dt, param_dtype=jnp.float32, name="code_emb"
        )(jnp.asarray(codes, jnp.int32))

        v, h = x, x
        for layer in range(self.num_layers + 1):
            class_bias = None
            if self.num_classes > 0:
                class_bias = nn.Embed(
                    self.num_classes,
                    4 * self.channels,
                    dtype=dt,
                    param_dtype=jnp.float32,
                    name=f"class_bias_{layer}",
                )(labels)
            v, h = GatedLayer(
                self.channels, self.kernel_size, first=layer == 0, dtype=dt, name=f"layer_{layer}"
            )(v, h, class_bias)

        dense = lambda features, name: nn.Dense(
            features, dtype=dt, param_dtype=jnp.float32, name=name
        )  # a 1x1 convolution
        out = dense(self.head_channels, "head_hidden")(nn.relu(h))
        out = dense(self.num_codes, "head_out")(nn.relu(out))
        return out.astype(jnp.float32)


def sample_codes(
    logits_fn: Callable[[jax.Array], jax.Array],
    shape: Sequence[int],
    rng: jax.Array,
    temperature: float = 1.0,
) -> jax.Array:
    """Draw code grids ``[B, H, W]`` (int32) in raster order from an autoregressive model.

    ``logits_fn(codes: [B, H, W] int32) -> [B, H, W, K]`` must be causal in raster order (e.g.
    ``lambda c: model.apply(params, c, labels)``, closing over the labels for a conditional
    model). ``shape = (B, H, W)``.

    One ``jax.lax.scan`` over the ``H * W`` positions, carrying the grid (zeros at the start):
    step ``p`` runs ``logits_fn`` on the grid so far, takes the logits at ``p``, divides them by
    ``temperature`` and draws the code at ``p`` with ``jax.random.categorical`` under the key
    ``fold_in(rng, p)``. Each step costs a full forward pass (no caching); jit the caller.

    ``temperature`` must be > 0; a Python (or NumPy) number is checked here.
    """
    if isinstance(temperature, int | float | np.number) and not temperature > 0:
        raise ValueError(f"sample_codes: temperature must be > 0, got {temperature}")
    if len(shape) != 3:
        raise ValueError(f"sample_codes: shape must be (B, H, W), got {tuple(shape)}")
    b, hgt, wid = (int(s) for s in shape)
    n = hgt * wid

    def step(grid: jax.Array, p: jax.Array) -> tuple[jax.Array, None]:
        logits = logits_fn(grid)
        if logits.ndim != 4 or logits.shape[:3] != (b, hgt, wid):
            raise ValueError(
                f"sample_codes: logits_fn must return [B, H, W, K] with (B, H, W) = {(b, hgt, wid)}"
                f", got {logits.shape}"
            )
        logits_p = logits.reshape(b, n, logits.shape[-1])[:, p].astype(jnp.float32)
        key = jax.random.fold_in(rng, p)
        code = jax.random.categorical(key, logits_p / temperature, axis=-1).astype(jnp.int32)
        grid = grid.reshape(b, n).at[:, p].set(code).reshape(b, hgt, wid)
        return grid, None

    grid, _ = jax.lax.scan(step, jnp.zeros((b, hgt, wid), jnp.int32), jnp.arange(n))
    return grid
