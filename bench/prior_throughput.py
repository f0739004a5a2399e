"""The priors over codes side by side: train throughput and sampling images/s, all at one batch.

    python bench/prior_throughput.py [--seconds 15] [--batch 64] [--tokenizer vqvae]

Each case runs in its own subprocess (so ``peak_rss_mb`` is its own) on the 7x7 code grid of
``configs/<tokenizer>.py:mnist`` with untrained (zero) tokenizer weights: neither the cost of a
step nor of a sampling call depends on their values. Train: the jitted step after 3 warm-up
steps, as many as fit in ``--seconds``, on random uint8 batches. Sampling: the best of 3 timed
calls of the family's ``sample`` for ``--batch`` class-conditional images (decoding included),
after one compiling call.

Cases: the gated PixelCNN (49 sequential full forwards), the GPT prior with its key-value cache
(49 one-position steps) and without it (49 full forwards, ``--cache=false``), GPT with
classifier-free guidance (the batch runs twice), and MaskGIT at 8 and 16 parallel steps.
Results: ``bench/results/priors_cpu.md``; compare ratios within one table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform

from _common import ROOT, run_child

# (label, config file, sample options)
CASES = [
    ("PixelCNN", "configs/pixelcnn.py", {}),
    ("GPT, cached", "configs/gpt.py", {}),
    ("GPT, uncached", "configs/gpt.py", {"cache": False}),
    ("GPT, cached, CFG w=2", "configs/gpt.py", {"scale": 2.0}),
    ("MaskGIT, 8 steps", "configs/maskgit.py", {"steps": 8}),
    ("MaskGIT, 16 steps", "configs/maskgit.py", {"steps": 16}),
]

CHILD = r"""
import importlib, json, sys, time
import jax
from _common import load_config, peak_rss_mb, time_train_step
path, tokenizer, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
seconds, batch = float(sys.argv[4]), int(sys.argv[5])
config = load_config(path, "mnist,cond")
config.first_stage.config = load_config(f"configs/{tokenizer}.py", "mnist")
config.train.batch_size = batch
state, out = time_train_step(config, seconds)
module = importlib.import_module(f"jaxgen.families.{config.family}")
sample = jax.jit(lambda s, r: module.sample(config, s, r, batch, **options).images)
t = time.perf_counter(); jax.block_until_ready(sample(state, jax.random.PRNGKey(0)))
out["sample_compile_s"] = time.perf_counter() - t
best = 1e9
for i in range(3):
    t = time.perf_counter(); jax.block_until_ready(sample(state, jax.random.PRNGKey(i + 1)))
    best = min(best, time.perf_counter() - t)
out["sample_s"] = best
out["images_per_s"] = batch / best
out["params"] = sum(x.size for x in jax.tree.leaves(state.model.params))
print(json.dumps({**out, "peak_rss_mb": peak_rss_mb()}))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--tokenizer", default="vqvae", choices=["vqvae", "vqgan"])
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "priors_cpu.md"))
    args = ap.parse_args()
    import jax

    lines = [
        "# Priors over codes: train throughput and sampling (CPU)",
        "",
        f"`python bench/prior_throughput.py --seconds {args.seconds:g} --batch {args.batch} "
        f"--tokenizer {args.tokenizer}` on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, JAX {jax.__version__}. Class-conditional priors on MNIST's "
        "7x7 grid of 512 codes; sampling includes decoding by the tokenizer.",
        "",
        "| prior | params | train examples/s | sample images/s | vs PixelCNN | sample s "
        "| sample compile s | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base = None
    for label, path, options in CASES:
        r = run_child(
            CHILD, path, args.tokenizer, json.dumps(options), str(args.seconds), str(args.batch)
        )
        print(label, json.dumps(r), flush=True)
        base = base or r["images_per_s"]
        lines.append(
            f"| {label} | {r['params'] / 1e6:.2f} M | {r['examples_per_s']:.0f} "
            f"| {r['images_per_s']:.1f} | {r['images_per_s'] / base:.2f} | {r['sample_s']:.3f} "
            f"| {r['sample_compile_s']:.1f} | {r['peak_rss_mb']:.0f} |"
        )
        with open(args.out, "w") as f:  # after every case: a cut run keeps what it measured
            f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
