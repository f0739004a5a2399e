"""GAN train-step throughput (both players), the critic loop as one ``lax.scan`` against
``n_critic`` separate jitted calls, and peak memory, on this machine.

    python bench/gan_throughput.py [--seconds 15]

Each case runs in its own subprocess (so ``peak_rss_mb`` is its own) on random uint8 batches of
MNIST's shape: the recipe's one jitted step (``n_critic`` critic updates in a ``lax.scan``, then
the generator update), timed over as many steps as fit in ``--seconds`` after 3 warm-up steps;
then the same step as a Python loop of ``n_critic`` jitted ``discriminator_update`` calls and one
jitted ``generator_update`` call on the same batches. "images/s" counts the real images the
critic sees (``n_critic * batch`` per step). Results: ``bench/results/gan_cpu.md``; compare
ratios within one table, not across machines or runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform

from _common import ROOT, run_child

CASES = [
    ("dcgan", 64),
    ("dcgan", 256),
    ("wgan", 64),
    ("wgan_gp", 64),
    ("wgan_gp", 256),
]

CHILD = r"""
import json, sys, time
import jax, jax.numpy as jnp, numpy as np
from _common import load_config, peak_rss_mb
from jaxgen.families import gan
from jaxgen.families.common import to_model_range
variant, batch, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
config = load_config("configs/gan.py", f"mnist,{variant}")
config.train.batch_size = batch
n = config.gan.n_critic
rng = np.random.default_rng(0)
batches = [to_model_range(jnp.asarray(rng.integers(0, 256, (n, batch, 28, 28, 1), np.uint8)))
           for _ in range(4)]
state = gan.init(config, jax.random.PRNGKey(0))
step = jax.jit(lambda s, r: gan.adversarial_step(config, s, r), donate_argnums=0)
d_up = jax.jit(lambda s, r, k: gan.discriminator_update(config, s, r, k))
g_up = jax.jit(lambda s, k: gan.generator_update(config, s, batch, k))

def looped(s, r):
    key = s.step_key()
    for j in range(n):
        disc, _ = d_up(s, r[j], jax.random.fold_in(key, j))
        s = s.replace(players={**s.players, "discriminator": disc})
    gen, stats, m = g_up(s, jax.random.fold_in(key, n))
    extra = s.extra if stats is None else {**s.extra, "generator_stats": stats}
    return s.advance(generator=gen).replace(extra=extra), m

def timed(fn, s):
    t0 = time.perf_counter()
    s, m = fn(s, batches[0]); jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    for i in range(3):
        s, m = fn(s, batches[i % 4])
    jax.block_until_ready(m)
    k, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        s, m = fn(s, batches[k % 4]); k += 1
    jax.block_until_ready(m)
    return s, k / (time.perf_counter() - t0), compile_s

state, scan_steps, compile_s = timed(step, state)
_, loop_steps, _ = timed(looped, state)
print(json.dumps({"steps_per_s": scan_steps, "loop_steps_per_s": loop_steps,
                  "images_per_s": scan_steps * n * batch, "compile_s": compile_s,
                  "n_critic": n, "peak_rss_mb": peak_rss_mb()}))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "gan_cpu.md"))
    args = ap.parse_args()
    import jax

    lines = [
        "# GAN train steps: throughput, the critic scan against separate calls, memory (CPU)",
        "",
        f"`python bench/gan_throughput.py --seconds {args.seconds:g}` on "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"JAX {jax.__version__}. MNIST-shaped random batches; a step is n_critic critic updates "
        "and one generator update.",
        "",
        "| recipe | batch | n_critic | steps/s (scan) | steps/s (separate calls) | scan / separate "
        "| real images/s | compile s | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for variant, batch in CASES:
        r = run_child(CHILD, variant, str(batch), str(args.seconds))
        print(variant, batch, json.dumps(r), flush=True)
        lines.append(
            f"| {variant} | {batch} | {r['n_critic']} | {r['steps_per_s']:.2f} "
            f"| {r['loop_steps_per_s']:.2f} | {r['steps_per_s'] / r['loop_steps_per_s']:.2f} "
            f"| {r['images_per_s']:.0f} | {r['compile_s']:.1f} | {r['peak_rss_mb']:.0f} |"
        )
    lines += [
        "",
        "The critic loop is one fully unrolled `lax.scan` (`unroll=True`), and a direct call when",
        "n_critic is 1. A rolled scan is a while loop in XLA, and on this CPU backend conv",
        "updates inside one ran far slower: WGAN at batch 64 at 0.15 steps/s against 1.31 for",
        "separate calls (0.11x, 2026-12-02), and DCGAN at batch 64 at 0.89 against 6.84 (0.13x,",
        "2026-12-03: JAX 0.10 lowers a scan of length one to a while loop even with",
        "`unroll=True`). Unrolled, scan and separate calls match (the scan / separate column).",
    ]
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
