"""What VQ-GAN's losses buy over the VQ-VAE's at one code budget: the README's table and pictures.

    python bench/vqgan_compare.py --run [--datasets fashion_mnist,mnist]  # train what is missing
    python bench/vqgan_compare.py                                         # table from the runs
    python bench/vqgan_compare.py --run --quick   # tiny runs of MNIST, all under $BENCH_QUICK_DIR

Three tokenizers per data set, each with K = 512 codes of D = 64 on a 7x7 grid, trained for the
same 600 steps of batch 32 (``runs/vqgan_compare/<model>_<data set>``):

- ``vqvae``: ``configs/vqvae.py`` (MSE loss) at that schedule;
- ``noadv``: ``configs/vqgan.py:<ds>,demo,noadv``: the VQ-GAN's networks, L1 + LPIPS;
- ``vqgan``: ``configs/vqgan.py:<ds>,demo``: the same plus the PatchGAN's adaptive-weighted
  term (the discriminator trains from step 150 and is heard from step 300).

Every model is scored the same way: PSNR (mean over images, [0, 1] scale) and LPIPS (VGG16, images
at 32x32, the training loss's setting) of its reconstructions of the first 2,000 test images;
the codes those images use and their perplexity (the run's final eval); and the reconstructions'
FD, KID, precision and recall against the test set on the evaluator's features, from
``python -m jaxgen.eval --workdir=... --num=10000`` (its reconstructions of the 10,000 test
images). Pictures: ``docs/images/vqgan_compare_<ds>.png``, test images then each model's
reconstructions. Table: ``bench/results/vqgan_compare.md`` (figures: ``.json``).
"""

from __future__ import annotations

import json
import os

import harness
import numpy as np

MODELS = {  # name: (label, config file, its argument, train.py flags)
    "vqvae": (
        "VQ-VAE (MSE)",
        "vqvae",
        "{ds}",
        "--config.train.batch_size=32 --config.train.num_steps=600 "
        "--config.train.checkpoint_every=300 --config.eval.final_num_examples=2000",
    ),
    "noadv": ("VQ-GAN without adversary (L1 + LPIPS)", "vqgan", "{ds},demo,noadv", ""),
    "vqgan": ("VQ-GAN (L1 + LPIPS + PatchGAN)", "vqgan", "{ds},demo", ""),
}
DATASETS = {"fashion_mnist": "Fashion-MNIST", "mnist": "MNIST"}
NUM_SCORED = 2_000
SHOWN = 12


def runs(quick: bool = False) -> harness.Runs:
    """This driver's runs (``bench/prior_compare.py`` trains its priors over them)."""
    return harness.Runs.for_driver("vqgan_compare", quick)


def run_missing(where: harness.Runs, datasets) -> None:
    for ds in datasets:
        for model, (_, config, arg, flags) in MODELS.items():
            workdir = where.train(f"{model}_{ds}", config, arg.format(ds=ds), flags)
            where.evaluate(f"{model}_{ds}", f"--workdir={workdir}", ds, num=10_000)


def score(where: harness.Runs, ds: str, num: int = NUM_SCORED):
    """PSNR and LPIPS of every finished model's reconstructions of the first ``num`` test
    images, and the picture. Returns ``{model: figures}``."""
    import jax
    import jax.numpy as jnp

    from jaxgen.data import load_splits
    from jaxgen.engine import loop, sampling
    from jaxgen.engine.images import save_grid
    from jaxgen.losses import lpips
    from jaxgen.weights import lpips as lpips_weights

    vgg = lpips_weights.load_vgg16()
    distance = jax.jit(lambda a, b: lpips.lpips(vgg, a, b, resize=32))
    figures, shown, originals = {}, [], None
    for model in MODELS:
        workdir = where.workdir(f"{model}_{ds}")
        if not harness.finished(workdir):
            continue
        setup, state = loop.restore_for_inference(workdir)
        if originals is None:
            _, test = load_splits(setup.config.data)
            originals = test.get(np.arange(num))["image"]
            x = originals.astype(np.float32) / 255.0
            shown.append(x[:SHOWN])
        chunks = range(0, num, 500)
        recon = np.concatenate(
            [sampling.reconstruct(setup, state, originals[i : i + 500]) for i in chunks]
        )
        mse = np.mean((recon - x) ** 2, axis=(1, 2, 3))
        d = np.concatenate(
            [
                np.asarray(distance(jnp.asarray(recon[i : i + 250]), jnp.asarray(x[i : i + 250])))
                for i in range(0, num, 250)
            ]
        )
        rows = harness.metrics_rows(workdir)
        final = rows[-1]
        train = [r for r in rows if r.get("split") == "train"]
        figures[model] = {
            "psnr": float(np.mean(10 * np.log10(1.0 / np.maximum(mse, 1e-10)))),
            "lpips": float(np.mean(d)),
            "codes_used": final.get("codes_used"),
            "codes_perplexity": final.get("codes_perplexity"),
            "steps": int(final["step"]),
            "wall_s": max(float(r.get("time", 0.0)) for r in rows),
            "last_train": train[-1] if train else {},
        }
        path = where.eval_json(f"{model}_{ds}")
        if os.path.exists(path):
            with open(path) as f:
                figures[model]["recon"] = json.load(f)["metrics"]
        shown.append(recon[:SHOWN])
    if shown:
        picture = where.image(f"vqgan_compare_{ds}.png")
        save_grid(np.concatenate(shown), os.path.join(harness.ROOT, picture), ncol=SHOWN)
        figures["picture"] = picture
    return figures


def _fmt(value, fmt):
    return "" if value is None else format(value, fmt)


def table(results: dict) -> str:
    lines = [
        "# VQ-VAE against VQ-GAN at one code budget (7x7 codes, K = 512, D = 64)",
        "",
        "`python bench/vqgan_compare.py --run` on a 2-core CPU: 600 steps of batch 32 each "
        "(the module docstring has the runs). PSNR and LPIPS over the first 2,000 test images; "
        "codes used and perplexity of their codes; FD / KID / precision / recall of the "
        "reconstructions of all 10,000 test images on the evaluator's features.",
        "",
        "| data set | tokenizer | PSNR dB | LPIPS | recon FD | KID | precision | recall "
        "| codes used | perplexity | steps | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for ds, figures in results.items():
        for model, (label, *_) in MODELS.items():
            f = figures.get(model)
            if f is None:
                continue
            r = f.get("recon", {})
            used = f["codes_used"] * 512 if f["codes_used"] is not None else None
            lines.append(
                f"| {DATASETS[ds]} | {label} | {f['psnr']:.2f} | {f['lpips']:.4f} "
                f"| {_fmt(r.get('fd'), '.2f')} | {_fmt(r.get('kid'), '.3f')} "
                f"| {_fmt(r.get('precision'), '.2f')} | {_fmt(r.get('recall'), '.2f')} "
                f"| {_fmt(used, '.0f')} / 512 "
                f"| {_fmt(f['codes_perplexity'], '.0f')} | {f['steps']} | {f['wall_s']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = harness.parser(__doc__)
    ap.add_argument("--run", action="store_true", help="train and evaluate what is missing")
    ap.add_argument("--datasets", default=None, help=f"default: {','.join(DATASETS)}")
    args = ap.parse_args(argv)
    os.chdir(harness.ROOT)
    where = runs(args.quick)
    datasets = (args.datasets or ("mnist" if args.quick else ",".join(DATASETS))).split(",")
    for ds in datasets:
        if ds not in DATASETS:
            raise SystemExit(f"--datasets: {ds!r} is not one of {sorted(DATASETS)}")
    if args.run:
        run_missing(where, datasets)
    num = harness.QUICK_NUM if args.quick else NUM_SCORED
    results = {ds: score(where, ds, num) for ds in datasets}
    out = harness.out_path(args, "vqgan_compare")
    harness.write_results(out, table(results), results)
    print(table(results))
    print("wrote", out)


if __name__ == "__main__":
    main()
