"""Noise schedules of variance-preserving diffusion, viewed in continuous time ``t`` in (0, 1].

``x_t = alpha(t) x_0 + sigma(t) eps`` with ``alpha^2 + sigma^2 = 1`` and the log signal-to-noise
ratio ``lambda(t) = log alpha(t) - log sigma(t)``, which falls as ``t`` grows.

- Discrete DDPM schedules (``linear``, ``cosine`` or given betas ``beta_1..beta_N``): step
  ``n = 1..N`` sits at ``t_n = n / N`` with ``log alpha(t_n) = 0.5 * sum_{i<=n} log(1 - beta_i)``,
  and ``log alpha`` is interpolated piecewise linearly in between (as DPM-Solver does for
  discrete-time models), so ``t_min = 1 / N`` and ``t_max = 1``.
- ``linear_vp``: the continuous VP SDE with ``beta(t) = beta_0 + t (beta_1 - beta_0)``, so
  ``log alpha(t) = -(beta_1 - beta_0) t^2 / 4 - beta_0 t / 2`` in closed form; ``t_min = 1e-3``.

A schedule is a pytree (its arrays are leaves), so it can be passed into ``jax.jit``.
All arithmetic is float32 whatever the model's dtype.
"""

from __future__ import annotations

import math

import flax
import jax
import jax.numpy as jnp
import numpy as np

KINDS = ("linear", "cosine", "given", "linear_vp")


def linear_betas(num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
    """DDPM's linear schedule (Ho et al. 2020): betas evenly spaced from start to end."""
    return np.linspace(beta_start, beta_end, num_steps, dtype=np.float64)


def cosine_betas(num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999):
    """Nichol & Dhariwal (2021): alpha_bar(t) = cos^2(((t + s) / (1 + s)) pi / 2), betas capped."""
    f = lambda t: math.cos((t + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    betas = [min(1 - f((i + 1) / num_steps) / f(i / num_steps), max_beta) for i in range(num_steps)]
    return np.asarray(betas, np.float64)


@flax.struct.dataclass
class Schedule:
    """A VP schedule. Build it with ``discrete_schedule`` or ``linear_vp_schedule``.

    For discrete schedules ``t_array[n - 1] = n / N`` and ``log_alpha_array`` holds log alpha there;
    for ``linear_vp`` those arrays are empty and ``beta_0``, ``beta_1`` define the closed form.
    """

    t_array: jax.Array
    log_alpha_array: jax.Array
    beta_0: float = flax.struct.field(pytree_node=False, default=0.0)
    beta_1: float = flax.struct.field(pytree_node=False, default=0.0)
    continuous: bool = flax.struct.field(pytree_node=False, default=False)
    num_steps: int = flax.struct.field(pytree_node=False, default=0)

    # ------------------------------------------------------------------ the time grid
    @property
    def t_min(self) -> float:
        return 1e-3 if self.continuous else 1.0 / self.num_steps

    @property
    def t_max(self) -> float:
        return 1.0

    # ------------------------------------------------------------------ marginals
    def log_alpha(self, t) -> jax.Array:
        t = jnp.asarray(t, jnp.float32)
        if self.continuous:
            return -0.25 * t**2 * (self.beta_1 - self.beta_0) - 0.5 * t * self.beta_0
        return _interp(t, self.t_array, self.log_alpha_array)

    def alpha(self, t) -> jax.Array:
        return jnp.exp(self.log_alpha(t))

    def sigma(self, t) -> jax.Array:
        return jnp.sqrt(-jnp.expm1(2.0 * self.log_alpha(t)))

    def log_snr(self, t) -> jax.Array:
        """lambda(t) = log alpha - log sigma = log alpha - 0.5 log(1 - alpha^2)."""
        log_alpha = self.log_alpha(t)
        return log_alpha - 0.5 * jnp.log(-jnp.expm1(2.0 * log_alpha))

    def t_from_log_snr(self, lam) -> jax.Array:
        """The inverse of ``log_snr``: the time at which lambda(t) = lam."""
        lam = jnp.asarray(lam, jnp.float32)
        log_alpha = -0.5 * jnp.logaddexp(0.0, -2.0 * lam)
        if self.continuous:
            # Solve (b1 - b0)/4 t^2 + b0/2 t + log_alpha = 0 for t >= 0.
            a = 0.25 * (self.beta_1 - self.beta_0)
            b = 0.5 * self.beta_0
            return 2.0 * (-log_alpha) / (b + jnp.sqrt(b * b - 4.0 * a * log_alpha))
        # log alpha decreases with t: interpolate on the reversed arrays.
        return _interp(log_alpha, self.log_alpha_array[::-1], self.t_array[::-1])

    # ------------------------------------------------------------------ discrete steps
    def discrete_t(self, n) -> jax.Array:
        """Continuous time of discrete step ``n`` in ``0..N-1`` (0-based): ``(n + 1) / N``."""
        return (jnp.asarray(n, jnp.float32) + 1.0) / self.num_steps


def _interp(x, xp, fp):
    """Piecewise-linear interpolation that extrapolates linearly beyond the ends."""
    x = jnp.asarray(x, jnp.float32)
    idx = jnp.clip(jnp.searchsorted(xp, x, side="right") - 1, 0, xp.shape[0] - 2)
    x0, x1 = xp[idx], xp[idx + 1]
    y0, y1 = fp[idx], fp[idx + 1]
    return y0 + (x - x0) * (y1 - y0) / (x1 - x0)


def discrete_schedule(betas) -> Schedule:
    """A schedule from DDPM betas ``beta_1..beta_N`` (any sequence in (0, 1))."""
    betas = np.asarray(betas, np.float64)
    if betas.ndim != 1 or len(betas) < 2 or np.any(betas <= 0) or np.any(betas >= 1):
        raise ValueError(
            f"betas must be a 1-D sequence of at least 2 values in (0, 1); got shape "
            f"{betas.shape}, range [{betas.min() if betas.size else None}, "
            f"{betas.max() if betas.size else None}]"
        )
    n = len(betas)
    log_alpha = 0.5 * np.cumsum(np.log1p(-betas))
    t = np.arange(1, n + 1, dtype=np.float64) / n
    return Schedule(
        t_array=jnp.asarray(t, jnp.float32),
        log_alpha_array=jnp.asarray(log_alpha, jnp.float32),
        num_steps=n,
    )


def linear_vp_schedule(beta_0: float = 0.1, beta_1: float = 20.0) -> Schedule:
    """The continuous VP schedule of Song et al. (2021), in closed form."""
    if not 0 <= beta_0 < beta_1:
        raise ValueError(f"need 0 <= beta_0 < beta_1; got beta_0={beta_0}, beta_1={beta_1}")
    empty = jnp.zeros((0,), jnp.float32)
    return Schedule(empty, empty, beta_0=beta_0, beta_1=beta_1, continuous=True)


def make_schedule(kind: str = "linear", num_steps: int = 1000, betas=None, **kwargs) -> Schedule:
    """``kind`` in ``linear`` (1e-4..0.02), ``cosine`` (s=0.008), ``given`` (``betas``),
    ``linear_vp`` (beta_0=0.1, beta_1=20)."""
    if kind == "linear":
        return discrete_schedule(linear_betas(num_steps, **kwargs))
    if kind == "cosine":
        return discrete_schedule(cosine_betas(num_steps, **kwargs))
    if kind == "given":
        return discrete_schedule(betas)
    if kind == "linear_vp":
        return linear_vp_schedule(**kwargs)
    raise ValueError(f"schedule kind {kind!r} is not one of {KINDS}")
