"""VQ-VAE and PixelCNN-prior training throughput, and prior sampling cost, on this machine.

    python bench/vqvae_throughput.py [--seconds 20] [--quick] [--out PATH.md]

Each case runs in its own subprocess (``harness.run_in_child``, so ``peak_rss_mb`` is its own):
it compiles the family's jitted train step, runs 3 warm-up steps, then repeats of 8 steps for
at least ``--seconds`` on random uint8 batches of the config's shape (data loading is not
timed). The prior cases build the prior on the VQ-VAE config of the same data set, with
untrained (zero) first-stage weights: the cost of a step does not depend on their values.

For the prior it also times generating 64 images (7x7 = 49 positions, one network call each, as
one ``lax.scan``) against the same 49 network calls on a fixed grid in a ``lax.scan``: the
ratio is what the sampler adds over its network calls (medians of 5 calls after a compiling
one). Results: ``bench/results/vqvae_cpu.md`` (and ``.json``); compare ratios within one table,
not across machines or runs.
"""

from __future__ import annotations

import importlib

import harness

# (config file, its argument, the first stage's (config file, argument) for a prior)
CASES = [
    ("vqvae", "fashion_mnist", None),
    ("vqvae", "fashion_mnist,loss", None),
    ("vqvae", "mnist", None),
    ("pixelcnn", "fashion_mnist", ("vqvae", "fashion_mnist")),
    ("pixelcnn", "fashion_mnist,cond", ("vqvae", "fashion_mnist")),
]
QUICK = [
    ("vqvae", "mnist,tiny", None),
    ("pixelcnn", "mnist,tiny", ("vqvae", "mnist,tiny")),
]


def case(config: str, arg: str, first: list | None, seconds: float, repeats: int = 5) -> dict:
    """Train throughput of ``configs/<config>.py:<arg>``; for a prior (``first``: its
    tokenizer's config and argument) also the sampler against its bare network calls."""
    import jax
    import jax.numpy as jnp

    from jaxgen.families import tokenizers

    c = harness.load_config(config, arg)
    if first:
        # What the engine copies from the tokenizer run; its parameters stay zeros (frozen).
        c.first_stage.config = harness.load_config(*first)
    state, out = harness.time_train_step(c, seconds, repeats=repeats)
    if not first:
        return out
    module = importlib.import_module(f"jaxgen.families.{c.family}")
    num = 64
    sample = jax.jit(lambda s, r: module.sample(c, s, r, num).images)
    model = module.build_model(c)
    labels = jnp.arange(num) % 10 if c.model.num_classes else None
    h, w = tokenizers.tokenizer_of(c).grid_shape

    @jax.jit
    def bare(s):  # the sampler's h*w network calls, each on the previous one's output
        def body(codes, _):
            logits = model.apply({"params": s.model.params}, codes, labels)
            return codes.at[:, 0, 0].set(jnp.argmax(logits[:, 0, 0], -1)), None

        return jax.lax.scan(body, jnp.zeros((num, h, w), jnp.int32), jnp.arange(h * w))[0]

    key = jax.random.PRNGKey(1)
    out["sample64_s"] = harness.time_calls(lambda: sample(state, key), warmup=0).median_s
    out["bare49_s"] = harness.time_calls(lambda: bare(state), warmup=0).median_s
    out["sampler_over_bare"] = out["sample64_s"] / out["bare49_s"]
    return out


def main(argv=None) -> None:
    ap = harness.parser(__doc__)
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args(argv)
    seconds, repeats = (0.0, 2) if args.quick else (args.seconds, 5)
    rows = []
    for config, arg, first in QUICK if args.quick else CASES:
        r = harness.run_in_child(
            case, config=config, arg=arg, first=first, seconds=seconds, repeats=repeats
        )
        rows.append({"config": f"{config}.py:{arg}", **r})
        print(rows[-1], flush=True)
    lines = [
        "# VQ-VAE and PixelCNN prior: train throughput and prior sampling (CPU)",
        "",
        "Random uint8 batches (data loading not timed); examples/s at the median of repeats of 8 "
        f"steps over at least {seconds:g} s.",
        "",
        "| config | batch | examples/s | spread | compile s | peak RSS MB | 64 samples s "
        "| 49 bare calls s | sampler / bare |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        extra = (
            f"{r['sample64_s']:.3f} | {r['bare49_s']:.3f} | {r['sampler_over_bare']:.2f}"
            if "sample64_s" in r
            else "- | - | -"
        )
        lines.append(
            f"| {r['config']} | {r['batch']} | {r['examples_per_s']:.0f} | {r['spread']:.2f} "
            f"| {r['compile_s']:.1f} | {r['peak_rss_mb']:.0f} | {extra} |"
        )
    out = harness.out_path(args, "vqvae_cpu")
    harness.write_results(out, "\n".join(lines), {"rows": rows})
    print("wrote", out)


if __name__ == "__main__":
    main()
