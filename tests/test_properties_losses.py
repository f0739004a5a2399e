"""Property tests (hypothesis) of the VAE losses: named shape errors, and no NaN, no wrong
value at the valid extremes (huge logits, pixel values 0 and 1 under tiny and huge scales,
large means and log-variances in [-30, 30], very negative importance weights).

Shapes come from small fixed sets and the functions are jitted once per shape, so hypothesis
does not trigger a compilation per example. References are computed in float64 with numpy and
scipy.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import log_ndtr as log_ndtr64
from scipy.special import logsumexp as logsumexp64
from strategies import arrays, floats

from jaxgen import losses

SETTINGS = settings(deadline=None, database=None)


def assert_close(actual, expected, tol):
    """``|actual - expected| <= tol`` elementwise, ``tol`` an array (float32 rounding scales
    with the terms summed, which ``assert_allclose``'s scalar tolerances cannot express), plus
    1e-30 for float32 underflow."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    error = np.abs(actual - expected)
    tol = tol + 1e-30
    assert np.all(error <= tol), f"error {error} > tolerance {tol}: {actual} vs {expected}"


# --------------------------------------------------------------------------- shape errors
BAD_SHAPES = [
    (
        losses.gaussian_kl,
        (np.zeros((4, 3)), np.zeros((4, 2))),
        r"gaussian_kl: mean and logvar must have the same shape, got mean \(4, 3\) and "
        r"logvar \(4, 2\)",
    ),
    (
        losses.gaussian_kl,
        (np.zeros(()), np.zeros(())),
        r"gaussian_kl: mean must have a leading batch axis",
    ),
    (
        losses.gaussian_kl_per_dim,
        (np.zeros((4, 3)), np.zeros((3,))),
        r"gaussian_kl_per_dim: mean and logvar .* mean \(4, 3\) and logvar \(3,\)",
    ),
    (
        lambda m, lv: losses.kl_with_free_bits(m, lv, 0.5),
        (np.zeros((4, 3)), np.zeros((4, 1))),
        r"kl_with_free_bits: mean and logvar .* mean \(4, 3\) and logvar \(4, 1\)",
    ),
    (
        losses.bernoulli_log_likelihood,
        (np.zeros((2, 3)), np.zeros((2, 4))),
        r"bernoulli_log_likelihood: x and logits .* x \(2, 3\) and logits \(2, 4\)",
    ),
    (
        losses.bernoulli_log_likelihood,
        (np.zeros((2,)), np.zeros((2, 1))),
        r"bernoulli_log_likelihood: x and logits .* x \(2,\) and logits \(2, 1\)",
    ),
    (
        losses.discretized_gaussian_log_likelihood,
        (np.zeros((2, 4, 4, 2)), np.zeros((2, 4, 4, 3)), np.zeros(())),
        r"discretized_gaussian_log_likelihood: x and mean .* x \(2, 4, 4, 2\) and "
        r"mean \(2, 4, 4, 3\)",
    ),
    (
        losses.discretized_gaussian_log_likelihood,
        (np.zeros((2, 4, 4, 1)), np.zeros((2, 4, 4, 1)), np.zeros((3,))),
        r"discretized_gaussian_log_likelihood: log_scale must broadcast to the shape "
        r"\(2, 4, 4, 1\) .* got log_scale \(3,\)",
    ),
    (
        lambda x, m: losses.discretized_gaussian_log_likelihood(x, m, 0.0, num_bins=1),
        (np.zeros((2, 3)), np.zeros((2, 3))),
        r"discretized_gaussian_log_likelihood: num_bins must be an integer >= 2, got 1",
    ),
    (
        losses.diag_gaussian_log_prob,
        (np.zeros((2, 3)), np.zeros((2, 4)), np.zeros((2, 4))),
        r"diag_gaussian_log_prob: .* z \(2, 3\), mean \(2, 4\), logvar \(2, 4\)",
    ),
    (
        losses.elbo,
        (np.zeros((4,)), np.zeros((4, 1))),
        r"elbo: log_likelihood and kl .* log_likelihood \(4,\) and kl \(4, 1\)",
    ),
    (
        lambda w: losses.iwae_bound(w, axis=2),
        (np.zeros((4, 3)),),
        r"iwae_bound: axis=2 is out of range for log_weights of shape \(4, 3\)",
    ),
    (
        losses.iwae_bound,
        (np.zeros((0, 3)),),
        r"iwae_bound: log_weights \(0, 3\) has no samples along axis=0",
    ),
    (
        lambda nll: losses.bits_per_dim(nll, 0),
        (np.zeros((4,)),),
        r"bits_per_dim: num_dims must be >= 1, got 0",
    ),
]


@pytest.mark.parametrize("fn, args, message", BAD_SHAPES)
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_shape_errors_name_the_arguments_and_shapes(fn, args, message, jit):
    """Raised at trace time, so the same named ValueError comes out of ``jax.jit``."""
    with pytest.raises(ValueError, match=message):
        (jax.jit(fn) if jit else fn)(*map(jnp.asarray, args))


def test_broadcasting_over_axes_of_size_one_is_still_accepted():
    """One image scored under a batch of decoder outputs (as the IWAE test of the VAE does)."""
    x = jnp.ones((1, 3))
    logits = jnp.zeros((5, 3))
    np.testing.assert_allclose(losses.bernoulli_log_likelihood(x, logits), [-3 * math.log(2)] * 5)
    z, mean = jnp.zeros((7, 5, 2)), jnp.zeros((5, 2))
    assert losses.diag_gaussian_log_prob(z, mean, mean).shape == (7, 5)


# --------------------------------------------------------------------------- Bernoulli
_bernoulli = jax.jit(losses.bernoulli_log_likelihood)
_bernoulli_grad = jax.jit(
    jax.grad(lambda x, logits: losses.bernoulli_log_likelihood(x, logits).sum(), argnums=1)
)


@st.composite
def bits_and_logits(draw):
    shape = draw(st.sampled_from([(1, 4), (3, 2, 5)]))
    x = draw(arrays(shape, st.sampled_from([0.0, 1.0])))
    logits = draw(arrays(shape, floats(-1e4, 1e4, -1e4, 1e4, -88.0, 88.0, 0.0)))
    return x, logits


@SETTINGS
@given(bits_and_logits())
def test_bernoulli_log_likelihood_is_exact_at_huge_logits(case):
    x, logits = case
    log_p = np.asarray(_bernoulli(x, logits))
    # log sigmoid(+-l) = -log(1 + exp(-+l)), in float64.
    signed = np.where(x == 1.0, logits, -logits).astype(np.float64)
    per_pixel = -np.logaddexp(0.0, -signed)
    expected = per_pixel.reshape(x.shape[0], -1).sum(axis=1)
    assert np.all(np.isfinite(log_p)) and np.all(log_p <= 0.0)
    scale = np.abs(logits.astype(np.float64)).reshape(x.shape[0], -1).sum(axis=1)
    assert_close(log_p, expected, 1e-6 * scale + 1e-5)
    grad = np.asarray(_bernoulli_grad(x, logits))  # x - sigmoid(l), in [-1, 1]
    assert np.all(np.isfinite(grad)) and np.all(np.abs(grad) <= 1.0)


# --------------------------------------------------------------------------- discretized Gaussian
def _discretized_reference(x, mean, log_scale, num_bins):
    """log P(level) in float64: tail masses at the ends, a log-space difference in between."""
    x, mean = x.astype(np.float64), np.float64(mean)
    scale, half = math.exp(log_scale), 0.5 / (num_bins - 1)
    upper, lower = (x - mean + half) / scale, (x - mean - half) / scale
    # Phi(u) - Phi(l) = Phi(-l) - Phi(-u): use the tail the bin sits in.
    right = x - mean > 0
    hi = np.where(right, -lower, upper)
    lo = np.where(right, -upper, lower)
    with np.errstate(divide="ignore"):
        middle = log_ndtr64(hi) + np.log1p(-np.exp(log_ndtr64(lo) - log_ndtr64(hi)))
    return np.where(x == 0.0, log_ndtr64(upper), np.where(x == 1.0, log_ndtr64(-lower), middle))


_LEVELS = {n: (np.arange(n, dtype=np.float32) / (n - 1)).reshape(n, 1) for n in (2, 256)}


def _discretized(num_bins):
    """``(mean, log_scale) -> (log P of every level, its gradients)``: one compilation."""

    def total(mean, log_scale):
        x = jnp.asarray(_LEVELS[num_bins])
        means = jnp.full(x.shape, mean, jnp.float32)
        log_p = losses.discretized_gaussian_log_likelihood(x, means, log_scale, num_bins)
        return log_p.sum(), log_p

    value_and_grads = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)
    return jax.jit(lambda m, s: (lambda out: (out[0][1], out[1]))(value_and_grads(m, s)))


_DISCRETIZED = {n: _discretized(n) for n in _LEVELS}


@SETTINGS
@given(
    num_bins=st.sampled_from(sorted(_LEVELS)),
    mean=floats(-0.5, 1.5, 0.0, 1.0, 0.5, -0.5, 1.5, 0.3 + 0.5 / 255),
    log_scale=floats(-12.0, 6.0, -12.0, -7.0, 6.0),
)
@pytest.mark.slow
def test_discretized_gaussian_at_pixel_values_0_and_1_with_tiny_and_huge_scales(
    num_bins, mean, log_scale
):
    """Every grey level, 0 and 1 included: finite, at most 0, within float32 rounding of the
    float64 value, summing to one over the levels, with finite gradients."""
    mean, log_scale = float(np.float32(mean)), float(np.float32(log_scale))  # what it sees
    log_p, grads = _DISCRETIZED[num_bins](np.float32(mean), np.float32(log_scale))
    log_p = np.asarray(log_p)
    assert np.all(np.isfinite(log_p)) and np.all(log_p <= 1e-6)
    expected = _discretized_reference(_LEVELS[num_bins][:, 0], mean, log_scale, num_bins)
    # float32: relative rounding of huge values, and ~1e-7 / mass absolute where a bin's
    # mass is a difference of two probabilities near 1/2 (scales far wider than a bin).
    np.testing.assert_allclose(log_p, expected, rtol=1e-5, atol=0.03)
    # Bin edges are float32: resolved to ~1e-7 / scale of a scale (1.6% at log_scale -12).
    total = np.exp(logsumexp64(log_p.astype(np.float64)))
    assert abs(total - 1.0) <= 2e-4 + 1e-7 * math.exp(-log_scale), total
    assert all(np.all(np.isfinite(g)) for g in grads)


def test_discretized_gaussian_has_no_jump_where_it_switches_to_the_far_tail():
    """A level's log P is continuous in the mean: the far-tail branch (bin mass < 1e-10) used
    to take the density at the bin centre, which for bins several scales wide (log_scale = -7,
    the VAE's floor) was 13 nats below the true mass, a jump as the mean moved by 5e-5."""
    log_p_fn = _DISCRETIZED[256]
    x = _LEVELS[256][:, 0]
    for log_scale in (-9.0, -7.0, -5.0):
        means = np.float32(100 / 255) + np.linspace(0.0, 0.1, 401, dtype=np.float32)
        got = np.stack([np.asarray(log_p_fn(m, np.float32(log_scale))[0])[100] for m in means])
        expected = np.stack(
            [_discretized_reference(x, m, log_scale, 256)[100] for m in means.astype(np.float64)]
        )
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)


# --------------------------------------------------------------------------- KL terms
_kl = jax.jit(losses.gaussian_kl)
_kl_grads = jax.jit(jax.grad(lambda m, lv: losses.gaussian_kl(m, lv).sum(), argnums=(0, 1)))
_free_bits = jax.jit(losses.kl_with_free_bits)


@st.composite
def posteriors(draw):
    shape = draw(st.sampled_from([(1, 3), (4, 5)]))
    mean = draw(arrays(shape, floats(-1e3, 1e3, -1e3, 1e3, 0.0, 1e-4)))
    near_zero = floats(-1e-3, 1e-3, 0.0, 1e-4, -1e-4, 3e-4)
    logvar = draw(arrays(shape, st.one_of(floats(-30.0, 30.0, -30.0, 30.0), near_zero)))
    return mean, logvar


@SETTINGS
@given(posteriors(), st.sampled_from([0.0, 0.5, 3.0]))
def test_gaussian_kl_at_large_means_and_extreme_log_variances(posterior, free_bits):
    mean, logvar = posterior
    kl = np.asarray(_kl(mean, logvar))
    m, lv = mean.astype(np.float64), logvar.astype(np.float64)
    per_dim = 0.5 * (np.expm1(lv) - lv + m**2)
    assert np.all(np.isfinite(kl)) and np.all(kl >= 0.0)  # never negative, also near logvar 0
    # float32 rounding of the terms (expm1(lv) and lv cancel where lv is near 0)
    scale = 0.5 * (np.abs(np.expm1(lv)) + np.abs(lv) + m**2).sum(axis=1)
    assert_close(kl, per_dim.sum(axis=1), 1e-6 * scale)
    assert all(np.all(np.isfinite(g)) for g in _kl_grads(mean, logvar))
    floored = float(_free_bits(mean, logvar, free_bits))
    expected = np.maximum(per_dim.mean(axis=0), free_bits).sum()
    assert np.isfinite(floored) and floored >= free_bits * mean.shape[1] * (1 - 1e-6)
    assert_close(floored, expected, 1e-6 * (scale.mean() + free_bits * mean.shape[1]))


_kl_per_dim = jax.jit(losses.gaussian_kl_per_dim)


@SETTINGS
@given(
    arrays((4, 5), floats(-1e-4, 1e-4, 0.0)),
    arrays((4, 5), floats(-1e-3, 1e-3, 0.0, 1e-4, -1e-4)),
)
def test_gaussian_kl_is_never_negative_near_its_minimum(mean, logvar):
    """At logvar ~ 0 the terms exp(logvar) - 1 - logvar cancel; the KL must not come out
    negative (it did, by ~3e-8, before it was computed with expm1)."""
    assert np.all(np.asarray(_kl_per_dim(mean, logvar)) >= 0.0)


# --------------------------------------------------------------------------- diagonal Gaussian
_log_prob = jax.jit(losses.diag_gaussian_log_prob)


@SETTINGS
@given(posteriors(), st.data())
def test_diag_gaussian_log_prob_at_extremes_and_under_broadcasting(posterior, data):
    mean, logvar = posterior
    z = data.draw(arrays((2, *mean.shape), floats(-1e3, 1e3, -1e3, 1e3, 0.0)))
    log_p = np.asarray(_log_prob(z, mean, logvar))  # [2, B, D] against [B, D]
    z64, m, lv = (a.astype(np.float64) for a in (z, mean, logvar))
    terms = np.log(2 * np.pi) + lv + (z64 - m) ** 2 * np.exp(-lv)
    assert log_p.shape == z.shape[:-1] and np.all(np.isfinite(log_p))
    scale = 0.5 * np.abs(terms).sum(axis=-1)  # float32 rounding of terms of either sign
    assert_close(log_p, -0.5 * terms.sum(axis=-1), 1e-6 * scale)


# --------------------------------------------------------------------------- IWAE, bpd, elbo
_iwae = jax.jit(losses.iwae_bound, static_argnames="axis")


@st.composite
def log_weights(draw):
    k = draw(st.sampled_from([1, 4, 16]))
    return draw(arrays((k, 3), floats(-1e4, 10.0, -1e4, -1e4 + 1.0, 0.0, 10.0)))


@SETTINGS
@given(log_weights())
def test_iwae_bound_with_very_negative_log_weights(log_w):
    bound = np.asarray(_iwae(log_w))
    w = log_w.astype(np.float64)
    assert np.all(np.isfinite(bound))
    tol = 1e-6 * (np.abs(w).max(axis=0) + np.log(w.shape[0]))  # float32 rounding
    assert_close(bound, logsumexp64(w, axis=0) - np.log(w.shape[0]), tol)
    # Between the ELBO (mean of the log weights) and the largest log weight.
    assert np.all(w.mean(axis=0) - tol <= bound) and np.all(bound <= w.max(axis=0) + tol)
    np.testing.assert_array_equal(_iwae(log_w.T.copy(), axis=1), bound)  # axis is honoured


@SETTINGS
@given(arrays((4,), floats(0.0, 1e6, 0.0, 1e6)), st.sampled_from([1, 784, 3072]))
def test_bits_per_dim_and_elbo_are_linear(nll, num_dims):
    bpd = np.asarray(losses.bits_per_dim(nll, num_dims))
    np.testing.assert_allclose(bpd * num_dims * np.log(2.0), nll, rtol=1e-6, atol=1e-30)
    kl = np.abs(nll[::-1]).copy()
    np.testing.assert_array_equal(losses.elbo(-nll, kl), -nll - kl)
