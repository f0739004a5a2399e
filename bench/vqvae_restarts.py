"""Dead-code restarts with a codebook learned by the VQ loss: the shock, its cause and the fix.

    python bench/vqvae_restarts.py [--steps 500] [--dataset fashion_mnist] [--quick]

Trains the VQ-VAE of ``configs/vqvae.py:<dataset>,loss`` (2,000-step schedule compressed to
``--steps``: 100 warm-up steps, then cosine decay) once per case, each in its own subprocess, and
logs every 25 steps the training MSE, the batch perplexity, the mean norm of the encoder outputs
``|z_e|``, the mean distance of each code to its nearest other code, and the mean quantisation
error ``|z_e - e|`` on 256 test images; at the end the PSNR over 2,000 test images.

Cases: ``unseeded`` (the codebook starts at U(-1/K, 1/K), restarts after 100 unused steps: the
behaviour before the fix), ``unseeded, no restarts``, ``seeded`` (``vq.seed_from_data``: every
code set to one of the first batch's encoder outputs at step 0; the fix), ``seeded, no restarts``
and ``unseeded, grad clip 1`` (global-norm clipping bounds the shock instead of removing it).
Each case runs in its own subprocess (``harness.run_in_child``). ``--quick``: two cases on MNIST, 30
steps with 5 warm-up steps. Results: ``bench/results/vqvae_restarts_cpu.md`` (and ``.json``).
"""

from __future__ import annotations

import harness

CASES = {  # name: seed_from_data, restart_after, grad_clip
    "unseeded": dict(seed=False, restart=100, clip=0.0),
    "unseeded, no restarts": dict(seed=False, restart=0, clip=0.0),
    "seeded": dict(seed=True, restart=100, clip=0.0),
    "seeded, no restarts": dict(seed=True, restart=0, clip=0.0),
    "unseeded, grad clip 1": dict(seed=False, restart=100, clip=1.0),
}
QUICK = ["unseeded", "seeded"]


def case(
    dataset: str, steps: int, seed: bool, restart: int, clip: float, warmup: int | None = None
) -> dict:
    """Train one case, logging the codebook's state every 25 steps (and around step 100, and at
    every restart); the PSNR over 2,000 test images at the end."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxgen import quantize as vq
    from jaxgen.data import load_splits, train_batch
    from jaxgen.families import tokenizers, vqvae

    config = harness.load_config("vqvae", f"{dataset},loss")
    config.vq.seed_from_data = seed
    config.vq.restart_after = restart
    config.optimizer.grad_clip = clip
    config.train.num_steps = steps
    if warmup is not None:
        config.optimizer.warmup_steps = warmup
    config.optimizer.decay_steps = steps - config.optimizer.warmup_steps
    train, test = load_splits(config.data)
    test_images = test.get(np.arange(2000))["image"]
    probe = jnp.asarray(test_images[:256])
    state = vqvae.init(config, jax.random.PRNGKey(config.seed), {"image": probe[:64]})
    step = jax.jit(lambda s, b: vqvae.train_step(config, s, b))

    @jax.jit
    def stats(s):
        cb = tokenizers.codebook_of(s)
        z = vqvae.encode(config, s.model.params, probe.astype(jnp.float32) / 255)
        z = z.reshape(-1, cb.shape[1])
        d = jnp.sum((cb[:, None] - cb[None]) ** 2, -1) + 1e30 * jnp.eye(cb.shape[0])
        q = vq.quantize(z, cb)
        return {
            "z_norm": jnp.mean(jnp.linalg.norm(z, axis=-1)),
            "code_spacing": jnp.mean(jnp.sqrt(jnp.min(d, 1))),
            "quant_error": jnp.mean(jnp.linalg.norm(z - q.z_q, axis=-1)),
        }

    log = []
    for i in range(steps):
        state, m = step(state, train_batch(train, config.seed, i, config.train.batch_size))
        if (i + 1) % 25 == 0 or float(m["restarted"]) > 0 or i in (99, 100, 101):
            row = {
                "step": i + 1,
                "mse": float(m["mse"]),
                "perplexity": float(m["perplexity"]),
                "restarted": float(m["restarted"]),
            }
            row.update({k: float(v) for k, v in stats(state).items()})
            log.append(row)
    ev = jax.jit(lambda s, b: vqvae.eval_step(config, s, b))
    psnr = [
        float(ev(state, {"image": jnp.asarray(test_images[i : i + 400])})["psnr"])
        for i in range(0, 2000, 400)
    ]
    return {"log": log, "psnr": float(np.mean(psnr))}


def main(argv=None) -> None:
    ap = harness.parser(__doc__)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--dataset", default=None, help="fashion_mnist (--quick: mnist)")
    args = ap.parse_args(argv)
    args.dataset = args.dataset or ("mnist" if args.quick else "fashion_mnist")
    steps, warmup = (30, 5) if args.quick else (args.steps, None)
    results = {}
    for name in QUICK if args.quick else CASES:
        kwargs = {**CASES[name], "dataset": args.dataset, "steps": steps, "warmup": warmup}
        results[name] = harness.run_in_child(case, **kwargs)
        print(name, results[name]["psnr"], flush=True)

    def at(log, step, key):
        rows = [r for r in log if r["step"] <= step]
        return rows[-1][key] if rows else float("nan")

    lines = [
        "# Restarts with a loss-learned codebook: the shock and the fix (CPU)",
        "",
        f"`configs/vqvae.py:{args.dataset},loss`, the 2,000-step schedule compressed to {steps} "
        "steps; PSNR over 2,000 test images.",
        "",
        "| case | PSNR | MSE step 100 | max MSE steps 101-125 | MSE last | |z_e| step 100 "
        "| code spacing step 100 | perplexity last | codes re-seeded |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        log = r["log"]
        spike = max((x["mse"] for x in log if 100 < x["step"] <= 125), default=float("nan"))
        lines.append(
            f"| {name} | {r['psnr']:.2f} dB | {at(log, 100, 'mse'):.4f} | {spike:.4g} "
            f"| {log[-1]['mse']:.4f} | {at(log, 100, 'z_norm'):.2f} "
            f"| {at(log, 100, 'code_spacing'):.3f} | {log[-1]['perplexity']:.0f} "
            f"| {sum(x['restarted'] for x in log):.0f} |"
        )
    lines += [
        "",
        "`MSE step 100` is the training batch's just before the first restarts; `max MSE steps",
        "101-125` the worst logged batch after them; `codes re-seeded` counts the restarts of the",
        "logged steps (restarts happen on logged steps by construction: every step that restarts",
        "is logged).",
    ]
    out = harness.out_path(args, "vqvae_restarts_cpu")
    harness.write_results(out, "\n".join(lines), results)
    print("wrote", out)


if __name__ == "__main__":
    main()
