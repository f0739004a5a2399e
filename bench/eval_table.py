"""The README's results table and its plots, from the ``eval.json`` files of ``jaxgen.eval``.

    python bench/eval_table.py [--evals runs/table/evals] [--out bench/results/eval_table.md]
    python bench/eval_table.py --run [--datasets mnist,fashion_mnist] [--skip STEM,...]

Each row names the commands that produced it: the training runs (their steps and wall time are
read from their ``metrics.jsonl``) and the ``python -m jaxgen.eval`` call. Rows whose JSON is
missing are taken from the table already at ``--out`` (the committed one), or else left out and
listed, so the table can be rebuilt as runs finish, on any machine. Plots: FD against
the number of model calls (NFE) and against the CFG scale, for each data set with such rows.

``--run`` first produces the missing rows, in table order: it trains each row's runs that have
not finished (a run is finished when its ``metrics.jsonl`` ends with the final eval) and then
runs the row's ``python -m jaxgen.eval`` command, one process at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys

TRAIN = {
    "vae": "python train.py --config=configs/vae.py:{ds},demo --workdir=runs/table/vae_{ds}",
    "diffusion": (
        "python train.py --config=configs/diffusion.py:{ds},demo,cond "
        "--workdir=runs/table/diffusion_{ds}"
    ),
    "vqvae": (
        "python train.py --config=configs/vqvae.py:{ds} --workdir=runs/table/vqvae_{ds} "
        "--config.train.num_steps=600"
    ),
    "dcgan": (
        "python train.py --config=configs/gan.py:{ds} --workdir=runs/table/dcgan_{ds} "
        "--config.train.num_steps=5000"
    ),
    "wgan_gp": (
        "python train.py --config=configs/gan.py:{ds},wgan_gp --workdir=runs/table/wgan_gp_{ds} "
        "--config.train.num_steps=2000"
    ),
    "pixelcnn": (
        "python train.py --config=configs/pixelcnn.py:{ds} --workdir=runs/table/pixelcnn_{ds} "
        "--config.first_stage.workdir=runs/table/vqvae_{ds} --config.train.num_steps=600"
    ),
}

# (label, eval json stem, training runs, eval flags); {ds} is the data set.
ROWS = [
    ("reference: training images", "ref_train_{ds}", [], "--reference=train --dataset={ds}"),
    ("reference: uniform noise", "ref_noise_{ds}", [], "--reference=noise --dataset={ds}"),
    ("VAE (demo)", "vae_{ds}", ["vae"], "--workdir=runs/table/vae_{ds}"),
    (
        "VQ-VAE reconstructions",
        "vqvae_{ds}",
        ["vqvae"],
        "--workdir=runs/table/vqvae_{ds}",
    ),
    (
        "VQ-VAE + PixelCNN prior",
        "pixelcnn_{ds}",
        ["vqvae", "pixelcnn"],
        "--workdir=runs/table/pixelcnn_{ds} --num=2000",
    ),
    ("DCGAN", "dcgan_{ds}", ["dcgan"], "--workdir=runs/table/dcgan_{ds}"),
    ("WGAN-GP", "wgan_gp_{ds}", ["wgan_gp"], "--workdir=runs/table/wgan_gp_{ds}"),
]
for n in (10, 20, 50):
    ROWS.append(
        (
            f"diffusion (demo, cond), DPM-Solver++ NFE {n}",
            f"diff_{{ds}}_dpmpp_{n}",
            ["diffusion"],
            f"--workdir=runs/table/diffusion_{{ds}} --solver=dpm_solver++ --steps={n} --num=1000",
        )
    )
ROWS += [
    (
        "diffusion (demo, cond), DPM-Solver++ NFE 50, 100 samples",
        "diff_{ds}_dpmpp_50_n100",
        ["diffusion"],
        "--workdir=runs/table/diffusion_{ds} --solver=dpm_solver++ --steps=50 --num=100 "
        "--batch=100",
    ),
    (
        "diffusion (demo, cond), DDPM NFE 1000, 100 samples",
        "diff_{ds}_ddpm_1000",
        ["diffusion"],
        "--workdir=runs/table/diffusion_{ds} --solver=ddpm --steps=1000 --num=100 --batch=100",
    ),
]
for w in (0, 1, 2, 3, 5):
    ROWS.append(
        (
            f"diffusion (demo, cond), CFG w={w}, NFE 20",
            f"diff_{{ds}}_cfg_{w}",
            ["diffusion"],
            f"--workdir=runs/table/diffusion_{{ds}} --solver=dpm_solver++ --steps=20 "
            f"--guidance=cfg --scale={w} --num=500",
        )
    )

DATASETS = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}


def _train_info(workdir: str) -> tuple[int, float]:
    """(steps, wall seconds) of a training run, from its metrics.jsonl."""
    steps, wall = 0, 0.0
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            steps = max(steps, int(row.get("step", 0)))
            wall = max(wall, float(row.get("time", 0.0)))
    return steps, wall


def _fmt(value, digits=3):
    if value is None:
        return ""
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}g}"


def previous_rows(path: str) -> dict:
    """The rows of an earlier table at ``path``, by (data set name, model label): a row whose
    JSON is not on this machine (``runs/`` is never committed) is kept as it was measured."""
    rows = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                if line.startswith("| ") and len(cells) == 12 and cells[0] in DATASETS.values():
                    rows[(cells[0], cells[1])] = line.rstrip("\n")
    return rows


def build(evals: str, previous: dict | None = None) -> tuple[str, list[str], dict]:
    lines, missing, loaded = [], [], {}
    previous = previous or {}
    header = (
        "| data | model | FD | KID | precision | recall | NLL | class acc. | N | samples/s "
        "| train steps | train wall |"
    )
    lines += [header, "|" + "---|" * 12]
    for ds, name in DATASETS.items():
        for label, stem, runs, _ in ROWS:
            path = os.path.join(evals, stem.format(ds=ds) + ".json")
            if not os.path.exists(path):
                if (name, label) in previous:
                    lines.append(previous[(name, label)])
                else:
                    missing.append(path)
                continue
            with open(path) as f:
                out = json.load(f)
            loaded[(ds, stem)] = out
            m = out["metrics"]
            nll = ""
            if "nll_iwae" in m:
                nll = f"{m['nll_iwae']:.1f} nats"
            elif "nll_bits" in m:
                nll = f"{m['nll_bits']:.2f} bits/code"
            steps, walls = [], []
            for run in runs:
                s, w = _train_info(f"runs/table/{run}_{ds}")
                steps.append(str(s))
                walls.append(f"{w:.0f} s")
            rate = out.get("samples_per_s")
            lines.append(
                f"| {name} | {label} | {_fmt(m['fd'])} | {_fmt(m['kid'])} "
                f"| {_fmt(m.get('precision'), 2)} | {_fmt(m.get('recall'), 2)} | {nll} "
                f"| {_fmt(m.get('class_accuracy'), 2)} | {out['num_samples']} "
                f"| {_fmt(rate) if rate else ''} | {' + '.join(steps)} | {' + '.join(walls)} |"
            )
    return "\n".join(lines), missing, loaded


def commands() -> str:
    out = []
    for label, _, runs, flags in ROWS:
        train = "; ".join(TRAIN[r] for r in runs)
        out.append(f"- {label}: `{train + '; ' if train else ''}python -m jaxgen.eval {flags}`")
    return "\n".join(out)


def plots(loaded: dict, folder: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for ds, name in DATASETS.items():
        nfe = [(n, loaded.get((ds, f"diff_{{ds}}_dpmpp_{n}"))) for n in (10, 20, 50)]
        nfe = [(n, o) for n, o in nfe if o]
        cfg = [(w, loaded.get((ds, f"diff_{{ds}}_cfg_{w}"))) for w in (0, 1, 2, 3, 5)]
        cfg = [(w, o) for w, o in cfg if o]
        if not nfe and not cfg:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
        if nfe:
            ax = axes[0]
            ax.plot([n for n, _ in nfe], [o["metrics"]["fd"] for _, o in nfe], "o-")
            ax.set_xscale("log")
            ax.set_xlabel("NFE (DPM-Solver++ 2M)")
            ax.set_ylabel(f"FD on jaxgen's {name} classifier features")
            ax.set_title(f"{name}: FD vs NFE (1,000 samples)")
        if cfg:
            ax = axes[1]
            ax.plot([w for w, _ in cfg], [o["metrics"]["fd"] for _, o in cfg], "o-", label="FD")
            ax.set_xlabel("CFG scale w (NFE 20)")
            ax.set_ylabel("FD")
            ax2 = ax.twinx()
            acc = [o["metrics"].get("class_accuracy", 0) for _, o in cfg]
            ax2.plot([w for w, _ in cfg], acc, "s--", color="C1", label="class accuracy")
            ax2.set_ylabel("class accuracy")
            ax2.set_ylim(0, 1.05)
            ax.set_title(f"{name}: FD and class accuracy vs w (500 samples)")
        fig.tight_layout()
        path = os.path.join(folder, f"eval_curves_{ds}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _finished(workdir: str) -> bool:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return False
    with open(path) as f:
        lines = [line for line in f if line.strip()]
    return bool(lines) and json.loads(lines[-1]).get("split") == "eval"


def run_missing(evals: str, datasets, skip, previous: dict) -> None:
    """Train and evaluate every row of ``datasets`` that neither ``evals`` nor the previous
    table holds (see the module docstring)."""
    os.makedirs(evals, exist_ok=True)
    for ds in datasets:
        for label, stem, runs, flags in ROWS:
            stem = stem.format(ds=ds)
            out = os.path.join(evals, stem + ".json")
            if os.path.exists(out) or stem in skip or (DATASETS[ds], label) in previous:
                continue
            for run in runs:
                if not _finished(f"runs/table/{run}_{ds}"):
                    _call(TRAIN[run].format(ds=ds))
            _call(f"python -m jaxgen.eval {flags.format(ds=ds)} --out={out}")


def _call(command: str) -> None:
    args = shlex.split(command)
    args[0] = sys.executable
    print("+", command, flush=True)
    subprocess.run(args, check=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--evals", default="runs/table/evals")
    ap.add_argument("--out", default="bench/results/eval_table.md")
    ap.add_argument("--plots", default="docs/images")
    ap.add_argument("--run", action="store_true", help="produce the missing rows first")
    ap.add_argument("--datasets", default=",".join(DATASETS), help="with --run")
    ap.add_argument("--skip", default="", help="with --run: row stems to leave out")
    args = ap.parse_args(argv)
    previous = previous_rows(args.out)
    if args.run:
        run_missing(args.evals, args.datasets.split(","), set(args.skip.split(",")), previous)
    table, missing, loaded = build(args.evals, previous)
    with open(args.out, "w") as f:
        f.write("# Results table (python bench/eval_table.py)\n\n")
        f.write(table + "\n\nCommands (`{ds}`: mnist or fashion_mnist):\n\n" + commands() + "\n")
        if missing:
            f.write("\nNot measured yet: " + ", ".join(os.path.basename(m) for m in missing) + "\n")
    print(table)
    for path in plots(loaded, args.plots):
        print("wrote", path)
    if missing:
        print(f"{len(missing)} rows missing", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
