"""Soak test of preemption: a long tiny run stopped again and again, its end compared with an
unbroken run's.

    python bench/soak.py [--cycles 24] [--steps 50000] [--kill-share 0.3] [--seed 0]

``train.py`` runs the tiny VAE on procedural shapes in a subprocess; after a random wait it gets
SIGTERM (it should save and exit 0) or, with probability ``--kill-share``, SIGKILL (``kill -9``:
no save; the next start resumes from the newest complete checkpoint and drops the metric rows
written after it). This repeats until ``--cycles`` interruptions have landed, then the run is
left to finish.
Its final parameters must equal, bit for bit, those of the same config trained without a break.
Writes ``bench/results/soak_cpu.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _args(workdir: str, steps: int) -> list[str]:
    return [
        sys.executable,
        os.path.join(ROOT, "train.py"),
        "--config=configs/vae.py:mnist,tiny",
        f"--workdir={workdir}",
        "--config.data.source=shapes",
        "--config.data.image_shape=(16, 16, 1)",
        "--config.data.num_train=512",
        f"--config.train.num_steps={steps}",
        "--config.train.checkpoint_every=50",
        "--config.train.log_every=25",
        "--config.train.keep_checkpoints=2",
    ]


def _final_params(workdir: str) -> list[np.ndarray]:
    import jax

    from jaxgen.engine import loop

    _, state = loop.restore_for_inference(workdir)
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=24)
    ap.add_argument("--steps", type=int, default=50_000)
    ap.add_argument("--kill-share", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "soak_cpu.md"))
    args = ap.parse_args()
    rng = random.Random(args.seed)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="jaxgen-soak-xla-"))
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    base = tempfile.mkdtemp(prefix="jaxgen-soak-")
    straight, broken = os.path.join(base, "straight"), os.path.join(base, "broken")

    t0 = time.time()
    subprocess.run(_args(straight, args.steps), cwd=ROOT, env=env, check=True, capture_output=True)
    straight_s = time.time() - t0

    counts = {"SIGTERM": 0, "SIGKILL": 0, "finished before the signal": 0}
    bad_exits = []
    t0 = time.time()
    cycle = 0
    while counts["SIGTERM"] + counts["SIGKILL"] < args.cycles:
        cycle += 1
        proc = subprocess.Popen(
            _args(broken, args.steps),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(rng.uniform(1.5, 7.0))  # start-up (imports, compile) is part of the target
        kind = signal.SIGKILL if rng.random() < args.kill_share else signal.SIGTERM
        if proc.poll() is None:
            proc.send_signal(kind)
            counts[kind.name] += 1
        else:
            counts["finished before the signal"] += 1
        out, err = proc.communicate(timeout=300)
        if kind == signal.SIGTERM and proc.returncode != 0:
            bad_exits.append((cycle, proc.returncode, err.strip().splitlines()[-1:]))
        if "finished" in out and "stopped early" not in out:
            break
    final = subprocess.run(
        _args(broken, args.steps), cwd=ROOT, env=env, capture_output=True, text=True
    )
    broken_s = time.time() - t0
    if final.returncode != 0:
        raise SystemExit(f"the last resume failed: {final.stderr[-2000:]}")

    a, b = _final_params(straight), _final_params(broken)
    equal = len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    with open(os.path.join(broken, "metrics.jsonl")) as f:
        steps = [json.loads(line)["step"] for line in f if '"train"' in line]
    duplicates = len(steps) - len(set(steps))
    interrupted = counts["SIGTERM"] + counts["SIGKILL"]
    lines = [
        "# Preemption soak (tiny VAE on shapes, CPU)",
        "",
        f"`python bench/soak.py --cycles {args.cycles} --steps {args.steps} "
        f"--kill-share {args.kill_share} --seed {args.seed}`",
        "",
        "| | |",
        "|---|---:|",
        f"| training steps | {args.steps} |",
        f"| interruptions survived | {interrupted} |",
        f"| of them SIGTERM (save, exit 0) | {counts['SIGTERM']} |",
        f"| of them SIGKILL (`kill -9`, no save) | {counts['SIGKILL']} |",
        f"| SIGTERM exits other than 0 | {len(bad_exits)} |",
        f"| duplicate train rows in metrics.jsonl | {duplicates} |",
        f"| final parameters equal an unbroken run's, bit for bit | {'yes' if equal else 'NO'} |",
        f"| wall time: unbroken / interrupted | {straight_s:.0f} s / {broken_s:.0f} s |",
        "",
    ]
    if bad_exits:
        lines += ["Non-zero exits after SIGTERM: " + repr(bad_exits), ""]
    text = "\n".join(lines)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)
    if not equal or bad_exits or duplicates:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
