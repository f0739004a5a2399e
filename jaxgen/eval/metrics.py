"""Sample-quality metrics on feature vectors: Frechet distance, KID, precision and recall.

Pure NumPy functions of features (``[N, d]``), importable without the CLI. The features come
from an evaluator network; name the figure after it ("FD on jaxgen's MNIST classifier
features"), not "FID", unless they are Inception-v3's.

- ``FeatureStats``: running mean and covariance in float64, fed batch by batch, so 50,000
  samples never sit in memory at once.
- ``frechet_distance``: ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)``, the matrix
  square roots through symmetric eigendecompositions with negative eigenvalues clipped (not
  ``scipy.linalg.sqrtm``, whose versions have returned complex or wrong results).
- ``kid``: the unbiased MMD^2 estimate with the kernel ``(x.y / d + 1)^3`` over random subsets
  (mean and standard deviation).
- ``precision_recall``: Kynkaanniemi et al. 2019, k-nearest-neighbour balls in feature space,
  on two sets of the same size (``equal_sized`` subsamples the larger).
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class FeatureStats:
    """Running sums for the mean and covariance of ``d``-dimensional features, in float64."""

    dim: int
    count: int = 0
    total: np.ndarray | None = None
    outer: np.ndarray | None = None

    def __post_init__(self):
        if self.total is None:
            self.total = np.zeros(self.dim, np.float64)
            self.outer = np.zeros((self.dim, self.dim), np.float64)

    def update(self, features) -> FeatureStats:
        f = np.asarray(features, np.float64)
        if f.ndim != 2 or f.shape[1] != self.dim:
            raise ValueError(f"features must be [N, {self.dim}], got {f.shape}")
        self.count += f.shape[0]
        self.total += f.sum(axis=0)
        self.outer += f.T @ f
        return self

    def mean(self) -> np.ndarray:
        return self.total / self.count

    def cov(self) -> np.ndarray:
        """The unbiased sample covariance (divides by ``count - 1``)."""
        if self.count < 2:
            raise ValueError(f"a covariance needs 2 or more features, got {self.count}")
        mu = self.mean()
        return (self.outer - self.count * np.outer(mu, mu)) / (self.count - 1)


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """Frechet distance between the Gaussians ``N(mu1, cov1)`` and ``N(mu2, cov2)``."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    s1 = _sqrt_psd(cov1)
    middle = _sqrt_psd(s1 @ cov2 @ s1)
    value = np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(middle)
    return float(max(value, 0.0))


def frechet_distance_of(a: FeatureStats, b: FeatureStats) -> float:
    return frechet_distance(a.mean(), a.cov(), b.mean(), b.cov())


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def kid(real, fake, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0):
    """Kernel Inception Distance: ``(mean, std)`` over ``num_subsets`` random subsets of
    ``min(subset_size, len(real), len(fake))`` features of each set, of the unbiased MMD^2
    (within-set kernel diagonals dropped, each within-set sum divided by ``m (m - 1)``)."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    m = min(subset_size, len(real), len(fake))
    if m < 2:
        raise ValueError(f"KID needs 2 or more features in each set, got {len(real)}, {len(fake)}")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(num_subsets):
        x = real[rng.choice(len(real), m, replace=False)]
        y = fake[rng.choice(len(fake), m, replace=False)]
        kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        values.append(within - 2.0 * kxy.mean())
    values = np.asarray(values)
    return float(values.mean()), float(values.std())


def _kth_neighbour_radii(x: np.ndarray, k: int, chunk: int) -> np.ndarray:
    """Distance from each row of ``x`` to its ``k``-th nearest other row."""
    sq = np.sum(x * x, axis=1)
    radii = np.empty(len(x))
    for start in range(0, len(x), chunk):
        block = x[start : start + chunk]
        d2 = np.maximum(sq[start : start + chunk, None] + sq[None, :] - 2 * block @ x.T, 0.0)
        # the k-th smallest after the zero distance to itself
        radii[start : start + chunk] = np.sqrt(np.partition(d2, k, axis=1)[:, k])
    return radii


def _covered(points: np.ndarray, centres: np.ndarray, radii: np.ndarray, chunk: int):
    """Whether each point lies in some ball ``|p - centre| <= radius``."""
    sq_c = np.sum(centres * centres, axis=1)
    out = np.empty(len(points), bool)
    for start in range(0, len(points), chunk):
        block = points[start : start + chunk]
        d2 = np.sum(block * block, axis=1)[:, None] + sq_c[None, :] - 2 * block @ centres.T
        out[start : start + chunk] = np.any(d2 <= radii[None, :] ** 2 * (1 + 1e-9), axis=1)
    return out


def equal_sized(real, fake, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(real, fake)`` with the larger set replaced by a random subset (without replacement,
    under ``seed``) of the smaller one's size."""
    real, fake = np.asarray(real), np.asarray(fake)
    n = min(len(real), len(fake))

    def pick(x: np.ndarray) -> np.ndarray:
        if len(x) == n:
            return x
        return x[np.sort(np.random.default_rng(seed).choice(len(x), n, replace=False))]

    return pick(real), pick(fake)


def precision_recall(real, fake, k: int = 3, chunk: int = 1024) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019): precision is the share of
    generated features inside the real manifold (the union of balls around each real feature
    reaching its ``k``-th nearest real neighbour), recall the share of real features inside the
    generated manifold. Distances are computed ``chunk`` rows at a time.

    The two sets must be the same size: the balls' radii shrink as a set grows, so a larger set
    would have a tighter manifold and the two figures would not compare (``equal_sized``)."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if len(real) != len(fake):
        raise ValueError(
            f"precision/recall compare equal-sized sets, got {len(real)} real and {len(fake)} "
            "generated features; subsample the larger (equal_sized)"
        )
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} features in each set")
    real_radii = _kth_neighbour_radii(real, k, chunk)
    fake_radii = _kth_neighbour_radii(fake, k, chunk)
    precision = _covered(fake, real, real_radii, chunk).mean()
    recall = _covered(real, fake, fake_radii, chunk).mean()
    return float(precision), float(recall)
