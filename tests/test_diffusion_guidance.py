"""Guidance wrappers on class-conditional Gaussian data, where every density is known.

Data: ``x0 | y ~ N(mu_y, s^2 I)`` with equal class priors. Then ``x_t | y ~ N(alpha mu_y, v I)``
with ``v = alpha^2 s^2 + sigma^2``, so the conditional noise model, the unconditional one
(``-sigma grad log p_t(x)`` of the mixture) and the Bayes-optimal noisy classifier are all
closed forms.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.diffusion import guidance, make_schedule, sample

SCHEDULE = make_schedule("linear")
MU = jnp.array([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.0]])  # three classes in 2-D
S = 0.3
NULL = MU.shape[0]  # the null class index, as in our UNet


def _var(t):
    return SCHEDULE.alpha(t) ** 2 * S**2 + SCHEDULE.sigma(t) ** 2


def cond_eps(x, t, y):
    """Optimal eps for class ``y`` (``y == NULL``: the unconditional mixture)."""
    a, sg, v = SCHEDULE.alpha(t)[:, None], SCHEDULE.sigma(t)[:, None], _var(t)[:, None]
    eps_y = sg * (x - a * MU[jnp.minimum(y, NULL - 1)]) / v
    return jnp.where((y == NULL)[:, None], uncond_eps(x, t), eps_y)


def classifier_logits(x, t):
    """Bayes' rule for the noisy data: log p(y | x_t) up to a constant."""
    a, v = SCHEDULE.alpha(t)[:, None, None], _var(t)[:, None, None]
    return -jnp.sum((x[:, None, :] - a * MU[None]) ** 2, -1) / (2 * v[..., 0])


def uncond_eps(x, t):
    def log_p(xi, ti):
        a, v = SCHEDULE.alpha(ti), _var(ti)
        return jax.nn.logsumexp(-jnp.sum((xi - a * MU) ** 2, -1) / (2 * v))

    score = jax.vmap(jax.grad(log_p))(x, t)
    return -SCHEDULE.sigma(t)[:, None] * score


def _points(n=64, seed=0):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    x = 2.0 * jax.random.normal(k1, (n, 2))
    t = jax.random.uniform(k2, (n,), minval=0.01, maxval=1.0)
    y = jnp.arange(n) % NULL
    return x, t, y


@pytest.mark.slow
def test_cfg_w1_is_the_conditional_model_bit_for_bit_and_w0_the_unconditional():
    x, t, y = _points()
    null = jnp.full_like(y, NULL)
    plain = cond_eps(x, t, y)
    for w in (1.0, jnp.float32(1.0)):  # a Python 1 skips the uncond half; an array does not
        w1 = guidance.classifier_free(cond_eps, y, null, w)(x, t)
        assert np.array_equal(np.asarray(w1), np.asarray(plain))
    for w in (0.0, jnp.float32(0.0)):
        w0 = guidance.classifier_free(cond_eps, y, null, w)(x, t)
        np.testing.assert_allclose(w0, uncond_eps(x, t), atol=1e-5)


@pytest.mark.slow
def test_cfg_extrapolates_and_uses_one_batched_call():
    x, t, y = _points()
    null = jnp.full_like(y, NULL)
    calls = []

    def counting(xx, tt, yy):
        calls.append((xx.shape, tt.shape, yy.shape))
        return cond_eps(xx, tt, yy)

    w = jnp.linspace(0.0, 7.5, x.shape[0])  # per-example scales work too
    out = guidance.classifier_free(counting, y, null, w)(x, t)
    assert calls == [((128, 2), (128,), (128,))]
    c, u = cond_eps(x, t, y), uncond_eps(x, t)
    np.testing.assert_allclose(out, u + w[:, None] * (c - u), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_negative_class_replaces_the_null_class():
    x, t, y = _points()
    neg = (y + 1) % NULL
    out = guidance.classifier_free(cond_eps, y, neg, 3.0)(x, t)
    c, n = cond_eps(x, t, y), cond_eps(x, t, neg)
    np.testing.assert_allclose(out, n + 3.0 * (c - n), rtol=1e-5, atol=1e-5)


def test_guidance_interval_and_rescale():
    x, t, y = _points()
    null = jnp.full_like(y, NULL)
    plain = guidance.classifier_free(cond_eps, y, null, 4.0)(x, t)
    limited = guidance.classifier_free(cond_eps, y, null, 4.0, interval=(0.2, 0.6))(x, t)
    inside = (t >= 0.2) & (t <= 0.6)
    assert 0 < int(inside.sum()) < x.shape[0]
    np.testing.assert_array_equal(limited[inside], plain[inside])
    np.testing.assert_array_equal(limited[~inside], cond_eps(x, t, y)[~inside])

    full = guidance.classifier_free(cond_eps, y, null, 4.0, rescale=1.0)(x, t)
    np.testing.assert_allclose(jnp.std(full, -1), jnp.std(cond_eps(x, t, y), -1), rtol=1e-4)
    half = guidance.classifier_free(cond_eps, y, null, 4.0, rescale=0.5)(x, t)
    np.testing.assert_allclose(half, 0.5 * full + 0.5 * plain, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="rescale=1.5"):
        guidance.classifier_free(cond_eps, y, null, 4.0, rescale=1.5)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_classifier_guidance_at_scale_1_turns_p_x_into_p_x_given_y(prediction):
    """grad log p(x_t) + grad log p(y | x_t) = grad log p(x_t | y): the unconditional model
    guided by the exact classifier at s = 1 is the conditional model."""
    from jaxgen.diffusion import to_v, to_x0

    x, t, y = _points()
    a, sg = SCHEDULE.alpha(t), SCHEDULE.sigma(t)
    convert = {
        "eps": lambda e: e,
        "x0": lambda e: to_x0(e, x, a, sg, "eps"),
        "v": lambda e: to_v(e, x, a, sg, "eps"),
    }[prediction]
    model = lambda xx, tt: convert(uncond_eps(xx, tt))  # noqa: E731
    guided = guidance.classifier_guidance(
        model, classifier_logits, y, 1.0, SCHEDULE, prediction=prediction
    )(x, t)
    np.testing.assert_allclose(guided, convert(cond_eps(x, t, y)), rtol=1e-4, atol=1e-4)


def _class_share(samples, y):
    d = jnp.sum((samples[:, None, :] - MU[None]) ** 2, -1)
    return float(jnp.mean(jnp.argmin(d, -1) == y))


@pytest.mark.parametrize(
    "solver,kwargs",
    [
        ("dpm_solver++", dict(steps=20, order=2)),
        ("ddim", dict(steps=50)),
        ("ddpm", dict(steps=200, mean_shift=True)),
    ],
)
@pytest.mark.slow
def test_guided_samplers_generate_the_requested_class(solver, kwargs):
    n = 600
    y = jnp.arange(n) % NULL
    x_T = jax.random.normal(jax.random.PRNGKey(1), (n, 2))
    rng = jax.random.PRNGKey(2)
    plain = jax.jit(
        lambda x: sample(
            uncond_eps,
            x,
            SCHEDULE,
            solver=solver,
            rng=rng,
            **{k: v for k, v in kwargs.items() if k != "mean_shift"},
        )
    )(x_T)
    assert 0.2 < _class_share(plain, y) < 0.5  # unguided: about a third by chance
    if kwargs.pop("mean_shift", False):
        shift = guidance.classifier_mean_shift(classifier_logits, y, 1.0)
        guided = sample(
            uncond_eps, x_T, SCHEDULE, solver=solver, rng=rng, mean_shift=shift, **kwargs
        )
    else:
        model = guidance.classifier_guidance(uncond_eps, classifier_logits, y, 1.0, SCHEDULE)
        guided = sample(model, x_T, SCHEDULE, solver=solver, rng=rng, **kwargs)
    assert _class_share(guided, y) > 0.97
    # At s = 1 the guided samples follow p(x | y): mean mu_y and spread s around it.
    for k in range(NULL):
        pts = np.asarray(guided[y == k])
        np.testing.assert_allclose(pts.mean(0), MU[k], atol=0.08)
        np.testing.assert_allclose(pts.std(0), [S, S], rtol=0.25)

    cfg = guidance.classifier_free(cond_eps, y, jnp.full_like(y, NULL), 1.0)
    if solver != "ddpm":
        cond = sample(cfg, x_T, SCHEDULE, solver=solver, rng=rng, **kwargs)
        assert _class_share(cond, y) > 0.97


def test_mean_shift_is_only_for_ddpm():
    shift = guidance.classifier_mean_shift(classifier_logits, jnp.zeros(4, jnp.int32), 1.0)
    with pytest.raises(ValueError, match="mean_shift"):
        sample(uncond_eps, jnp.zeros((4, 2)), SCHEDULE, solver="ddim", mean_shift=shift)


def test_guided_sampler_compiles_once_across_scales():
    traces = []
    y = jnp.arange(8) % NULL

    @jax.jit
    def run(x_T, w):
        traces.append(1)
        model = guidance.classifier_free(cond_eps, y, jnp.full_like(y, NULL), w)
        return sample(model, x_T, SCHEDULE, solver="dpm_solver++", steps=10)

    x_T = jax.random.normal(jax.random.PRNGKey(0), (8, 2))
    a, b = run(x_T, 1.0), run(x_T, 3.0)
    assert len(traces) == 1 and not np.allclose(a, b)
