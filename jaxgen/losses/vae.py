"""Likelihoods, KL terms and bounds for variational autoencoders.

Units and reductions, everywhere in this module:
- everything is in nats (natural log);
- per-example functions sum over every non-batch axis (pixels, channels or latent dims) and
  return shape ``[B]``; callers take the mean over the batch;
- ``bits_per_dim`` converts a per-example NLL in nats to bits per dimension.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr, logsumexp, ndtr

from jaxgen.checks import same_shape

_LOG_2PI = math.log(2.0 * math.pi)


def _sum_except_batch(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1).sum(axis=-1)


def _check_broadcast(fn: str, **arrays) -> tuple[int, ...]:
    """Same rank, and shapes that broadcast (axes of size 1 stretch, e.g. one image ``[1, ...]``
    scored under a batch of decoder outputs). Returns the broadcast shape."""
    shapes = {name: jnp.shape(a) for name, a in arrays.items()}
    try:
        if len({len(shape) for shape in shapes.values()}) > 1:
            raise ValueError
        return jnp.broadcast_shapes(*shapes.values())
    except ValueError:
        raise ValueError(
            f"{fn}: {' and '.join(shapes)} must have the same shape (or broadcast over axes of "
            "size 1), got " + " and ".join(f"{name} {shape}" for name, shape in shapes.items())
        ) from None


def _check_batched(fn: str, name: str, a) -> None:
    if jnp.ndim(a) < 1:
        raise ValueError(f"{fn}: {name} must have a leading batch axis [B, ...], got shape ()")


def _kl_per_dim(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    # expm1(logvar) - logvar >= 0 exactly in floating point; exp(logvar) - 1 - logvar loses
    # everything to cancellation near logvar = 0 and came out slightly negative there.
    return 0.5 * (jnp.expm1(logvar) - logvar + jnp.square(mean))


def gaussian_kl_per_dim(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mean, exp(logvar)) || N(0, 1)) for each latent dimension separately.

    KL = 0.5 * (exp(logvar) + mean^2 - 1 - logvar), elementwise, in nats (computed as
    ``0.5 * (expm1(logvar) - logvar + mean^2)``, which is never negative). ``mean`` and
    ``logvar`` must have the same shape.
    """
    same_shape("gaussian_kl_per_dim", mean=mean, logvar=logvar)
    return _kl_per_dim(mean, logvar)


def gaussian_kl(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """Analytic KL(q(z|x) || N(0, I)) for a diagonal Gaussian q.

    Args:
      mean, logvar: ``[B, D]`` posterior parameters (same shape).
    Returns:
      ``[B]``: summed over the ``D`` latent dimensions, in nats.
    """
    same_shape("gaussian_kl", mean=mean, logvar=logvar)
    _check_batched("gaussian_kl", "mean", mean)
    return _sum_except_batch(_kl_per_dim(mean, logvar))


def kl_with_free_bits(mean: jax.Array, logvar: jax.Array, free_bits: float) -> jax.Array:
    """The KL term with "free bits" (Kingma et al. 2016), a guard against posterior collapse.

    Each latent dimension's KL, averaged over the batch, is clamped from below at
    ``free_bits`` nats, so the optimiser gains nothing by pushing a dimension's KL under it.
    With ``free_bits = 0`` this equals ``gaussian_kl(mean, logvar).mean()``.

    Returns a scalar: sum over dimensions of max(free_bits, batch-mean KL of that dimension).
    """
    same_shape("kl_with_free_bits", mean=mean, logvar=logvar)
    _check_batched("kl_with_free_bits", "mean", mean)
    per_dim = _kl_per_dim(mean, logvar).reshape(mean.shape[0], -1).mean(axis=0)
    return jnp.maximum(per_dim, free_bits).sum()


def diag_gaussian_log_prob(z: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """log N(z; mean, diag(exp(logvar))), summed over the last axis. Broadcasts leading axes."""
    shapes = {"z": jnp.shape(z), "mean": jnp.shape(mean), "logvar": jnp.shape(logvar)}
    try:
        if min(len(shape) for shape in shapes.values()) < 1:
            raise ValueError
        jnp.broadcast_shapes(*shapes.values())
    except ValueError:
        raise ValueError(
            "diag_gaussian_log_prob: z, mean and logvar must be [..., D] and broadcast "
            "against each other, got "
            + ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        ) from None
    return -0.5 * jnp.sum(_LOG_2PI + logvar + jnp.square(z - mean) * jnp.exp(-logvar), axis=-1)


def bernoulli_log_likelihood(x: jax.Array, logits: jax.Array) -> jax.Array:
    """log p(x | logits) for independent Bernoulli pixels.

    Args:
      x: ``[B, ...]`` targets in {0, 1} (binarised data; values in between give the
        cross-entropy, which is not a likelihood).
      logits: ``[B, ...]`` Bernoulli logits, same shape (or broadcasting against ``x`` over
        axes of size 1, e.g. one image ``[1, ...]`` under a batch of decoder outputs).
    Returns:
      ``[B]``: summed over pixels, in nats.  x*l - softplus(l) = log sigmoid(+-l).
    """
    _check_broadcast("bernoulli_log_likelihood", x=x, logits=logits)
    _check_batched("bernoulli_log_likelihood", "x", x)
    return _sum_except_batch(x * logits - jax.nn.softplus(logits))


def discretized_gaussian_log_likelihood(
    x: jax.Array, mean: jax.Array, log_scale: jax.Array, num_bins: int = 256
) -> jax.Array:
    """log P(x) for grey levels under a Gaussian integrated over each level's bin.

    The data ``x`` in ``[0, 1]`` takes the values ``k / (num_bins - 1)``. Level ``k`` owns the
    interval of width ``1 / (num_bins - 1)`` around it; the first and last levels own everything
    below and above. So the probabilities over the levels sum to exactly one and the result is a
    true discrete log-likelihood (compare across models in bits/dim).

    Args:
      x: ``[B, H, W, C]`` data in ``[0, 1]``.
      mean: ``[B, H, W, C]`` Gaussian means, same scale as ``x`` (same shape, or broadcasting
        against it over axes of size 1).
      log_scale: log standard deviation, broadcastable to ``x``.
    Returns:
      ``[B]``: summed over pixels and channels, in nats.
    """
    fn = "discretized_gaussian_log_likelihood"
    shape = _check_broadcast(fn, x=x, mean=mean)
    _check_batched(fn, "x", x)
    try:
        broadcast = jnp.broadcast_shapes(shape, jnp.shape(log_scale))
    except ValueError:
        broadcast = None
    if broadcast != shape:
        raise ValueError(
            f"{fn}: log_scale must broadcast to the shape {shape} of x {jnp.shape(x)} and mean "
            f"{jnp.shape(mean)}, got log_scale {jnp.shape(log_scale)}"
        )
    if not isinstance(num_bins, int | np.integer) or num_bins < 2:
        raise ValueError(f"{fn}: num_bins must be an integer >= 2, got {num_bins!r}")
    half_bin = 0.5 / (num_bins - 1)
    inv_scale = jnp.exp(-log_scale)
    centred = x - mean
    upper = (centred + half_bin) * inv_scale
    lower = (centred - half_bin) * inv_scale
    # Mass of the bin: Phi(upper) - Phi(lower). Evaluate it in the tail where it is small
    # (mirror to the left tail when the bin sits right of the mean) to keep precision.
    right = centred > 0
    a = jnp.where(right, -upper, lower)
    b = jnp.where(right, -lower, upper)
    mass = ndtr(b) - ndtr(a)
    log_mass = jnp.log(jnp.maximum(mass, 1e-12))
    # When the bin is many scales away even the mirrored difference underflows. Take the
    # difference in log space, log Phi(b) + log(1 - Phi(a) / Phi(b)), which is exact; when the
    # two tail masses are too close for that (a bin narrow against the scale) the density at
    # the bin centre times its width is accurate instead. (The density alone is not: for a bin
    # several scales wide it was off by more than 10 nats, a jump in log P as the mean moves.)
    log_a, log_b = log_ndtr(a), log_ndtr(b)
    gap = log_a - log_b  # <= 0; clamped below so the unused branch stays finite (and its grad)
    log_tail = log_b + jnp.log(-jnp.expm1(jnp.minimum(gap, -1e-2)))
    log_density = -0.5 * jnp.square(centred * inv_scale) - log_scale - 0.5 * _LOG_2PI
    log_far = jnp.where(gap < -1e-2, log_tail, log_density + jnp.log(2 * half_bin))
    log_mass = jnp.where(mass > 1e-10, log_mass, log_far)
    log_first = log_ndtr(upper)  # everything below the first level's upper edge
    log_last = log_ndtr(-lower)  # everything above the last level's lower edge
    eps = 0.25 / (num_bins - 1)
    log_p = jnp.where(x < eps, log_first, jnp.where(x > 1.0 - eps, log_last, log_mass))
    return _sum_except_batch(log_p)


def elbo(log_likelihood: jax.Array, kl: jax.Array) -> jax.Array:
    """Evidence lower bound, per example: E_q[log p(x|z)] - KL(q(z|x) || p(z)), in nats.

    ``log_likelihood`` and ``kl`` must have the same shape (``[B]``), or the same rank and
    broadcast over axes of size 1; ``[B]`` against ``[B, 1]`` is refused.
    """
    _check_broadcast("elbo", log_likelihood=log_likelihood, kl=kl)
    return log_likelihood - kl


def iwae_bound(log_weights: jax.Array, axis: int = 0) -> jax.Array:
    """Importance-weighted bound (Burda et al. 2016): log (1/k) sum_i w_i.

    ``log_weights[i] = log p(x, z_i) - log q(z_i | x)`` with ``z_i ~ q(z|x)``, the ``k``
    samples along ``axis``. k = 1 gives the ELBO; the bound rises with k towards log p(x).
    """
    ndim = jnp.ndim(log_weights)
    if not -ndim <= axis < ndim:
        raise ValueError(
            f"iwae_bound: axis={axis} is out of range for log_weights of shape "
            f"{jnp.shape(log_weights)}"
        )
    k = log_weights.shape[axis]
    if k < 1:
        raise ValueError(
            f"iwae_bound: log_weights {jnp.shape(log_weights)} has no samples along axis={axis}"
        )
    return logsumexp(log_weights, axis=axis) - jnp.log(k)


def bits_per_dim(nll_nats: jax.Array, num_dims: int) -> jax.Array:
    """Convert a per-example negative log-likelihood in nats to bits per dimension."""
    if isinstance(num_dims, int | float | np.number) and not num_dims >= 1:
        raise ValueError(f"bits_per_dim: num_dims must be >= 1, got {num_dims!r}")
    return nll_nats / (num_dims * math.log(2.0))
