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
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = [
    ("configs/vqvae_fashion_mnist.py", None, None),
    ("configs/vqvae_fashion_mnist.py", "loss", None),
    ("configs/vqvae_mnist.py", None, None),
    ("configs/pixelcnn_fashion_mnist.py", None, "configs/vqvae_fashion_mnist.py"),
    ("configs/pixelcnn_fashion_mnist.py", "cond", "configs/vqvae_fashion_mnist.py"),
]

CHILD = r"""
import functools, importlib.util, json, resource, sys, time
import jax, jax.numpy as jnp, numpy as np

def load(path, arg):
    spec = importlib.util.spec_from_file_location("cfg", path)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod.get_config(arg)

path, arg, first, seconds = sys.argv[1], sys.argv[2] or None, sys.argv[3], float(sys.argv[4])
config = load(path, arg)
if first:
    config.first_stage.config = load(first, None)
from jaxgen.families import get_family
family = get_family(config.family)
b = config.train.batch_size
rng = np.random.default_rng(0)
def batch(n=b):
    return {"image": rng.integers(0, 256, (n, *config.data.image_shape), dtype=np.uint8),
            "label": rng.integers(0, 10, (n,), dtype=np.int32),
            "index": np.arange(n, dtype=np.int32)}
state = family.init(config, jax.random.PRNGKey(0), batch())
step = jax.jit(functools.partial(family.train_step, config), donate_argnums=0)
t0 = time.perf_counter(); state, m = step(state, batch()); jax.block_until_ready(m)
compile_s = time.perf_counter() - t0
for _ in range(3):
    state, m = step(state, batch())
jax.block_until_ready(m)
batches = [batch() for _ in range(8)]
n, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < seconds:
    state, m = step(state, batches[n % 8]); n += 1
    if n % 8 == 0:
        jax.block_until_ready(m)
jax.block_until_ready(m)
dt = time.perf_counter() - t0
out = {"steps": n, "seconds": dt, "examples_per_s": n * b / dt, "batch": b,
       "compile_s": compile_s}
if first:
    num = 64
    sample = jax.jit(lambda s, r: family.sample(config, s, r, num))
    model = family.build_model(config)
    labels = jnp.arange(num) % 10 if config.model.num_classes else None
    h, w = 7, 7
    def bare(s):  # the sampler's h*w network calls, each on the previous one's output
        def body(c, p):
            logits = model.apply({"params": s.params}, c, labels)
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
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def run_case(path, arg, first, seconds) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, path, arg or "", first or "", str(seconds)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


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
