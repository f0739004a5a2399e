"""VQ-GAN train-step throughput (both players) and peak memory, beside the VQ-VAE's, and what the
one-pass adaptive weight saves over the direct way of computing it.

    python bench/vqgan_throughput.py [--seconds 15]

Each case runs in its own subprocess (so ``peak_rss_mb`` is its own) on random uint8 batches of
MNIST's shape, timed over as many steps as fit in ``--seconds`` after 3 warm-up steps:

- ``vqvae``: the VQ-VAE's step (configs/vqvae.py), for reference;
- ``l1``: the VQ-GAN's networks with an L1 loss only (no LPIPS, no discriminator);
- ``l1+lpips``: L1 + LPIPS on VGG16 at 32x32 (``:noadv``);
- ``l1+lpips, D trains``: the same, with the PatchGAN's update (``disc_start`` passed,
  ``adv_start`` not yet): what the discriminator's own step costs;
- ``full``: the whole step after ``adv_start``: L1 + LPIPS, the adaptive adversarial term and the
  PatchGAN update;
- ``full, direct lambda``: the same, but the adaptive weight computed the direct way, as a port
  of taming-transformers' ``torch.autograd.grad`` calls would: the gradients of ``L_rec`` and
  ``L_adv`` on the last layer by two extra backward passes through the whole network, then the
  total loss differentiated again (``jaxgen.families.vqgan`` takes both from one pass);
- ``full, LPIPS at 64``: LPIPS on 64x64 upsampled images instead of 32x32.

Results: ``bench/results/vqgan_cpu.md``; compare ratios within one table, not across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform

from _common import ROOT, run_child

CASES = [
    ("vqvae", 64),
    ("l1", 64),
    ("l1+lpips", 64),
    ("l1+lpips, D trains", 64),
    ("full", 64),
    ("full, direct lambda", 64),
    ("full, LPIPS at 64", 64),
    ("full", 256),
]

CHILD = r"""
import json, sys, time
import jax, jax.numpy as jnp, numpy as np
from _common import load_config, peak_rss_mb
from jaxgen import quantize as vq
from jaxgen.families import vqgan, vqvae
from jaxgen.losses import gan as gan_losses
case, batch, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
if case == "vqvae":
    config, family = load_config("configs/vqvae.py", "mnist"), vqvae
else:
    config, family = load_config("configs/vqgan.py", "mnist"), vqgan
    config.vqgan.disc_start = config.vqgan.adv_start = 0
    if case == "l1":
        config.vqgan.perceptual_weight = 0.0
        config.vqgan.disc_weight = 0.0
    if case == "l1+lpips":
        config.vqgan.disc_weight = 0.0
    if case == "l1+lpips, D trains":
        config.vqgan.adv_start = 10**9
    if case == "full, LPIPS at 64":
        config.vqgan.lpips_size = 64
config.train.batch_size = batch
rng = np.random.default_rng(0)
batches = [{"image": jnp.asarray(rng.integers(0, 256, (batch, 28, 28, 1), np.uint8)),
            "label": jnp.zeros((batch,), jnp.int32), "index": jnp.arange(batch)}
           for _ in range(4)]
state = family.init(config, jax.random.PRNGKey(0), batches[0])

def direct_grads(config, state, x):
    params = state.players["model"].params
    d_params = state.players["discriminator"].params
    cb = state.extra.ema.codebook

    def parts(p):
        z_e = vqgan.encode(config, p, x)
        q = vq.quantize(z_e, cb)
        x_hat = vqgan.decode(config, p, q.z_q)
        rec, rec_parts = vqgan.reconstruction_loss(config, state.frozen, x_hat, x)
        logits = vqgan._logits(config, d_params, x_hat)
        adv = gan_losses.generator_loss(config.vqgan.gan_loss, logits)
        commit = vq.commitment_loss(z_e, q.codes, beta=config.vq.beta)
        return rec, adv, commit, (z_e, q.indices, x_hat, rec_parts)

    g_rec = jax.grad(lambda p: parts(p)[0])(params)["conv_out"]["kernel"]
    g_adv = jax.grad(lambda p: parts(p)[1])(params)["conv_out"]["kernel"]
    lam = vqgan.adaptive_weight(config, g_rec, g_adv)

    def total(p):
        rec, adv, commit, aux = parts(p)
        return rec + lam * adv + commit, (aux, adv)

    grads, ((z_e, idx, x_hat, rec_parts), adv) = jax.grad(total, has_aux=True)(params)
    metrics = {**rec_parts, "d_weight": lam, "g_loss": adv,
               "perplexity": vq.perplexity(idx, config.vq.num_codes)}
    return grads, (metrics, z_e, idx, x_hat)

if case == "full, direct lambda":
    vqgan.autoencoder_grads = direct_grads
step = jax.jit(lambda s, b: family.train_step(config, s, b), donate_argnums=0)
t0 = time.perf_counter()
state, m = step(state, batches[0]); jax.block_until_ready(m)
compile_s = time.perf_counter() - t0
for i in range(3):
    state, m = step(state, batches[i % 4])
jax.block_until_ready(m)
k, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < seconds:
    state, m = step(state, batches[k % 4]); k += 1
jax.block_until_ready(m)
steps = k / (time.perf_counter() - t0)
n_params = sum(x.size for x in jax.tree.leaves(state.players["model"].params))
n_d = (sum(x.size for x in jax.tree.leaves(state.players["discriminator"].params))
       if "discriminator" in state.players else 0)
print(json.dumps({"steps_per_s": steps, "images_per_s": steps * batch, "compile_s": compile_s,
                  "params": n_params, "d_params": n_d, "peak_rss_mb": peak_rss_mb()}))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "vqgan_cpu.md"))
    args = ap.parse_args()
    import jax

    lines = [
        "# VQ-GAN train steps: throughput and memory beside the VQ-VAE's (CPU)",
        "",
        f"`python bench/vqgan_throughput.py --seconds {args.seconds:g}` on "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"JAX {jax.__version__}. MNIST-shaped random batches (see the script's docstring).",
        "",
        "| case | batch | steps/s | images/s | images/s vs VQ-VAE | compile s | params (G / D) "
        "| peak RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base = None
    for case, batch in CASES:
        r = run_child(CHILD, case, str(batch), str(args.seconds))
        print(case, batch, json.dumps(r), flush=True)
        if case == "vqvae":
            base = r["images_per_s"]
        ratio = f"{r['images_per_s'] / base:.2f}" if base else ""
        lines.append(
            f"| {case} | {batch} | {r['steps_per_s']:.2f} | {r['images_per_s']:.0f} | {ratio} "
            f"| {r['compile_s']:.1f} | {r['params'] / 1e6:.2f} M / {r['d_params'] / 1e6:.2f} M "
            f"| {r['peak_rss_mb']:.0f} |"
        )
        with open(args.out, "w") as f:  # after every case: a cut run keeps what it measured
            f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
