"""How far each solver lands from a high-accuracy solution of the same probability-flow ODE,
with a trained diffusion model: the trained-model counterpart of ``diffusion_solver_error.py``.

    python bench/diffusion_trained_solvers.py --workdir runs/diff_fashion [--num 100]

Every deterministic solver starts from the same ``x_T`` (same seed); the reference is
DPM-Solver++ 3M with 200 steps. Distances are RMS over pixels in [0, 1] units, after each
sampler's final denoising step (as ``sample.py`` writes them). Writes
``bench/results/diffusion_trained_solvers.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jaxgen.engine import loop  # noqa: E402

RUNS = [
    ("ddim", "multistep", 1, 10),
    ("ddim", "multistep", 1, 20),
    ("ddim", "multistep", 1, 50),
    ("dpm_solver++", "multistep", 2, 10),
    ("dpm_solver++", "multistep", 2, 20),
    ("dpm_solver++", "multistep", 3, 10),
    ("dpm_solver++", "multistep", 3, 20),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--num", type=int, default=100)
    args = ap.parse_args()
    setup, state = loop.restore_for_inference(args.workdir)
    family, config = setup.family, setup.config

    def run(solver, method, order, steps):
        @jax.jit
        def fn(s, r):
            return family.sample(
                config, s, r, args.num, steps=steps, solver=solver, method=method, order=order
            ).images

        t0 = time.perf_counter()
        out = np.asarray(fn(state, jax.random.PRNGKey(0)))
        return out, time.perf_counter() - t0

    ref, _ = run("dpm_solver++", "multistep", 3, 200)
    lines = [
        f"# Solvers on a trained model: {args.workdir} (step {int(state.step)})",
        "",
        f"`python bench/diffusion_trained_solvers.py --workdir {args.workdir} --num {args.num}`,"
        f" {time.strftime('%Y-%m-%d')}. RMS distance in [0, 1] pixel units to DPM-Solver++ 3M "
        "with 200 steps, from the same x_T; one extra denoising call at the end of each.",
        "",
        "| solver | steps (model calls) | RMS distance to the reference |",
        "|---|---:|---:|",
    ]
    for solver, method, order, steps in RUNS:
        out, _ = run(solver, method, order, steps)
        name = "DDIM" if solver == "ddim" else f"DPM-Solver++ {order}M"
        rms = float(np.sqrt(np.mean((out - ref) ** 2)))
        lines.append(f"| {name} | {steps} | {rms:.4f} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    with open(os.path.join(ROOT, "bench", "results", "diffusion_trained_solvers.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
