"""Diffusion samplers, each one whole solver inside a single ``lax.scan``.

``sample(model_fn, x_T, schedule, solver=..., steps=...)`` integrates from ``t_start`` (default
``schedule.t_max``) down to ``t_end`` (default ``schedule.t_min``) and returns ``x`` at ``t_end``
(or, with ``denoise_to_zero``, one last data prediction there). ``model_fn(x, t)`` takes ``t`` on
the schedule's continuous scale (a scalar or one per example) and predicts ``eps``, ``x0`` or
``v`` as ``prediction`` says.

Solvers and their model calls (NFE) for ``steps = N``:

| solver | updates | NFE |
|---|---|---|
| ``ddpm`` | ancestral: posterior mean + noise (variance ``beta_tilde`` or ``beta``) | N |
| ``ddim`` | Song et al. 2021, ``eta`` (0: deterministic, = DPM-Solver-1) | N |
| ``dpm_solver`` | Lu et al. 2022, noise prediction; ``order`` 1-3, single- or multistep | N |
| ``dpm_solver++`` | Lu et al. 2022b, data prediction: 2S, 2M, 3M | N |

``denoise_to_zero`` adds one call. Singlestep order ``k`` uses ``ceil(N / k)`` steps, the last of
lower order when ``k`` does not divide ``N``. Multistep solvers warm up (order 1, then 2, ...)
and, with ``lower_order_final`` and fewer than 15 steps, lower the order of the last steps so
that 10-step runs stay stable. Orders are chosen by ``jnp.where`` on the step index, never by a
Python branch on a traced value. The arithmetic is float32 whatever ``x_T`` and the model use.

Notation: one step goes from ``s`` (noisier) to ``t`` with ``h = lambda_t - lambda_s > 0``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.diffusion.predictions import PREDICTIONS, dynamic_threshold, to_eps, to_x0
from jaxgen.diffusion.schedules import Schedule

SOLVERS = ("ddpm", "ddim", "dpm_solver", "dpm_solver++")
SPACINGS = ("time_uniform", "logSNR", "time_quadratic")
METHODS = ("multistep", "singlestep")
_LOWER_ORDER_FINAL_BELOW = 15


def timesteps(
    schedule: Schedule, steps: int, spacing: str = "time_uniform", t_start=None, t_end=None
) -> jax.Array:
    """``steps + 1`` times from ``t_start`` down to ``t_end`` (float32)."""
    if not isinstance(steps, int | np.integer) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"timesteps: steps={steps!r} must be an integer >= 1")
    t_start = schedule.t_max if t_start is None else t_start
    t_end = schedule.t_min if t_end is None else t_end
    if spacing == "time_uniform":
        return jnp.linspace(t_start, t_end, steps + 1, dtype=jnp.float32)
    if spacing == "logSNR":
        lam = jnp.linspace(schedule.log_snr(t_start), schedule.log_snr(t_end), steps + 1)
        return schedule.t_from_log_snr(lam).astype(jnp.float32)
    if spacing == "time_quadratic":
        return jnp.linspace(t_start**0.5, t_end**0.5, steps + 1, dtype=jnp.float32) ** 2
    raise ValueError(f"spacing={spacing!r} is not one of {SPACINGS}")


def check_sampler_options(*, solver, method, order, steps, eta=0.0, prefix: str = "") -> None:
    """Raise ``ValueError`` (one line, naming the key as ``{prefix}key``) unless the options
    are a solver of ``SOLVERS``, a method of ``METHODS``, an int ``steps >= 1``, an ``order`` of
    1, 2 or 3, ``eta >= 0``, and not ``dpm_solver++`` singlestep of order 3 (which is not
    offered). ``prefix`` names the options' section, e.g. ``"sampler."`` for a config."""
    if solver not in SOLVERS:
        raise ValueError(f"{prefix}solver={solver!r} is not one of {SOLVERS}")
    if method not in METHODS:
        raise ValueError(f"{prefix}method={method!r} is not one of {METHODS}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"{prefix}steps={steps!r} must be an integer >= 1")
    if order not in (1, 2, 3) or isinstance(order, bool):
        raise ValueError(f"{prefix}order={order!r} is not one of (1, 2, 3)")
    if not eta >= 0:  # also rejects NaN
        raise ValueError(f"{prefix}eta={eta!r} must be >= 0")
    if solver == "dpm_solver++" and method == "singlestep" and order == 3:
        raise ValueError(
            f"{prefix}solver='dpm_solver++' with {prefix}method='singlestep' and "
            f"{prefix}order=3 is not offered; dpm_solver++ has 2S, 2M and 3M (use multistep)"
        )


class _Model:
    """Wraps ``model_fn`` to give float32 noise and data predictions at time ``t``."""

    def __init__(
        self, model_fn, schedule, prediction, thresholding, threshold_ratio, threshold_max
    ):
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction={prediction!r} is not one of {PREDICTIONS}")
        self.fn, self.schedule, self.prediction = model_fn, schedule, prediction
        self.thresholding = thresholding
        self.ratio, self.max = threshold_ratio, threshold_max

    def __call__(self, x, t):
        """``(eps, x0)`` predicted at ``(x, t)``: one model call."""
        batch_t = jnp.full((x.shape[0],), t, jnp.float32)
        out = self.fn(x, batch_t)
        if jnp.shape(out) != x.shape:
            raise ValueError(
                f"sample: model_fn(x, t) must return the shape of x {x.shape}, got "
                f"{jnp.shape(out)} (for t of shape {batch_t.shape})"
            )
        alpha, sigma = self.schedule.alpha(t), self.schedule.sigma(t)
        x0 = to_x0(out, x, alpha, sigma, self.prediction)
        if self.thresholding:
            x0 = dynamic_threshold(x0, self.ratio, self.max)
            return (x - alpha * x0) / sigma, x0
        return to_eps(out, x, alpha, sigma, self.prediction), x0


# --------------------------------------------------------------------------- one-step updates
def _first_order(x, eps, x0, s, t, schedule, data_prediction):
    """DPM-Solver-1 / DPM-Solver++(1): both equal deterministic DDIM."""
    h = schedule.log_snr(t) - schedule.log_snr(s)
    if data_prediction:
        return schedule.sigma(t) / schedule.sigma(s) * x - schedule.alpha(t) * jnp.expm1(-h) * x0
    return schedule.alpha(t) / schedule.alpha(s) * x - schedule.sigma(t) * jnp.expm1(h) * eps


def _multistep_update(x, outs, lams, t, order, schedule, data_prediction):
    """One multistep update to ``t`` of order 1, 2 or 3 (selected with ``jnp.where``).

    ``outs[0]`` is the newest model output (eps or x0) at ``lams[0]``, ``outs[1]``, ``outs[2]``
    the ones before. The order-2 and order-3 terms are the divided differences D1 and D2 of the
    papers' Taylor expansions in lambda.
    """
    lam_t = schedule.log_snr(t)
    h = lam_t - lams[0]
    r0 = (lams[0] - lams[1]) / h
    r1 = (lams[1] - lams[2]) / h
    d1_0 = (outs[0] - outs[1]) / r0
    d1_1 = (outs[1] - outs[2]) / r1
    d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
    d2 = (d1_0 - d1_1) / (r0 + r1)
    t_prev = schedule.t_from_log_snr(lams[0])
    if data_prediction:
        a_t = schedule.alpha(t)
        phi1 = jnp.expm1(-h)
        phi2 = phi1 / h + 1.0
        phi3 = phi2 / h - 0.5
        base = schedule.sigma(t) / schedule.sigma(t_prev) * x - a_t * phi1 * outs[0]
        x2 = base - 0.5 * a_t * phi1 * d1_0
        x3 = base + a_t * phi2 * d1 - a_t * phi3 * d2
    else:
        s_t = schedule.sigma(t)
        phi1 = jnp.expm1(h)
        phi2 = phi1 / h - 1.0
        phi3 = phi2 / h - 0.5
        base = schedule.alpha(t) / schedule.alpha(t_prev) * x - s_t * phi1 * outs[0]
        x2 = base - 0.5 * s_t * phi1 * d1_0
        x3 = base - s_t * phi2 * d1 - s_t * phi3 * d2
    return jnp.where(order >= 3, x3, jnp.where(order == 2, x2, base))


def _singlestep_update(model, x, eps_s, x0_s, s, t, order: int, schedule, data_prediction):
    """A singlestep update of static ``order`` (1, 2 or 3) from ``s`` to ``t``: ``order - 1``
    extra model calls at intermediate times spaced evenly in lambda."""
    if order == 1:
        return _first_order(x, eps_s, x0_s, s, t, schedule, data_prediction)
    lam_s, lam_t = schedule.log_snr(s), schedule.log_snr(t)
    h = lam_t - lam_s
    a, sg = schedule.alpha, schedule.sigma
    if order == 2:
        r1 = 0.5
        s1 = schedule.t_from_log_snr(lam_s + r1 * h)
        if data_prediction:
            u = sg(s1) / sg(s) * x - a(s1) * jnp.expm1(-r1 * h) * x0_s
            _, x0_1 = model(u, s1)
            return (
                sg(t) / sg(s) * x
                - a(t) * jnp.expm1(-h) * x0_s
                - 0.5 / r1 * a(t) * jnp.expm1(-h) * (x0_1 - x0_s)
            )
        u = a(s1) / a(s) * x - sg(s1) * jnp.expm1(r1 * h) * eps_s
        eps_1, _ = model(u, s1)
        return (
            a(t) / a(s) * x
            - sg(t) * jnp.expm1(h) * eps_s
            - 0.5 / r1 * sg(t) * jnp.expm1(h) * (eps_1 - eps_s)
        )
    if data_prediction:
        raise ValueError(
            "singlestep order 3 is offered for dpm_solver (noise prediction) only; "
            "use dpm_solver++ with method='multistep' for 3M"
        )
    r1, r2 = 1.0 / 3.0, 2.0 / 3.0
    s1 = schedule.t_from_log_snr(lam_s + r1 * h)
    s2 = schedule.t_from_log_snr(lam_s + r2 * h)
    u1 = a(s1) / a(s) * x - sg(s1) * jnp.expm1(r1 * h) * eps_s
    eps_1, _ = model(u1, s1)
    d1 = eps_1 - eps_s
    u2 = (
        a(s2) / a(s) * x
        - sg(s2) * jnp.expm1(r2 * h) * eps_s
        - sg(s2) * (r2 / r1) * (jnp.expm1(r2 * h) / (r2 * h) - 1.0) * d1
    )
    eps_2, _ = model(u2, s2)
    d2 = eps_2 - eps_s
    return (
        a(t) / a(s) * x - sg(t) * jnp.expm1(h) * eps_s - sg(t) / r2 * (jnp.expm1(h) / h - 1.0) * d2
    )


# --------------------------------------------------------------------------- whole solvers
def _ddim_or_ddpm(model, x, ts, schedule, solver, eta, ddpm_variance, rng, mean_shift=None):
    """DDIM (any eta) and DDPM ancestral sampling share a loop: one call per step."""
    keys = jax.random.split(rng, ts.shape[0] - 1)

    def body(x, inputs):
        s, t, key = inputs
        eps, x0 = model(x, s)
        a_s, a_t = schedule.alpha(s), schedule.alpha(t)
        sg_s, sg_t = schedule.sigma(s), schedule.sigma(t)
        noise = jax.random.normal(key, x.shape, jnp.float32)
        if solver == "ddim":
            # sigma_eta^2 = eta^2 (sigma_t^2 / sigma_s^2) (1 - alpha_s^2 / alpha_t^2 * ...)
            # written with alpha-bar = alpha^2: eta^2 (1 - abar_t)/(1 - abar_s)(1 - abar_s/abar_t)
            var = eta**2 * (sg_t**2 / sg_s**2) * (1.0 - (a_s / a_t) ** 2)
            var = jnp.clip(var, 0.0, sg_t**2)
            x_new = a_t * x0 + jnp.sqrt(sg_t**2 - var) * eps + jnp.sqrt(var) * noise
        else:
            alpha_ts2 = (a_s / a_t) ** 2  # 1 - beta of the transition t -> s
            beta_ts = 1.0 - alpha_ts2
            mean = (a_t * beta_ts / sg_s**2) * x0 + (jnp.sqrt(alpha_ts2) * sg_t**2 / sg_s**2) * x
            var = beta_ts * sg_t**2 / sg_s**2 if ddpm_variance == "beta_tilde" else beta_ts
            if mean_shift is not None:  # classifier guidance, DDPM form: mean + var * s * grad
                mean = mean + var * mean_shift(x, jnp.full((x.shape[0],), s, jnp.float32))
            x_new = mean + jnp.sqrt(var) * noise
        return x_new, None

    x, _ = jax.lax.scan(body, x, (ts[:-1], ts[1:], keys))
    return x


def multistep_orders(steps: int, order: int, lower_order_final: bool = True) -> jax.Array:
    """Order of each multistep update: warm-up ``1, 2, ..`` up to ``order``; with
    ``lower_order_final`` and fewer than 15 steps the last steps count down to 1 again."""
    i = jnp.arange(steps)
    orders = jnp.minimum(order, i + 1)
    if lower_order_final and steps < _LOWER_ORDER_FINAL_BELOW:
        orders = jnp.minimum(orders, steps - i)
    return orders


def _multistep(model, x, ts, schedule, order, data_prediction, lower_order_final):
    steps = ts.shape[0] - 1
    lam0 = schedule.log_snr(ts[0])
    # Distinct placeholder lambdas keep the unused divided differences finite during warm-up.
    carry = (x, jnp.zeros((3, *x.shape), jnp.float32), jnp.stack([lam0, lam0 - 1, lam0 - 2]))

    def body(carry, inputs):
        x, outs, lams = carry
        step_order, s, t = inputs
        eps, x0 = model(x, s)
        out = x0 if data_prediction else eps
        outs = jnp.concatenate([out[None], outs[:-1]])
        lams = jnp.concatenate([schedule.log_snr(s)[None], lams[:-1]])
        x = _multistep_update(x, outs, lams, t, step_order, schedule, data_prediction)
        return (x, outs, lams), None

    orders = multistep_orders(steps, order, lower_order_final)
    (x, _, _), _ = jax.lax.scan(body, carry, (orders, ts[:-1], ts[1:]))
    return x


def _singlestep_plan(steps: int, order: int) -> tuple[int, int]:
    """``(number of full-order steps, order of one final step or 0)`` using ``steps`` calls."""
    full, rest = divmod(steps, order)
    return full, rest


def _singlestep(model, x, schedule, order, data_prediction, spacing, t_start, t_end, steps):
    full, rest = _singlestep_plan(steps, order)
    ts = timesteps(schedule, full + (rest > 0), spacing, t_start, t_end)

    def body(x, inputs):
        s, t = inputs
        eps, x0 = model(x, s)
        return _singlestep_update(model, x, eps, x0, s, t, order, schedule, data_prediction), None

    x, _ = jax.lax.scan(body, x, (ts[:full], ts[1 : full + 1]))
    if rest:
        eps, x0 = model(x, ts[-2])
        x = _singlestep_update(model, x, eps, x0, ts[-2], ts[-1], rest, schedule, data_prediction)
    return x


def sample(
    model_fn,
    x_T: jax.Array,
    schedule: Schedule,
    *,
    solver: str = "dpm_solver++",
    steps: int = 20,
    order: int = 2,
    method: str = "multistep",
    eta: float = 0.0,
    ddpm_variance: str = "beta_tilde",
    spacing: str | None = None,
    t_start: float | None = None,
    t_end: float | None = None,
    lower_order_final: bool = True,
    denoise_to_zero: bool = False,
    thresholding: bool = False,
    threshold_ratio: float = 0.995,
    threshold_max: float = 1.0,
    prediction: str = "eps",
    rng: jax.Array | None = None,
    mean_shift=None,
) -> jax.Array:
    """Run one solver from ``x_T`` at ``t_start`` to ``t_end``; see the module docstring.

    ``spacing`` defaults to ``logSNR`` for DPM-Solver(++) and ``time_uniform`` for DDPM/DDIM.
    ``rng`` is required by ``ddpm`` and by ``ddim`` with ``eta > 0``.
    ``mean_shift(x, t)`` (``ddpm`` only) is added to each posterior mean times its variance: the
    DDPM form of classifier guidance (``guidance.classifier_mean_shift``).
    Returns float32 ``x`` with the shape of ``x_T``.
    """
    check_sampler_options(solver=solver, method=method, order=order, steps=steps, eta=eta)
    if jnp.ndim(x_T) < 1:
        raise ValueError(f"sample: x_T must be [B, ...], got shape {jnp.shape(x_T)}")
    stochastic = solver == "ddpm" or (solver == "ddim" and eta > 0)
    if stochastic and rng is None:
        raise ValueError(f"solver={solver!r} (eta={eta}) is stochastic: pass rng=")
    if mean_shift is not None and solver != "ddpm":
        raise ValueError(f"mean_shift is the ddpm solver's form of guidance, not {solver!r}'s")
    if ddpm_variance not in ("beta_tilde", "beta"):
        raise ValueError(f"ddpm_variance={ddpm_variance!r} is not 'beta_tilde' or 'beta'")
    if spacing is None:
        spacing = "logSNR" if solver.startswith("dpm_solver") else "time_uniform"
    model = _Model(model_fn, schedule, prediction, thresholding, threshold_ratio, threshold_max)
    x = x_T.astype(jnp.float32)
    t_end_value = schedule.t_min if t_end is None else t_end

    if solver in ("ddpm", "ddim"):
        ts = timesteps(schedule, steps, spacing, t_start, t_end)
        rng = jax.random.PRNGKey(0) if rng is None else rng
        x = _ddim_or_ddpm(model, x, ts, schedule, solver, eta, ddpm_variance, rng, mean_shift)
    elif method == "multistep":
        ts = timesteps(schedule, steps, spacing, t_start, t_end)
        x = _multistep(model, x, ts, schedule, order, solver == "dpm_solver++", lower_order_final)
    else:
        x = _singlestep(
            model, x, schedule, order, solver == "dpm_solver++", spacing, t_start, t_end, steps
        )
    if denoise_to_zero:
        _, x = model(x, jnp.float32(t_end_value))
    return x


def nfe(steps: int, denoise_to_zero: bool = False) -> int:
    """Model calls that ``sample`` makes: ``steps`` for every solver, plus one to denoise."""
    return steps + int(denoise_to_zero)
