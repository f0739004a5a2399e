"""VQ-VAE and PixelCNN-prior training throughput, and prior sampling cost, on this machine.

    python bench/vqvae_throughput.py [--seconds 20]

Each case runs in its own subprocess (so ``peak_rss_mb`` is its own): it compiles the family's
jitted train step, runs 3 warm-up steps, then as many steps as fit in ``--seconds`` on random
uint8 batches of the config's shape (data loading is not timed). The prior cases build the
prior on the VQ-VAE config of the same data set, with untrained (zero) first-stage weights:
the cost of a step does not depend on their values.

For the prior it also times generating 64 images (7x7 = 49 positions, one network call each, as
one ``lax.scan``) against the same 49 network calls on a fixed grid in a ``lax.scan``: the
ratio is what the sampler adds over its network calls. Results:
``bench/results/vqvae_cpu.md``; compare ratios within one table, not across machines or runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform

from _common import ROOT, run_child

# (config file, its argument, the first stage's (config file, argument) for a prior)
CASES = [
    ("configs/vqvae.py", "fashion_mnist", None),
    ("configs/vqvae.py", "fashion_mnist,loss", None),
    ("configs/vqvae.py", "mnist", None),
    ("configs/pixelcnn.py", "fashion_mnist", ("configs/vqvae.py", "fashion_mnist")),
    ("configs/pixelcnn.py", "fashion_mnist,cond", ("configs/vqvae.py", "fashion_mnist")),
]

CHILD = r"""
import importlib, json, sys, time
import jax, jax.numpy as jnp
from _common import load_config, peak_rss_mb, time_train_step
from jaxgen.families import tokenizers
path, arg, first_path, first_arg = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
seconds = float(sys.argv[5])
config = load_config(path, arg)
if first_path:
    # What the engine copies from the tokenizer run; its parameters stay zeros (State.frozen).
    config.first_stage.config = load_config(first_path, first_arg)
state, out = time_train_step(config, seconds)
if first_path:
    module = importlib.import_module(f"jaxgen.families.{config.family}")
    num = 64
    sample = jax.jit(lambda s, r: module.sample(config, s, r, num).images)
    model = module.build_model(config)
    labels = jnp.arange(num) % 10 if config.model.num_classes else None
    h, w = tokenizers.tokenizer_of(config).grid_shape
    def bare(s):  # the sampler's h*w network calls, each on the previous one's output
        def body(c, p):
            logits = model.apply({"params": s.model.params}, c, labels)
            return c.at[:, 0, 0].set(jnp.argmax(logits[:, 0, 0], -1)), None
        return jax.lax.scan(body, jnp.zeros((num, h, w), jnp.int32), jnp.arange(h * w))[0]
    bare = jax.jit(bare)
    def timed(fn, *a, reps=5):
        jax.block_until_ready(fn(*a))
        best = 1e9
        for _ in range(reps):
            t = time.perf_counter(); jax.block_until_ready(fn(*a))
            best = min(best, time.perf_counter() - t)
        return best
    out["sample64_s"] = timed(sample, state, jax.random.PRNGKey(1))
    out["bare49_s"] = timed(bare, state)
    out["sampler_over_bare"] = out["sample64_s"] / out["bare49_s"]
print(json.dumps({**out, "peak_rss_mb": peak_rss_mb()}))
"""


def run_case(path, arg, first, seconds) -> dict:
    first_path, first_arg = first or ("", "")
    return run_child(CHILD, path, arg, first_path, first_arg, str(seconds))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "vqvae_cpu.md"))
    args = ap.parse_args()
    import jax

    rows = []
    for path, arg, first in CASES:
        r = run_case(path, arg, first, args.seconds)
        name = f"{os.path.basename(path)}" + (f":{arg}" if arg else "")
        rows.append((name, r))
        print(name, json.dumps(r), flush=True)
    lines = [
        "# VQ-VAE and PixelCNN prior: train throughput and prior sampling (CPU)",
        "",
        f"`python bench/vqvae_throughput.py --seconds {args.seconds:g}` on "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"JAX {jax.__version__}. Random uint8 batches (data loading not timed).",
        "",
        "| config | batch | examples/s | compile s | peak RSS MB | 64 samples s | 49 bare calls s "
        "| sampler / bare |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        extra = (
            f"{r['sample64_s']:.3f} | {r['bare49_s']:.3f} | {r['sampler_over_bare']:.2f}"
            if "sample64_s" in r
            else "- | - | -"
        )
        lines.append(
            f"| {name} | {r['batch']} | {r['examples_per_s']:.0f} | {r['compile_s']:.1f} | "
            f"{r['peak_rss_mb']:.0f} | {extra} |"
        )
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
