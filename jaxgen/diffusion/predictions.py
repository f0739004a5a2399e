"""Conversions between what a diffusion model predicts: noise ``eps``, data ``x0`` or
velocity ``v``, for ``x_t = alpha x0 + sigma eps`` with ``alpha^2 + sigma^2 = 1``.

``v = alpha eps - sigma x0`` (Salimans & Ho 2022), so ``x0 = alpha x - sigma v`` and
``eps = sigma x + alpha v``. All conversions compute in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxgen.checks import same_shape

PREDICTIONS = ("eps", "x0", "v")


def _check_per_example(fn: str, name: str, a, x_name: str, x) -> None:
    """``a`` must be a scalar or one value per example of ``x: [B, ...]`` (``[B]``, or more
    generally a leading part of ``x.shape``) so that it broadcasts over the remaining axes."""
    a_shape, x_shape = jnp.shape(a), jnp.shape(x)
    if a_shape != x_shape[: len(a_shape)] or len(a_shape) > len(x_shape):
        batch = f"[{x_shape[0]}]" if x_shape else "()"
        raise ValueError(
            f"{fn}: {name} must be a scalar or {batch} (one per example of {x_name} "
            f"{x_shape}), got {name} {a_shape}"
        )


def _check_conversion(fn: str, prediction, x, alpha, sigma) -> None:
    same_shape(fn, prediction=prediction, x=x)
    _check_per_example(fn, "alpha", alpha, "x", x)
    _check_per_example(fn, "sigma", sigma, "x", x)


def _bcast(a, x):
    """Per-example (or scalar) ``a`` shaped to broadcast against ``x: [B, ...]``."""
    a = jnp.asarray(a, jnp.float32)
    return a.reshape(a.shape + (1,) * (x.ndim - a.ndim)) if a.ndim else a


def to_eps(prediction, x, alpha, sigma, kind: str) -> jax.Array:
    _check_conversion("to_eps", prediction, x, alpha, sigma)
    p, x = prediction.astype(jnp.float32), x.astype(jnp.float32)
    alpha, sigma = _bcast(alpha, x), _bcast(sigma, x)
    if kind == "eps":
        return p
    if kind == "x0":
        return (x - alpha * p) / sigma
    if kind == "v":
        return sigma * x + alpha * p
    raise ValueError(f"prediction type {kind!r} is not one of {PREDICTIONS}")


def to_x0(prediction, x, alpha, sigma, kind: str) -> jax.Array:
    _check_conversion("to_x0", prediction, x, alpha, sigma)
    p, x = prediction.astype(jnp.float32), x.astype(jnp.float32)
    alpha, sigma = _bcast(alpha, x), _bcast(sigma, x)
    if kind == "eps":
        return (x - sigma * p) / alpha
    if kind == "x0":
        return p
    if kind == "v":
        return alpha * x - sigma * p
    raise ValueError(f"prediction type {kind!r} is not one of {PREDICTIONS}")


def to_v(prediction, x, alpha, sigma, kind: str) -> jax.Array:
    _check_conversion("to_v", prediction, x, alpha, sigma)
    eps = to_eps(prediction, x, alpha, sigma, kind)
    x0 = to_x0(prediction, x, alpha, sigma, kind)
    return _bcast(alpha, x) * eps - _bcast(sigma, x) * x0


def dynamic_threshold(x0: jax.Array, ratio: float = 0.995, max_value: float = 1.0) -> jax.Array:
    """Imagen's dynamic thresholding, per sample: ``s`` is the ``ratio`` quantile of ``|x0|``
    (``jnp.quantile``, q in [0, 1]), clamped to ``[1, max_value]``; returns
    ``clip(x0, -s, s) / s``. In float32."""
    if jnp.ndim(x0) < 1:
        raise ValueError(f"dynamic_threshold: x0 must be [B, ...], got shape {jnp.shape(x0)}")
    x0 = x0.astype(jnp.float32)
    flat = jnp.abs(x0.reshape(x0.shape[0], -1))
    s = jnp.clip(jnp.quantile(flat, ratio, axis=1), 1.0, max_value)
    s = _bcast(s, x0)
    return jnp.clip(x0, -s, s) / s
