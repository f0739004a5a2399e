"""PixelCNN, GPT and MaskGIT priors over the same codes: the README's table and grids.

    python bench/prior_compare.py --run [--datasets fashion_mnist,mnist] [--tokenizers vqvae,vqgan]
    python bench/prior_compare.py                   # the table from finished runs

The tokenizers are those of ``bench/vqgan_compare.py`` (``runs/vqgan_compare/<tok>_<ds>``: the
VQ-VAE and the full VQ-GAN, 600 steps of batch 32 each; run that first). Over each, three
class-conditional priors train for 600 steps of batch 64
(``runs/prior_compare/<prior>_<tok>_<ds>``): ``configs/pixelcnn.py``, ``configs/gpt.py`` and
``configs/maskgit.py`` with ``cond``. Each is scored by
``python -m jaxgen.eval --workdir=... --num=2000`` (every class equally often: FD, KID,
precision, recall, class accuracy; the test NLL in bits per code for the two
autoregressive priors) with its default sampler: PixelCNN and GPT at temperature 1, MaskGIT in
12 steps. Grids: ``docs/images/prior_<prior>_<tok>_<ds>.png``, one row per class. Table:
``bench/results/prior_compare.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = os.path.join("runs", "prior_compare")
PRIORS = {"pixelcnn": "PixelCNN", "gpt": "GPT", "maskgit": "MaskGIT (12 steps)"}
TOKENIZERS = {"vqvae": "VQ-VAE", "vqgan": "VQ-GAN"}
DATASETS = {"fashion_mnist": "Fashion-MNIST", "mnist": "MNIST"}


def _workdir(prior, tok, ds):
    return os.path.join(RUNS, f"{prior}_{tok}_{ds}")


def _eval_json(prior, tok, ds):
    return os.path.join(RUNS, "evals", f"{prior}_{tok}_{ds}.json")


def _rows(workdir):
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _finished(workdir):
    rows = _rows(workdir)
    return bool(rows) and rows[-1].get("split") == "eval"


def _call(command):
    args = shlex.split(command)
    args[0] = sys.executable
    print("+", command, flush=True)
    subprocess.run(args, check=True, cwd=ROOT)


def run_missing(datasets, tokenizers):
    for ds in datasets:
        for tok in tokenizers:
            first = os.path.join("runs", "vqgan_compare", f"{tok}_{ds}")
            if not _finished(first):
                raise SystemExit(
                    f"{first} is not a finished run: python bench/vqgan_compare.py --run"
                )
            for prior in PRIORS:
                workdir = _workdir(prior, tok, ds)
                if not _finished(workdir):
                    _call(
                        f"python train.py --config=configs/{prior}.py:{ds},cond "
                        f"--workdir={workdir} --config.first_stage.workdir={first} "
                        "--config.train.num_steps=600 --config.train.checkpoint_every=300"
                    )
                out = _eval_json(prior, tok, ds)
                if not os.path.exists(out):
                    os.makedirs(os.path.dirname(out), exist_ok=True)
                    _call(f"python -m jaxgen.eval --workdir={workdir} --num=2000 --out={out}")
                grid = os.path.join("docs", "images", f"prior_{prior}_{tok}_{ds}.png")
                if not os.path.exists(grid):
                    _call(
                        f"python sample.py --workdir={workdir} --class=all --num=100 --out={grid}"
                    )


def table(datasets, tokenizers):
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
    for ds in datasets:
        for tok in tokenizers:
            for prior, label in PRIORS.items():
                path = _eval_json(prior, tok, ds)
                if not os.path.exists(path):
                    continue
                with open(path) as f:
                    e = json.load(f)
                m = e["metrics"]
                rows = _rows(_workdir(prior, tok, ds))
                nll = rows[-1].get("nll_bits") if rows else None
                wall = max((float(r.get("time", 0.0)) for r in rows), default=0.0)
                lines.append(
                    f"| {DATASETS[ds]} | {TOKENIZERS[tok]} | {label} "
                    f"| {'' if nll is None else f'{nll:.3f}'} | {m['fd']:.1f} | {m['kid']:.3f} "
                    f"| {m['precision']:.2f} | {m['recall']:.2f} "
                    f"| {100 * m.get('class_accuracy', float('nan')):.1f}% "
                    f"| {e.get('samples_per_s', float('nan')):.1f} | {wall:.0f} |"
                )
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="store_true", help="train and evaluate what is missing")
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--tokenizers", default=",".join(TOKENIZERS))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "prior_compare.md"))
    args = ap.parse_args()
    os.chdir(ROOT)
    datasets = [d for d in args.datasets.split(",") if d]
    tokenizers = [t for t in args.tokenizers.split(",") if t]
    for value, known, flag in (
        (datasets, DATASETS, "--datasets"),
        (tokenizers, TOKENIZERS, "--tokenizers"),
    ):
        for v in value:
            if v not in known:
                raise SystemExit(f"{flag}: {v!r} is not one of {sorted(known)}")
    if args.run:
        run_missing(datasets, tokenizers)
    text = table(datasets, tokenizers)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
