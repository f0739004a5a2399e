"""VQ-GAN train-step throughput (both players) and peak memory, beside the VQ-VAE's, and what the
one-pass adaptive weight saves over the direct way of computing it.

    python bench/vqgan_throughput.py [--seconds 15] [--quick] [--out PATH.md]

Each case runs in its own subprocess (``harness.run_in_child``, so ``peak_rss_mb`` is its own) on
random uint8 batches of MNIST's shape, timed by ``harness.time_calls`` (3 warm-up steps, then
repeats for at least ``--seconds``; steps/s at the median):

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

Results: ``bench/results/vqgan_cpu.md`` (and ``.json``); compare ratios within one table, not
across runs.
"""

from __future__ import annotations

import harness

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
QUICK = [("vqvae", 8), ("l1", 8), ("full, direct lambda", 8)]


def direct_grads(config, state, x):
    """The autoencoder's gradients with the adaptive weight computed the direct way: the
    gradients of ``L_rec`` and ``L_adv`` on the last layer by two extra backward passes, then
    the total loss differentiated again (what ``vqgan.autoencoder_grads`` does in one pass)."""
    import jax

    from jaxgen import quantize as vq
    from jaxgen.families import vqgan
    from jaxgen.losses import gan as gan_losses

    params = state.players["model"].params
    d_params = state.players["discriminator"].params
    cb = state.extra.ema.codebook

    def parts(p):
        z_e = vqgan.encode(config, p, x)
        q = vq.quantize(z_e, cb)
        x_hat = vqgan.decode(config, p, q.z_q)
        rec, rec_parts = vqgan.reconstruction_loss(config, state.constants, x_hat, x)
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
    metrics = {
        **rec_parts,
        "d_weight": lam,
        "g_loss": adv,
        "perplexity": vq.perplexity(idx, config.vq.num_codes),
    }
    return grads, (metrics, z_e, idx, x_hat)


def case(name: str, batch: int, seconds: float, repeats: int = 5, tiny: bool = False) -> dict:
    """Steps/s of one case of the module docstring at ``batch``."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxgen.families import vqgan, vqvae

    arg = "mnist,tiny" if tiny else "mnist"
    if name == "vqvae":
        config, family = harness.load_config("vqvae", arg), vqvae
    else:
        config, family = harness.load_config("vqgan", arg), vqgan
        config.vqgan.disc_start = config.vqgan.adv_start = 0
        if name == "l1":
            config.vqgan.perceptual_weight = 0.0
            config.vqgan.disc_weight = 0.0
        if name == "l1+lpips":
            config.vqgan.disc_weight = 0.0
        if name == "l1+lpips, D trains":
            config.vqgan.adv_start = 10**9
        if name == "full, LPIPS at 64":
            config.vqgan.lpips_size = 64
        if name == "full, direct lambda":
            vqgan.autoencoder_grads = direct_grads
    config.train.batch_size = batch
    rng = np.random.default_rng(0)
    batches = [
        {
            "image": jnp.asarray(rng.integers(0, 256, (batch, 28, 28, 1), np.uint8)),
            "label": jnp.zeros((batch,), jnp.int32),
            "index": jnp.arange(batch),
        }
        for _ in range(4)
    ]
    state = family.init(config, jax.random.PRNGKey(0), batches[0])
    step = jax.jit(lambda s, b: family.train_step(config, s, b), donate_argnums=0)
    calls = 0

    def call():
        nonlocal state, calls
        state, metrics = step(state, batches[calls % 4])
        calls += 1
        return metrics

    t = harness.time_calls(call, min_seconds=seconds, repeats=repeats)
    players = state.players
    return {
        "steps_per_s": t.per_s(),
        "images_per_s": t.per_s(batch),
        "compile_s": t.first_s,
        "spread": t.spread,
        "params": harness.num_params(players["model"].params),
        "d_params": (
            harness.num_params(players["discriminator"].params) if "discriminator" in players else 0
        ),
    }


def main(argv=None) -> None:
    ap = harness.parser(__doc__)
    ap.add_argument("--seconds", type=float, default=15.0)
    args = ap.parse_args(argv)
    seconds, repeats = (0.0, 2) if args.quick else (args.seconds, 5)
    lines = [
        "# VQ-GAN train steps: throughput and memory beside the VQ-VAE's (CPU)",
        "",
        "MNIST-shaped random batches (see the script's docstring); steps/s at the median of "
        f"repeats over at least {seconds:g} s.",
        "",
        "| case | batch | steps/s | images/s | images/s vs VQ-VAE | spread | compile s "
        "| params (G / D) | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rows, base = [], None
    out = harness.out_path(args, "vqgan_cpu")
    for name, batch in QUICK if args.quick else CASES:
        r = harness.run_in_child(
            case, name=name, batch=batch, seconds=seconds, repeats=repeats, tiny=args.quick
        )
        rows.append({"case": name, "batch": batch, **r})
        print(rows[-1], flush=True)
        if name == "vqvae":
            base = r["images_per_s"]
        ratio = f"{r['images_per_s'] / base:.2f}" if base else ""
        lines.append(
            f"| {name} | {batch} | {r['steps_per_s']:.2f} | {r['images_per_s']:.0f} | {ratio} "
            f"| {r['spread']:.2f} | {r['compile_s']:.1f} "
            f"| {r['params'] / 1e6:.2f} M / {r['d_params'] / 1e6:.2f} M "
            f"| {r['peak_rss_mb']:.0f} |"
        )
        # After every case: a cut run keeps what it measured.
        harness.write_results(out, "\n".join(lines), {"rows": rows})
    print("wrote", out)


if __name__ == "__main__":
    main()
