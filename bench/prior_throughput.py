"""The priors over codes side by side: train throughput and sampling images/s, all at one batch.

    python bench/prior_throughput.py [--seconds 15] [--batch 64] [--tokenizer vqvae] [--quick]

Each case runs in its own subprocess (``harness.run_in_child``, so ``peak_rss_mb`` is its own)
on the 7x7 code grid of ``configs/<tokenizer>.py:mnist`` with untrained (zero) tokenizer
weights: neither the cost of a step nor of a sampling call depends on their values. Train: the
jitted step after 3 warm-up steps, repeats of 8 steps for at least ``--seconds``, on random
uint8 batches (median repeat). Sampling: the median of 3 timed calls of the family's ``sample``
for ``--batch`` class-conditional images (decoding included), after one compiling call.

Cases: the gated PixelCNN (49 sequential full forwards), the GPT prior with its key-value cache
(49 one-position steps) and without it (49 full forwards, ``--cache=false``), GPT with
classifier-free guidance (the batch runs twice), and MaskGIT at 8 and 16 parallel steps.
Results: ``bench/results/priors_cpu.md`` (and ``.json``); compare ratios within one table.
"""

from __future__ import annotations

import importlib

import harness

# (label, config file, sample options)
CASES = [
    ("PixelCNN", "pixelcnn", {}),
    ("GPT, cached", "gpt", {}),
    ("GPT, uncached", "gpt", {"cache": False}),
    ("GPT, cached, CFG w=2", "gpt", {"scale": 2.0}),
    ("MaskGIT, 8 steps", "maskgit", {"steps": 8}),
    ("MaskGIT, 16 steps", "maskgit", {"steps": 16}),
]
QUICK = [CASES[0], CASES[1], CASES[4]]


def case(
    config: str,
    tokenizer: str,
    options: dict,
    seconds: float,
    batch: int,
    repeats: int = 5,
    tiny: bool = False,
) -> dict:
    """Train throughput and sampling time of the class-conditional ``configs/<config>.py`` over
    ``configs/<tokenizer>.py:mnist``; ``options`` go to the family's ``sample``."""
    import jax

    variant = ",tiny" if tiny else ""
    c = harness.load_config(config, "mnist,cond" + variant)
    c.first_stage.config = harness.load_config(tokenizer, "mnist" + variant)
    c.train.batch_size = batch
    state, out = harness.time_train_step(c, seconds, repeats=repeats)
    module = importlib.import_module(f"jaxgen.families.{c.family}")
    sample = jax.jit(lambda s, r: module.sample(c, s, r, batch, **options).images)
    keys = iter(jax.random.split(jax.random.PRNGKey(0), 1000))
    t = harness.time_calls(lambda: sample(state, next(keys)), warmup=0, repeats=3)
    return {
        **out,
        "sample_compile_s": t.first_s,
        "sample_s": t.median_s,
        "sample_spread": t.spread,
        "images_per_s": t.per_s(batch),
        "params": harness.num_params(state.model.params),
    }


def main(argv=None) -> None:
    ap = harness.parser(__doc__)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--tokenizer", default="vqvae", choices=["vqvae", "vqgan"])
    args = ap.parse_args(argv)
    seconds, repeats, batch = (0.0, 2, 8) if args.quick else (args.seconds, 5, args.batch)
    lines = [
        "# Priors over codes: train throughput and sampling (CPU)",
        "",
        f"Class-conditional priors on MNIST's 7x7 grid of codes of `configs/{args.tokenizer}.py` "
        f"at batch {batch}; sampling includes decoding by the tokenizer. Train examples/s at the "
        f"median of repeats of 8 steps over at least {seconds:g} s; sample s: the median of 3 "
        "calls after a compiling one.",
        "",
        "| prior | params | train examples/s | sample images/s | vs PixelCNN | sample s "
        "| sample compile s | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows, base = [], None
    out = harness.out_path(args, "priors_cpu")
    for label, config, options in QUICK if args.quick else CASES:
        r = harness.run_in_child(
            case,
            config=config,
            tokenizer=args.tokenizer,
            options=options,
            seconds=seconds,
            batch=batch,
            repeats=repeats,
            tiny=args.quick,
        )
        rows.append({"prior": label, "options": options, **r})
        print(rows[-1], flush=True)
        base = base or r["images_per_s"]
        lines.append(
            f"| {label} | {r['params'] / 1e6:.2f} M | {r['examples_per_s']:.0f} "
            f"| {r['images_per_s']:.1f} | {r['images_per_s'] / base:.2f} | {r['sample_s']:.3f} "
            f"| {r['sample_compile_s']:.1f} | {r['peak_rss_mb']:.0f} |"
        )
        # After every case: a cut run keeps what it measured.
        harness.write_results(out, "\n".join(lines), {"rows": rows})
    print("wrote", out)


if __name__ == "__main__":
    main()
