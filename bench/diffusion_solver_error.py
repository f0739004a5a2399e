"""Solver error against NFE on two problems with a known answer.

    python bench/diffusion_solver_error.py [--quick] [--out PATH.md]

1. Gaussian data x0 ~ N(0, diag(s^2)) in 4 dimensions (s = 0.5, 1, 2, 0.3): the optimal noise
   prediction is ``eps(x, t) = sigma x / (alpha^2 s^2 + sigma^2)`` and the probability-flow ODE
   has the closed-form solution ``x_t = x_T * sqrt(alpha_t^2 s^2 + sigma_t^2) / sqrt(...)_T``.
2. A 2-D mixture of 8 Gaussians on a circle (radius 2, std 0.05): the noised marginal is again a
   mixture, so the optimal eps model is exact (``eps = -sigma * grad log p_t``); the reference
   is DPM-Solver-3 (singlestep) with 999 model calls.

Both use the discrete linear DDPM schedule (1000 steps), from t = 1 to t_min = 1e-3, 2,048
starting points. The number is the RMS distance between the solver's x and the reference x.
Writes ``bench/results/diffusion_solver_error.md`` (and ``.json``); ``--quick``: two solvers at
NFE 5 and 10, elsewhere.
"""

from __future__ import annotations

import functools
import time

import harness
import jax
import jax.numpy as jnp

from jaxgen.diffusion import make_schedule, sample

SCHEDULE = make_schedule("linear")
NFES = (5, 8, 10, 15, 20, 50, 100)
SOLVERS = [
    ("DDIM", dict(solver="ddim")),
    ("DPM-Solver-2 (singlestep)", dict(solver="dpm_solver", order=2, method="singlestep")),
    ("DPM-Solver-3 (singlestep)", dict(solver="dpm_solver", order=3, method="singlestep")),
    ("DPM-Solver-2 (multistep)", dict(solver="dpm_solver", order=2, method="multistep")),
    ("DPM-Solver-3 (multistep)", dict(solver="dpm_solver", order=3, method="multistep")),
    ("DPM-Solver++ 2S", dict(solver="dpm_solver++", order=2, method="singlestep")),
    ("DPM-Solver++ 2M", dict(solver="dpm_solver++", order=2, method="multistep")),
    ("DPM-Solver++ 3M", dict(solver="dpm_solver++", order=3, method="multistep")),
]


def gaussian_problem():
    std = jnp.array([0.5, 1.0, 2.0, 0.3])

    def eps(x, t):
        a, s = SCHEDULE.alpha(t)[:, None], SCHEDULE.sigma(t)[:, None]
        return s * x / (a**2 * std**2 + s**2)

    x_T = jax.random.normal(jax.random.PRNGKey(0), (2048, 4))
    scale = lambda t: jnp.sqrt(SCHEDULE.alpha(t) ** 2 * std**2 + SCHEDULE.sigma(t) ** 2)  # noqa: E731
    return eps, x_T, x_T * scale(SCHEDULE.t_min) / scale(1.0)


def mixture_problem(modes=8, radius=2.0, std=0.05):
    angles = 2 * jnp.pi * jnp.arange(modes) / modes
    means = radius * jnp.stack([jnp.cos(angles), jnp.sin(angles)], -1)  # [K, 2]

    def eps(x, t):
        a, s = SCHEDULE.alpha(t)[:, None, None], SCHEDULE.sigma(t)[:, None, None]
        var = a**2 * std**2 + s**2  # [B, 1, 1]
        diff = x[:, None, :] - a * means[None]  # [B, K, 2]
        logits = -0.5 * jnp.sum(diff**2, -1, keepdims=True) / var  # equal weights and variances
        w = jax.nn.softmax(logits, axis=1)
        score = -jnp.sum(w * diff, axis=1) / var[:, 0]
        return -s[:, 0] * score

    x_T = jax.random.normal(jax.random.PRNGKey(1), (2048, 2))
    ref = jax.jit(
        functools.partial(
            sample,
            eps,
            schedule=SCHEDULE,
            solver="dpm_solver",
            order=3,
            method="singlestep",
            steps=999,
        )
    )(x_T)
    return eps, x_T, ref


def table(name, problem, solvers=SOLVERS, nfes=NFES) -> tuple[list[str], dict]:
    """The table's lines for one problem, and its errors by solver."""
    eps, x_T, ref = problem
    rows = []
    for label, kwargs in solvers:
        errors = []
        for n in nfes:
            fn = jax.jit(functools.partial(sample, eps, schedule=SCHEDULE, steps=n, **kwargs))
            x = fn(x_T)
            errors.append(float(jnp.sqrt(jnp.mean(jnp.sum((x - ref) ** 2, -1)))))
        rows.append((label, errors))
        print(name, label, " ".join(f"{e:.2e}" for e in errors), flush=True)
    lines = [
        f"### {name}",
        "",
        "| solver | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
        "|---|" + "---:|" * len(nfes),
    ]
    for label, errors in rows:
        lines.append(f"| {label} | " + " | ".join(f"{e:.1e}" for e in errors) + " |")
    return lines, {"nfe": list(nfes), "rms_error": dict(rows)}


def main(argv=None) -> None:
    args = harness.parser(__doc__).parse_args(argv)
    solvers, nfes = (SOLVERS[:2], (5, 10)) if args.quick else (SOLVERS, NFES)
    t0 = time.time()
    lines = [
        "# Diffusion solver error against NFE",
        "",
        "RMS error of x at t_min against the reference (lower is better). Multistep solvers "
        "lower the order of the last steps below 15 steps (`lower_order_final`), as in "
        "sampling use.",
        "",
    ]
    figures = {}
    for name, problem in (
        ("Gaussian data (closed-form reference)", gaussian_problem),
        ("2-D mixture of 8 Gaussians (reference: DPM-Solver-3, 999 NFE)", mixture_problem),
    ):
        part, figures[name] = table(name, problem(), solvers, nfes)
        lines += part + [""]
    out = harness.out_path(args, "diffusion_solver_error")
    harness.write_results(out, "\n".join(lines), figures)
    print(f"wrote {out} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
