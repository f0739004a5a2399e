"""PixelCNN, GPT and MaskGIT priors over the same codes: the README's table and grids.

    python bench/prior_compare.py --run [--datasets fashion_mnist,mnist] [--tokenizers vqvae,vqgan]
    python bench/prior_compare.py                   # the table from finished runs
    python bench/prior_compare.py --run --quick     # tiny runs (after vqgan_compare.py --quick)

The tokenizers are those of ``bench/vqgan_compare.py`` (``runs/vqgan_compare/<tok>_<ds>``: the
VQ-VAE and the full VQ-GAN, 600 steps of batch 32 each; run that first). Over each, three
class-conditional priors train for 600 steps of batch 64
(``runs/prior_compare/<prior>_<tok>_<ds>``): ``configs/pixelcnn.py``, ``configs/gpt.py`` and
``configs/maskgit.py`` with ``cond``. Each is scored by
``python -m jaxgen.eval --workdir=... --num=2000`` (every class equally often: FD, KID,
precision, recall, class accuracy; the test NLL in bits per code for the two
autoregressive priors) with its default sampler: PixelCNN and GPT at temperature 1, MaskGIT in
12 steps. Grids: ``docs/images/prior_<prior>_<tok>_<ds>.png``, one row per class. Table:
``bench/results/prior_compare.md`` (figures: ``.json``). ``--quick``: MNIST and the VQ-VAE only,
every run tiny, everything under ``$BENCH_QUICK_DIR``.
"""

from __future__ import annotations

import json
import os

import harness
import vqgan_compare

PRIORS = {"pixelcnn": "PixelCNN", "gpt": "GPT", "maskgit": "MaskGIT (12 steps)"}
TOKENIZERS = {"vqvae": "VQ-VAE", "vqgan": "VQ-GAN"}
DATASETS = {"fashion_mnist": "Fashion-MNIST", "mnist": "MNIST"}


def run_missing(where: harness.Runs, datasets, tokenizers) -> None:
    tokenizer_runs = vqgan_compare.runs(where.quick)
    for ds in datasets:
        for tok in tokenizers:
            first = tokenizer_runs.workdir(f"{tok}_{ds}")
            if not harness.finished(first):
                quick = " --quick" if where.quick else ""
                raise SystemExit(
                    f"{first} is not a finished run: python bench/vqgan_compare.py --run{quick}"
                )
            for prior in PRIORS:
                name = f"{prior}_{tok}_{ds}"
                workdir = where.train(
                    name,
                    prior,
                    f"{ds},cond",
                    "--config.train.num_steps=600 --config.train.checkpoint_every=300",
                    first_stage=first,
                )
                where.evaluate(name, f"--workdir={workdir}", ds, num=2000)
                where.sample_grid(workdir, f"prior_{name}.png", "--class=all --num=100")


def table(where: harness.Runs, datasets, tokenizers) -> tuple[str, list[dict]]:
    lines = [
        "# Priors over the same codes: PixelCNN, GPT and MaskGIT",
        "",
        "`python bench/prior_compare.py --run` on a 2-core CPU (the module docstring has the "
        "runs). 2,000 class-conditional samples each, on the evaluator's features.",
        "",
        "| data set | tokenizer | prior | test NLL bits/code | FD | KID | precision | recall "
        "| class accuracy | samples/s | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    figures = []
    for ds in datasets:
        for tok in tokenizers:
            for prior, label in PRIORS.items():
                name = f"{prior}_{tok}_{ds}"
                path = where.eval_json(name)
                if not os.path.exists(path):
                    continue
                with open(path) as f:
                    e = json.load(f)
                m = e["metrics"]
                rows = harness.metrics_rows(where.workdir(name))
                nll = rows[-1].get("nll_bits") if rows else None
                _, wall = harness.train_info(where.workdir(name))
                figures.append({"run": name, "nll_bits": nll, "train_s": wall, "eval": e})
                lines.append(
                    f"| {DATASETS[ds]} | {TOKENIZERS[tok]} | {label} "
                    f"| {'' if nll is None else f'{nll:.3f}'} | {m['fd']:.1f} | {m['kid']:.3f} "
                    f"| {m['precision']:.2f} | {m['recall']:.2f} "
                    f"| {100 * m.get('class_accuracy', float('nan')):.1f}% "
                    f"| {e.get('samples_per_s', float('nan')):.1f} | {wall:.0f} |"
                )
    return "\n".join(lines) + "\n", figures


def main(argv=None) -> None:
    ap = harness.parser(__doc__)
    ap.add_argument("--run", action="store_true", help="train and evaluate what is missing")
    ap.add_argument("--datasets", default=None, help=f"default: {','.join(DATASETS)}")
    ap.add_argument("--tokenizers", default=None, help=f"default: {','.join(TOKENIZERS)}")
    args = ap.parse_args(argv)
    os.chdir(harness.ROOT)
    where = harness.Runs.for_driver("prior_compare", args.quick)
    datasets = (args.datasets or ("mnist" if args.quick else ",".join(DATASETS))).split(",")
    tokenizers = (args.tokenizers or ("vqvae" if args.quick else ",".join(TOKENIZERS))).split(",")
    for value, known, flag in (
        (datasets, DATASETS, "--datasets"),
        (tokenizers, TOKENIZERS, "--tokenizers"),
    ):
        for v in value:
            if v not in known:
                raise SystemExit(f"{flag}: {v!r} is not one of {sorted(known)}")
    if args.run:
        run_missing(where, datasets, tokenizers)
    text, figures = table(where, datasets, tokenizers)
    out = harness.out_path(args, "prior_compare")
    harness.write_results(out, text, figures)
    print(text)
    print("wrote", out)


if __name__ == "__main__":
    main()
