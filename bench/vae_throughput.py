"""VAE training throughput (examples/s) and peak host memory, per config, on this machine.

    python bench/vae_throughput.py [--seconds 20] [--demo] [--quick] [--out PATH.md]

Each config runs in its own subprocess (``harness.run_in_child``) so that its peak resident
memory is its own. The subprocess compiles the family's jitted train step, runs 3 warm-up steps,
then repeats of 8 steps for at least ``--seconds`` on random uint8 batches of the config's shape
(data loading is not timed: this measures the step); examples/s is at the median repeat.
``--demo`` also runs ``make demo-vae`` once and records its wall time and the peak memory of its
largest process. Results go to ``bench/results/vae_cpu.md`` (and ``.json``); compare the ratios
within one table, not absolute numbers across machines or runs.
"""

from __future__ import annotations

import subprocess
import time

import harness

# (config file, its argument: the data set and any variants)
CONFIGS = [
    ("vae", "fashion_mnist,tiny"),
    ("vae", "fashion_mnist,demo"),
    ("vae", "fashion_mnist"),
    ("vae", "mnist,tiny"),
    ("vae", "mnist"),
]
QUICK = [("vae", "mnist,tiny")]


def train_case(config: str, arg: str, seconds: float, repeats: int = 5) -> dict:
    """The train step's throughput for ``configs/<config>.py:<arg>``."""
    _, out = harness.time_train_step(harness.load_config(config, arg), seconds, repeats=repeats)
    return out


def demo_case() -> dict:
    """Wall time of ``make demo-vae`` (the peak memory is its largest process's)."""
    t0 = time.perf_counter()
    subprocess.run(
        ["make", "demo-vae", "VAE_DEMO_DIR=runs/bench_demo"],
        cwd=harness.ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return {"wall_s": time.perf_counter() - t0}


def main(argv=None) -> None:
    ap = harness.parser(__doc__)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--demo", action="store_true")
    args = ap.parse_args(argv)
    seconds, repeats = (0.0, 2) if args.quick else (args.seconds, 5)
    rows = []
    for config, arg in QUICK if args.quick else CONFIGS:
        r = harness.run_in_child(
            train_case, config=config, arg=arg, seconds=seconds, repeats=repeats
        )
        rows.append({"config": f"{config}.py:{arg}", **r})
        print(rows[-1], flush=True)
    lines = [
        "# VAE train-step throughput on CPU",
        "",
        f"Random uint8 batches of each config's shape (data loading not timed); examples/s at the "
        f"median of repeats of 8 steps over at least {seconds:g} s, spread (max - min) / median.",
        "",
        "| config | batch | examples/s | ms/step | spread | compile s | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['batch']} | {r['examples_per_s']:.0f} | "
            f"{r['ms_per_step']:.1f} | {r['spread']:.2f} | {r['compile_s']:.1f} | "
            f"{r['peak_rss_mb']:.0f} |"
        )
    demo = None
    if args.demo:
        demo = harness.run_in_child(demo_case)
        print("demo", demo, flush=True)
        lines += [
            "",
            f"`make demo` (install already done): {demo['wall_s']:.0f} s wall, "
            f"peak RSS of its largest process {demo['peak_rss_mb']:.0f} MB.",
        ]
    out = harness.out_path(args, "vae_cpu")
    harness.write_results(out, "\n".join(lines), {"rows": rows, "demo": demo})
    print("wrote", out)


if __name__ == "__main__":
    main()
