"""The VAE's pure losses: KL, likelihoods, free bits and the IWAE bound."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy.special import ndtri
from scipy.stats import multivariate_normal

from jaxgen import losses
from jaxgen.families import vae


def test_gaussian_kl_matches_monte_carlo():
    key = jax.random.PRNGKey(0)
    mean = jnp.array([[0.5, -1.0, 2.0], [0.0, 0.3, -0.2]])
    logvar = jnp.array([[0.1, -1.5, 0.7], [1.0, -0.3, 0.0]])
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, (400_000, *mean.shape))
    log_q = losses.diag_gaussian_log_prob(z, mean, logvar)
    log_p = losses.diag_gaussian_log_prob(z, jnp.zeros_like(z), jnp.zeros_like(z))
    mc = (log_q - log_p).mean(axis=0)
    np.testing.assert_allclose(losses.gaussian_kl(mean, logvar), mc, rtol=0.02, atol=0.01)
    # And KL is zero exactly at the prior.
    np.testing.assert_allclose(losses.gaussian_kl(jnp.zeros((1, 4)), jnp.zeros((1, 4))), 0.0)


def test_bernoulli_log_likelihood_is_the_log_pmf():
    logits = jnp.array([[[-2.0, 0.5], [3.0, 0.0]]])
    x = jnp.array([[[0.0, 1.0], [1.0, 0.0]]])
    p = jax.nn.sigmoid(logits)
    expected = jnp.sum(jnp.log(jnp.where(x > 0, p, 1 - p)))
    np.testing.assert_allclose(losses.bernoulli_log_likelihood(x, logits), [expected], rtol=1e-6)


@pytest.mark.parametrize(
    "mean,log_scale", [(0.5, -2.0), (0.02, -5.0), (1.4, -3.0), (-0.7, 0.5), (0.3, -7.0)]
)
@pytest.mark.slow
def test_discretized_gaussian_sums_to_one_over_the_levels(mean, log_scale):
    levels = jnp.arange(256, dtype=jnp.float32) / 255.0
    x = levels.reshape(256, 1, 1, 1)
    log_p = losses.discretized_gaussian_log_likelihood(
        x, jnp.full_like(x, mean), jnp.asarray(log_scale)
    )
    assert np.all(np.isfinite(log_p))
    np.testing.assert_allclose(jnp.exp(jax.scipy.special.logsumexp(log_p)), 1.0, atol=2e-4)


@pytest.mark.slow
def test_discretized_gaussian_is_finite_far_in_the_tails():
    x = jnp.array([0.0, 128 / 255, 1.0]).reshape(3, 1, 1, 1)
    far = jnp.where(x < 0.5, 1.0, 0.0)  # every level many scales from the mean
    log_p = losses.discretized_gaussian_log_likelihood(x, far, jnp.asarray(-6.0))
    assert np.all(np.isfinite(log_p)) and np.all(log_p < -100)
    grads = jax.grad(
        lambda m: losses.discretized_gaussian_log_likelihood(x, m, jnp.asarray(-6.0)).sum()
    )(far)
    assert np.all(np.isfinite(grads))


def test_free_bits_hold_the_kl_term_at_the_floor_and_stop_its_gradient():
    mean = jnp.array([[0.01, 3.0], [0.02, 2.0]])
    logvar = jnp.zeros_like(mean)
    plain = losses.kl_with_free_bits(mean, logvar, 0.0)
    np.testing.assert_allclose(plain, losses.gaussian_kl(mean, logvar).mean(), rtol=1e-6)
    # Dimension 0 has KL far below 0.5 nats: it is clamped, and gets no gradient.
    floored = losses.kl_with_free_bits(mean, logvar, 0.5)
    per_dim = losses.gaussian_kl_per_dim(mean, logvar).mean(axis=0)
    np.testing.assert_allclose(floored, 0.5 + per_dim[1], rtol=1e-6)
    grad = jax.grad(lambda m: losses.kl_with_free_bits(m, logvar, 0.5))(mean)
    np.testing.assert_array_equal(grad[:, 0], 0.0)
    assert np.all(grad[:, 1] != 0)


def _linear_gaussian_problem(seed=0, d=2, D=5):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(D, d))
    b = rng.normal(size=D)
    s = 0.7
    x = rng.normal(size=D) * 2
    # An encoder that is deliberately off: mean shifted and variance too small.
    cov = np.linalg.inv(np.eye(d) + W.T @ W / s**2)
    post_mean = cov @ W.T @ (x - b) / s**2
    q_mean, q_logvar = post_mean + 0.6, np.log(np.diag(cov)) - 1.0
    exact = multivariate_normal(b, W @ W.T + s**2 * np.eye(D)).logpdf(x)
    return W, b, s, x, q_mean, q_logvar, exact


def _mean_iwae_bound(problem, k, repeats=4000, seed=1):
    W, b, s, x, q_mean, q_logvar, _ = problem
    eps = jax.random.normal(jax.random.PRNGKey(seed), (repeats, k, len(q_mean)))
    z = q_mean + jnp.exp(0.5 * q_logvar) * eps
    log_px_z = losses.diag_gaussian_log_prob(
        jnp.asarray(x), z @ W.T + b, jnp.full(len(x), 2 * np.log(s))
    )
    log_pz = losses.diag_gaussian_log_prob(z, jnp.zeros_like(z), jnp.zeros_like(z))
    log_qz = losses.diag_gaussian_log_prob(z, q_mean, q_logvar)
    bounds = losses.iwae_bound(log_px_z + log_pz - log_qz, axis=1)
    return float(bounds.mean()), float(bounds.std() / np.sqrt(repeats))


@pytest.mark.slow
def test_iwae_bound_rises_with_k_and_stays_below_the_exact_log_likelihood():
    problem = _linear_gaussian_problem()
    exact = problem[-1]
    results = {k: _mean_iwae_bound(problem, k) for k in (1, 4, 16, 64, 256)}
    ordered = [results[k] for k in sorted(results)]
    means = [m for m, _ in ordered]
    for (lo, lo_se), (hi, hi_se) in zip(ordered[:-1], ordered[1:], strict=True):
        assert hi > lo + 2 * (lo_se + hi_se), results
    for m, se in results.values():
        assert m <= exact + 3 * se, (results, exact)
    # k = 1 is the ELBO, well below; k = 256 is close to log p(x).
    assert exact - means[0] > 1.0
    assert exact - means[-1] < 0.2 * (exact - means[0])


def test_vae_importance_weights_integrate_to_the_brute_force_likelihood():
    """Guards the ``log p(z) - log q(z | x)`` part of the VAE's log importance weights: with a
    1-D latent, ``log p(x) = log int p(x | z) p(z) dz`` is a dense sum over z of the decoder's
    likelihood, and the mean of the weights over ``eps`` at the standard normal quantiles (a
    quadrature of ``E_q[w]``, with no sampling noise) must equal it. Without the correction
    the same quadrature gives ``log E_q[p(x | z)]``, 0.3 to 0.9 nats off here."""
    config = ml_collections.ConfigDict(
        {
            "data": {"image_shape": (16, 16, 1)},
            "model": {"kind": "mlp", "latent_dim": 1, "channels": (8,), "hidden": (32, 32)},
            "loss": {"likelihood": "bernoulli", "binarize": "none"},
        }
    )
    yy, xx = np.mgrid[:16, :16]
    images = [(abs(yy - 7.5) < 4) & (abs(xx - 7.5) < 4), (yy + xx) % 3 == 0, yy < 8]
    x = jnp.asarray(np.stack(images).astype(np.float32)[..., None])
    model = vae.build_model(config)
    k = 2048
    quantiles = ndtri((np.arange(k) + 0.5) / k).astype(np.float32)
    eps = jnp.broadcast_to(jnp.asarray(quantiles)[:, None, None], (k, x.shape[0], 1))
    z = jnp.linspace(-10.0, 10.0, 4001)[:, None]

    @jax.jit  # one compilation instead of one per op
    def estimate_and_exact():
        params = model.init(jax.random.PRNGKey(0), x, jax.random.PRNGKey(1))["params"]
        # A larger random init makes q(z | x) clearly unlike the prior (sigma 1.4 to 2.3,
        # means up to 0.66 from 0), so that the correction matters.
        params = jax.tree.map(lambda p: 1.5 * p, params)
        log_w = vae.log_importance_weights(config, params, x, eps)
        estimate = jax.scipy.special.logsumexp(log_w, axis=0) - np.log(k)
        decoded = model.apply({"params": params}, z, method=vae.VAE.decode)
        log_px_z = jax.vmap(lambda im: losses.bernoulli_log_likelihood(im[None], decoded))(x)
        log_pz = -0.5 * z[:, 0] ** 2 - 0.5 * np.log(2 * np.pi)
        dz = z[1, 0] - z[0, 0]
        return estimate, jax.scipy.special.logsumexp(log_px_z + log_pz, axis=1) + jnp.log(dz)

    estimate, exact = estimate_and_exact()
    assert estimate.shape == (x.shape[0],)
    np.testing.assert_allclose(np.asarray(estimate), np.asarray(exact), rtol=0, atol=0.01)


def test_bits_per_dim():
    np.testing.assert_allclose(losses.bits_per_dim(jnp.asarray(784 * np.log(2.0)), 784), 1.0)
