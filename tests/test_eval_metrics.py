"""Sample-quality metrics against closed forms and the behaviour they must show."""

import numpy as np
import pytest
from scipy.linalg import sqrtm

from jaxgen.eval.metrics import (
    FeatureStats,
    frechet_distance,
    frechet_distance_of,
    kid,
    precision_recall,
)


def _random_cov(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T + 0.1 * np.eye(d)


def test_running_stats_equal_the_whole_set_in_any_batching():
    x = np.random.default_rng(0).standard_normal((1000, 5)) * 3 + 2
    stats = FeatureStats(5)
    for part in np.array_split(x, 7):
        stats.update(part.astype(np.float32))
    np.testing.assert_allclose(stats.mean(), x.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(stats.cov(), np.cov(x, rowvar=False), rtol=1e-5, atol=1e-6)


def test_frechet_distance_is_the_closed_form_for_non_commuting_covariances():
    rng = np.random.default_rng(1)
    d = 6
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    c1, c2 = _random_cov(rng, d), _random_cov(rng, d)
    assert not np.allclose(c1 @ c2, c2 @ c1)  # the case a diagonal shortcut gets wrong
    # Closed form with the principal square root of the (non-symmetric) product, in float64.
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2 - 2 * np.real(sqrtm(c1 @ c2)))
    np.testing.assert_allclose(frechet_distance(mu1, c1, mu2, c2), expected, rtol=1e-8)
    assert frechet_distance(mu1, c1, mu1, c1) == pytest.approx(0.0, abs=1e-9)
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance([0.0], [[4.0]], [1.0], [[9.0]]) == pytest.approx(1.0 + 1.0)


def test_frechet_distance_of_samples_is_near_zero_for_one_distribution_and_grows_with_shift():
    rng = np.random.default_rng(2)
    a = FeatureStats(4).update(rng.standard_normal((20_000, 4)))
    b = FeatureStats(4).update(rng.standard_normal((20_000, 4)))
    shifts = []
    for s in (0.25, 0.5, 1.0):
        c = FeatureStats(4).update(rng.standard_normal((20_000, 4)) + s)
        shifts.append(frechet_distance_of(a, c))
    assert frechet_distance_of(a, b) < 0.01
    assert shifts == sorted(shifts) and shifts[0] > 10 * frechet_distance_of(a, b)
    np.testing.assert_allclose(shifts, [4 * s**2 for s in (0.25, 0.5, 1.0)], rtol=0.1)


def test_kid_is_unbiased_for_one_distribution_and_positive_for_a_shifted_one():
    rng = np.random.default_rng(3)
    means = []
    for seed in range(30):
        r = np.random.default_rng(seed)
        mean, _ = kid(r.standard_normal((200, 8)), r.standard_normal((200, 8)), 10, 100, seed)
        means.append(mean)
    # Unbiased: the average over many draws is ~0 (a biased estimate stays above 0).
    assert abs(np.mean(means)) < 3 * np.std(means) / np.sqrt(len(means)) + 1e-4
    shifted, std = kid(rng.standard_normal((300, 8)), rng.standard_normal((300, 8)) + 0.5, 20, 200)
    assert shifted > 5 * std and shifted > 0.01


def test_precision_and_recall_see_quality_and_coverage():
    rng = np.random.default_rng(4)
    real = rng.standard_normal((600, 2))
    assert precision_recall(real, real) == (1.0, 1.0)
    fake = rng.standard_normal((600, 2))
    p, r = precision_recall(real, fake)
    assert p > 0.9 and r > 0.9
    # Half the generated set moved off the manifold: precision falls, recall stays.
    off = np.concatenate([fake[:300], fake[300:] + 20.0])
    p_off, r_off = precision_recall(real, off)
    assert p_off < 0.6 and r_off > 0.8
    # Two modes of real data, generated covering one: recall falls, precision stays.
    modes = np.concatenate([rng.standard_normal((300, 2)), rng.standard_normal((300, 2)) + 10])
    one = rng.standard_normal((600, 2))
    p_one, r_one = precision_recall(modes, one, chunk=100)
    assert p_one > 0.9 and r_one < 0.6
