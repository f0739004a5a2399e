"""Mode collapse on 2-D Gaussian mixtures: the data and the scores of VEEGAN / PacGAN / GDPP.

Data (VEEGAN, Srivastava et al. 2017, and the papers that reuse its protocol):
- ``ring``: 8 equally weighted Gaussians with centres on a circle of radius 2, std 0.02;
- ``grid``: 25 equally weighted Gaussians with centres on ``{-4, -2, 0, 2, 4}^2`` (2 apart),
  std 0.05.

Scores of a set of generated points (2,500 per evaluation in those tables):
- a sample is **high quality** when it lies within 3 std of its nearest mode centre;
- a mode is **covered** when it is the nearest mode of at least one high-quality sample;
- the **reverse KL** (PacGAN's third column) is ``KL(p_gen || uniform)`` of the histogram of the
  nearest modes of the high-quality samples: 0 when they spread evenly over every mode,
  ``log M`` when they all sit on one. It is NaN when there is no high-quality sample.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

MIXTURES = ("ring", "grid")


class Mixture(NamedTuple):
    centres: np.ndarray  # [M, 2]
    std: float


def mixture(name: str) -> Mixture:
    """The named mixture (``ring`` or ``grid``)."""
    if name == "ring":
        angles = 2 * np.pi * np.arange(8) / 8
        return Mixture(2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1), 0.02)
    if name == "grid":
        xs = np.arange(-4.0, 5.0, 2.0)
        return Mixture(np.stack(np.meshgrid(xs, xs, indexing="ij"), -1).reshape(-1, 2), 0.05)
    raise ValueError(f"mixture {name!r} is not one of {MIXTURES}")


def sample_points(key, mix: Mixture, n: int):
    """``n`` points of the mixture (a JAX function: usable inside a jitted step)."""
    import jax
    import jax.numpy as jnp

    k1, k2 = jax.random.split(key)
    which = jax.random.randint(k1, (n,), 0, mix.centres.shape[0])
    centres = jnp.asarray(mix.centres, jnp.float32)[which]
    return centres + mix.std * jax.random.normal(k2, (n, 2), jnp.float32)


class ModeScores(NamedTuple):
    modes: int  # modes covered
    high_quality: float  # share of samples within 3 std of their nearest mode
    reverse_kl: float  # KL(nearest-mode histogram of high-quality samples || uniform)


def score(points, mix: Mixture, threshold_std: float = 3.0) -> ModeScores:
    """The three scores of ``points [N, 2]`` against ``mix``."""
    points = np.asarray(points, np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must have shape [N, 2], got {points.shape}")
    d = np.linalg.norm(points[:, None, :] - mix.centres[None, :, :], axis=-1)
    nearest = np.argmin(d, axis=1)
    good = d[np.arange(len(points)), nearest] <= threshold_std * mix.std
    m = mix.centres.shape[0]
    counts = np.bincount(nearest[good], minlength=m)
    covered = int(np.sum(counts > 0))
    if counts.sum() == 0:
        kl = math.nan
    else:
        p = counts / counts.sum()
        nz = p > 0
        kl = float(np.sum(p[nz] * np.log(p[nz] * m)))
    return ModeScores(covered, float(np.mean(good)) if len(points) else math.nan, kl)
