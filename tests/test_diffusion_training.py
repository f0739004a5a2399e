"""Training-time diffusion math (``jaxgen.diffusion.training``), label dropout
(``guidance.drop_labels``) and the sampler option validator (``check_sampler_options``)."""

import itertools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen import diffusion as dfn

KINDS = ("linear", "cosine", "linear_vp")


def _schedule(kind, num_steps=1000):
    return dfn.make_schedule(kind, num_steps)


def _data(batch=8, shape=(16, 16, 3), seed=0):
    k0, k1 = jax.random.split(jax.random.PRNGKey(seed))
    x0 = jax.random.normal(k0, (batch, *shape), jnp.float32)
    noise = jax.random.normal(k1, (batch, *shape), jnp.float32)
    return x0, noise


# --------------------------------------------------------------------------- add_noise
@pytest.mark.parametrize("kind", KINDS)
def test_add_noise_is_alpha_x0_plus_sigma_noise(kind):
    schedule = _schedule(kind)
    x0, noise = _data()
    t = jnp.linspace(schedule.t_min, schedule.t_max, x0.shape[0])
    x_t = dfn.add_noise(schedule, x0, t, noise)
    assert x_t.shape == x0.shape and x_t.dtype == jnp.float32
    a = np.asarray(schedule.alpha(t), np.float64)[:, None, None, None]
    s = np.asarray(schedule.sigma(t), np.float64)[:, None, None, None]
    want = a * np.asarray(x0, np.float64) + s * np.asarray(noise, np.float64)
    np.testing.assert_allclose(np.asarray(x_t), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_add_noise_keeps_unit_variance_and_signal_fraction(kind):
    """For unit-variance x0 and noise, ``x_t`` has unit variance (alpha^2 + sigma^2 = 1) at every
    time, and its covariance with ``x0`` is ``alpha(t)``: signal falls as ``t`` grows."""
    schedule = _schedule(kind)
    x0, noise = _data(batch=6, shape=(64, 64, 1), seed=1)  # 4096 values per example
    t = jnp.array([schedule.t_min, 0.1, 0.3, 0.5, 0.8, schedule.t_max], jnp.float32)
    x_t = dfn.add_noise(schedule, x0, t, noise)
    flat = np.asarray(x_t).reshape(6, -1)
    np.testing.assert_allclose(flat.var(axis=1), 1.0, atol=0.1)
    cov = (flat * np.asarray(x0).reshape(6, -1)).mean(axis=1)
    np.testing.assert_allclose(cov, np.asarray(schedule.alpha(t)), atol=0.08)
    assert cov[0] > 0.9 and cov[-1] < 0.1


def test_add_noise_broadcasts_a_scalar_time():
    schedule = _schedule("cosine")
    x0, noise = _data(batch=4)
    scalar = dfn.add_noise(schedule, x0, 0.4, noise)
    per_example = dfn.add_noise(schedule, x0, jnp.full((4,), 0.4, jnp.float32), noise)
    np.testing.assert_array_equal(np.asarray(scalar), np.asarray(per_example))


# --------------------------------------------------------------------------- targets and loss
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("prediction", dfn.PREDICTIONS)
def test_prediction_target_converts_back_to_noise_and_x0(kind, prediction):
    schedule = _schedule(kind)
    x0, noise = _data(batch=5, seed=2)
    t = jnp.array([schedule.t_min, 0.1, 0.4, 0.7, 0.9], jnp.float32)
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    x_t = dfn.add_noise(schedule, x0, t, noise)
    target = dfn.prediction_target(prediction, x0, noise, alpha, sigma)
    eps = dfn.to_eps(target, x_t, alpha, sigma, prediction)
    rec_x0 = dfn.to_x0(target, x_t, alpha, sigma, prediction)
    np.testing.assert_allclose(np.asarray(eps), np.asarray(noise), atol=2e-3)
    np.testing.assert_allclose(np.asarray(rec_x0), np.asarray(x0), atol=2e-3)
    # Every target is the model output that gives the exact v (Salimans & Ho 2022).
    v = dfn.to_v(target, x_t, alpha, sigma, prediction)
    a, s = alpha[:, None, None, None], sigma[:, None, None, None]
    np.testing.assert_allclose(np.asarray(v), np.asarray(a * noise - s * x0), atol=2e-3)


def test_prediction_target_rejects_unknown_types():
    x0, noise = _data(batch=2)
    with pytest.raises(ValueError, match=r"prediction='score' is not one of \('eps', 'x0', 'v'\)"):
        dfn.prediction_target("score", x0, noise, jnp.ones(2), jnp.zeros(2))


@pytest.mark.parametrize("prediction", dfn.PREDICTIONS)
def test_denoising_loss(prediction):
    schedule = _schedule("linear")
    x0, noise = _data(batch=4, seed=3)
    t = jnp.array([0.1, 0.3, 0.6, 0.9], jnp.float32)
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    target = dfn.prediction_target(prediction, x0, noise, alpha, sigma)
    mean, per_example = dfn.denoising_loss(target, prediction, x0, noise, alpha, sigma)
    assert per_example.shape == (4,) and float(mean) == 0.0
    # An output off by c in one example only costs that example c^2.
    out = target.at[2].add(0.5)
    mean, per_example = dfn.denoising_loss(out, prediction, x0, noise, alpha, sigma)
    np.testing.assert_allclose(np.asarray(per_example), [0.0, 0.0, 0.25, 0.0], atol=1e-6)
    np.testing.assert_allclose(float(mean), 0.25 / 4, rtol=1e-6)


# --------------------------------------------------------------------------- training times
@pytest.mark.parametrize("kind", ("linear", "cosine"))
def test_training_times_cover_the_discrete_grid(kind):
    steps = 10
    schedule = _schedule(kind, steps)
    t = dfn.sample_training_times(schedule, jax.random.PRNGKey(0), 2000)
    assert t.shape == (2000,) and t.dtype == jnp.float32
    n = np.asarray(t, np.float64) * steps - 1
    np.testing.assert_allclose(n, np.round(n), atol=1e-5)  # on the grid (n + 1) / N
    counts = np.bincount(np.round(n).astype(int), minlength=steps)
    assert counts.shape == (steps,)  # no step beyond N - 1
    assert counts.min() > 0, counts  # every step is reachable, the last one included
    assert counts.max() < 2 * counts.min(), counts  # roughly uniform (200 expected per step)
    assert math.isclose(float(t.min()), schedule.t_min, rel_tol=1e-6)
    assert math.isclose(float(t.max()), schedule.t_max, rel_tol=1e-6)


def test_training_times_on_a_1000_step_schedule():
    schedule = _schedule("linear", 1000)
    t = np.asarray(dfn.sample_training_times(schedule, jax.random.PRNGKey(1), 4096), np.float64)
    np.testing.assert_allclose(t * 1000, np.round(t * 1000), atol=1e-3)
    assert t.min() >= 1e-3 - 1e-9 and t.max() <= 1.0
    assert len(np.unique(np.round(t * 1000))) > 900  # ~983 distinct steps expected


def test_training_times_continuous_uniform():
    schedule = _schedule("linear_vp")
    t = np.asarray(dfn.sample_training_times(schedule, jax.random.PRNGKey(2), 20_000))
    assert t.min() >= schedule.t_min and t.max() <= schedule.t_max
    assert len(np.unique(t)) > 19_000  # not on a grid
    hist, _ = np.histogram(t, bins=10, range=(schedule.t_min, schedule.t_max))
    np.testing.assert_allclose(hist / 2000, 1.0, atol=0.1)


def test_training_times_are_a_function_of_the_key():
    schedule = _schedule("cosine", 100)
    a = dfn.sample_training_times(schedule, jax.random.PRNGKey(5), 64)
    b = dfn.sample_training_times(schedule, jax.random.PRNGKey(5), 64)
    c = dfn.sample_training_times(schedule, jax.random.PRNGKey(6), 64)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


# --------------------------------------------------------------------------- label dropout
def test_drop_labels_drops_at_rate_p():
    num_classes, n = 10, 40_000
    labels = jnp.arange(n, dtype=jnp.int32) % num_classes
    out = np.asarray(dfn.drop_labels(labels, jax.random.PRNGKey(0), 0.1, num_classes))
    assert out.dtype == np.int32 and out.shape == (n,)
    dropped = out == num_classes
    # 0.1 +- 5 standard deviations (0.0015 each)
    assert abs(dropped.mean() - 0.1) < 0.0075, dropped.mean()
    np.testing.assert_array_equal(out[~dropped], np.asarray(labels)[~dropped])  # others kept
    # every class loses about the same share
    per_class = np.bincount(np.asarray(labels)[dropped], minlength=num_classes) / (n / num_classes)
    np.testing.assert_allclose(per_class, 0.1, atol=0.03)


def test_drop_labels_extremes_and_shape():
    labels = jnp.arange(24, dtype=jnp.int32).reshape(4, 6) % 5
    key = jax.random.PRNGKey(1)
    kept = dfn.drop_labels(labels, key, 0.0, 5)
    np.testing.assert_array_equal(np.asarray(kept), np.asarray(labels))
    gone = dfn.drop_labels(labels, key, 1.0, 5)
    assert gone.shape == (4, 6) and gone.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(gone), np.full((4, 6), 5))
    assert dfn.drop_labels is dfn.guidance.drop_labels


# --------------------------------------------------------------------------- sampler options
VALID = [
    dict(solver=s, method=m, order=o, steps=n, eta=e)
    for s, m, o, n, e in itertools.product(
        dfn.SOLVERS, dfn.METHODS, (1, 2, 3), (1, 7, 20), (0.0, 0.5)
    )
    if not (s == "dpm_solver++" and m == "singlestep" and o == 3)
]


def test_check_sampler_options_accepts_every_valid_combination():
    assert len(VALID) == 4 * 2 * 3 * 3 * 2 - 3 * 2
    for options in VALID:
        for prefix in ("", "sampler."):
            assert dfn.check_sampler_options(**options, prefix=prefix) is None
    dfn.check_sampler_options(solver="ddim", method="multistep", order=2, steps=5)  # eta default


GOOD = dict(solver="dpm_solver++", method="multistep", order=2, steps=20, eta=0.0)
BAD = [
    ("solver", "euler", "solver='euler' is not one of ('ddpm', 'ddim', 'dpm_solver', "),
    ("method", "adaptive", "method='adaptive' is not one of ('multistep', 'singlestep')"),
    ("steps", 0, "steps=0 must be an integer >= 1"),
    ("steps", -3, "steps=-3 must be an integer >= 1"),
    ("steps", 2.0, "steps=2.0 must be an integer >= 1"),
    ("steps", True, "steps=True must be an integer >= 1"),
    ("order", 4, "order=4 is not one of (1, 2, 3)"),
    ("order", 0, "order=0 is not one of (1, 2, 3)"),
    ("order", True, "order=True is not one of (1, 2, 3)"),
    ("eta", -0.5, "eta=-0.5 must be >= 0"),
    ("eta", float("nan"), "eta=nan must be >= 0"),
]


@pytest.mark.parametrize("prefix", ("", "sampler."))
@pytest.mark.parametrize("key, value, message", BAD)
def test_check_sampler_options_names_the_bad_key(prefix, key, value, message):
    with pytest.raises(ValueError, match="^" + re.escape(prefix + message)) as info:
        dfn.check_sampler_options(**{**GOOD, key: value}, prefix=prefix)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("prefix", ("", "sampler."))
def test_check_sampler_options_refuses_dpm_solver_pp_singlestep_3(prefix):
    options = dict(GOOD, method="singlestep", order=3)
    message = (
        f"{prefix}solver='dpm_solver++' with {prefix}method='singlestep' and {prefix}order=3 "
        "is not offered; dpm_solver++ has 2S, 2M and 3M (use multistep)"
    )
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        dfn.check_sampler_options(**options, prefix=prefix)
    # dpm_solver (noise prediction) does offer singlestep order 3
    dfn.check_sampler_options(**dict(options, solver="dpm_solver"), prefix=prefix)


@pytest.mark.parametrize("key, value, message", BAD)
def test_sample_checks_its_options_with_the_validator(key, value, message):
    """``sample`` refuses bad options before it calls the model."""

    def model_fn(x, t):
        raise AssertionError("the model must not be called")

    x_T = jnp.zeros((2, 4))
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        dfn.sample(model_fn, x_T, _schedule("linear", 10), **{**GOOD, key: value})
