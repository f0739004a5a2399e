"""VAE training throughput (examples/s) and peak host memory, per config, on this machine.

    python bench/vae_throughput.py [--seconds 20] [--demo]

Each config runs in its own subprocess so that its peak resident memory (ru_maxrss) is its own.
A subprocess compiles the family's jitted train step, runs 3 warm-up steps, then as many steps as
fit in ``--seconds`` on random uint8 batches of the config's shape (data loading is not timed:
this measures the step). ``--demo`` also runs ``make demo-vae`` once and records its wall time and
the peak memory of its largest process. Results go to ``bench/results/vae_cpu.md``; compare the
ratios within one table, not absolute numbers across machines or runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import time

from _common import ROOT, run_child

# (config file, its argument: the data set and any variants)
CONFIGS = [
    ("configs/vae.py", "fashion_mnist,tiny"),
    ("configs/vae.py", "fashion_mnist,demo"),
    ("configs/vae.py", "fashion_mnist"),
    ("configs/vae.py", "mnist,tiny"),
    ("configs/vae.py", "mnist"),
]

CHILD = r"""
import json, sys
from _common import load_config, peak_rss_mb, time_train_step
config = load_config(sys.argv[1], sys.argv[2] or None)
_, out = time_train_step(config, float(sys.argv[3]))
print(json.dumps({**out, "peak_rss_mb": peak_rss_mb()}))
"""


def run_config(path: str, arg: str | None, seconds: float) -> dict:
    return run_child(CHILD, path, arg or "", str(seconds))


def run_demo() -> dict:
    t0 = time.perf_counter()
    subprocess.run(
        ["make", "demo-vae", "VAE_DEMO_DIR=runs/bench_demo"],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"wall_s": wall, "peak_rss_mb": peak}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--demo", action="store_true")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "vae_cpu.md"))
    args = parser.parse_args()
    rows = []
    for path, arg in CONFIGS:
        r = run_config(path, arg, args.seconds)
        name = f"{os.path.basename(path)}{':' + arg if arg else ''}"
        rows.append((name, r))
        print(name, json.dumps(r), flush=True)
    import jax

    lines = [
        "# VAE train-step throughput on CPU",
        "",
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, JAX {jax.__version__}",
        f"- date: {time.strftime('%Y-%m-%d')}; command: `python bench/vae_throughput.py "
        f"--seconds {args.seconds:g}{' --demo' if args.demo else ''}`",
        "",
        "| config | batch | examples/s | ms/step | compile s | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r['batch']} | {r['examples_per_s']:.0f} | "
            f"{1000 * r['seconds'] / r['steps']:.1f} | {r['compile_s']:.1f} | "
            f"{r['peak_rss_mb']:.0f} |"
        )
    if args.demo:
        d = run_demo()
        print("demo", json.dumps(d), flush=True)
        lines += [
            "",
            f"`make demo` (install already done): {d['wall_s']:.0f} s wall, "
            f"peak RSS of its largest process {d['peak_rss_mb']:.0f} MB.",
        ]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
