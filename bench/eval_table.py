"""The README's results table and its plots, from the ``eval.json`` files of ``jaxgen.eval``.

    python bench/eval_table.py [--out bench/results/eval_table.md]
    python bench/eval_table.py --run [--datasets mnist,fashion_mnist] [--skip STEM,...]
    python bench/eval_table.py --run --redo 'pixelcnn_*,diff_*'   # remeasure these rows
    python bench/eval_table.py --run --quick   # three rows of tiny runs, in $BENCH_QUICK_DIR
    python bench/eval_table.py --table budget30 [--run [--jobs 8]]  # the 30-minute budget

``--table``: ``demo`` (the default) is the one table of the demo-sized runs
(``bench/results/eval_table.md``, runs in ``runs/table``); ``budget30`` is each family's
``budget30`` recipe (``bench/results/budget30.md``, runs in ``runs/budget30``). ``--jobs``: with
``--run``, the runs train that many at a time (each prior once its tokenizer has finished), then
the evaluations (for a GPU: ``bench/gpu_budget30.sh``). A run trained on another device than the
CPU has the device beside its train wall time (``trained_on.txt`` in its workdir).
``--train-flags`` / ``--eval-flags``: added to every ``train.py`` / ``jaxgen.eval`` command (a
smoke test's few steps and samples).

Each row names the commands that produced it: the training runs (their steps and wall time are
read from their ``metrics.jsonl``) and the ``python -m jaxgen.eval`` call. Rows whose JSON is
missing are taken from the table already at ``--out`` (the committed one), or else left out and
listed, so the table can be rebuilt as runs finish, on any machine. Plots
(``docs/images/eval_curves_<ds>.png``): FD against the number of model calls (NFE) and against
the CFG scale, for each data set with such rows. Runs and evals: ``runs/table/``; the figures
of the loaded evals: ``bench/results/eval_table.json``.

``--run`` first produces the missing rows, in table order: it trains each row's runs that have
not finished (a run is finished when its ``metrics.jsonl`` ends with the final eval) and then
runs the row's ``python -m jaxgen.eval`` command, one process at a time. A row of the previous
table counts as produced; ``--redo`` names rows (shell patterns over the stems of
``runs/table/evals``, such as ``diff_*``) to measure again all the same, after a change to the
evaluation: their runs are trained again unless they are on this machine.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import fnmatch
import functools
import json
import os
import sys

import harness

# Training runs, by name: (config file, its argument, train.py flags); {ds} is the data set.
TRAIN = {
    "vae": ("vae", "{ds},demo", ""),
    "diffusion": ("diffusion", "{ds},demo,cond", ""),
    "vqvae": ("vqvae", "{ds}", "--config.train.num_steps=600"),
    "dcgan": ("gan", "{ds}", "--config.train.num_steps=5000"),
    "wgan_gp": ("gan", "{ds},wgan_gp", "--config.train.num_steps=2000"),
    "pixelcnn": ("pixelcnn", "{ds}", "--config.train.num_steps=600"),
}
FIRST_STAGE = {"pixelcnn": "vqvae"}  # a prior's tokenizer run

# (label, eval json stem, training runs, eval flags, samples); {ds} is the data set and {runs}
# the folder of the runs.
ROWS = [
    ("reference: training images", "ref_train_{ds}", [], "--reference=train --dataset={ds}", 0),
    ("reference: uniform noise", "ref_noise_{ds}", [], "--reference=noise --dataset={ds}", 0),
    ("VAE (demo)", "vae_{ds}", ["vae"], "--workdir={runs}/vae_{ds}", 0),
    ("VQ-VAE reconstructions", "vqvae_{ds}", ["vqvae"], "--workdir={runs}/vqvae_{ds}", 0),
    (
        "VQ-VAE + PixelCNN prior",
        "pixelcnn_{ds}",
        ["vqvae", "pixelcnn"],
        "--workdir={runs}/pixelcnn_{ds}",
        2000,
    ),
    ("DCGAN", "dcgan_{ds}", ["dcgan"], "--workdir={runs}/dcgan_{ds}", 0),
    ("WGAN-GP", "wgan_gp_{ds}", ["wgan_gp"], "--workdir={runs}/wgan_gp_{ds}", 0),
]
for n in (10, 20, 50):
    ROWS.append(
        (
            f"diffusion (demo, cond), DPM-Solver++ NFE {n}",
            f"diff_{{ds}}_dpmpp_{n}",
            ["diffusion"],
            f"--workdir={{runs}}/diffusion_{{ds}} --solver=dpm_solver++ --steps={n}",
            1000,
        )
    )
ROWS += [
    (
        "diffusion (demo, cond), DPM-Solver++ NFE 50, 100 samples",
        "diff_{ds}_dpmpp_50_n100",
        ["diffusion"],
        "--workdir={runs}/diffusion_{ds} --solver=dpm_solver++ --steps=50 --batch=100",
        100,
    ),
    (
        "diffusion (demo, cond), DDPM NFE 1000, 100 samples",
        "diff_{ds}_ddpm_1000",
        ["diffusion"],
        "--workdir={runs}/diffusion_{ds} --solver=ddpm --steps=1000 --batch=100",
        100,
    ),
]
for w in (0, 1, 2, 3, 5):
    ROWS.append(
        (
            f"diffusion (demo, cond), CFG w={w}, NFE 20",
            f"diff_{{ds}}_cfg_{w}",
            ["diffusion"],
            f"--workdir={{runs}}/diffusion_{{ds}} --solver=dpm_solver++ --steps=20 "
            f"--guidance=cfg --scale={w}",
            500,
        )
    )
# --quick: the rows that cover each kind of plumbing (a reference, a run, a sampler's flags).
QUICK_STEMS = ("ref_noise_{ds}", "vae_{ds}", "diff_{ds}_dpmpp_10")

# The 30-minute budget (docs/results.md): each family's `budget30` recipe, trained for at most
# 30 minutes on the README's 2-core CPU (a two-stage model's runs share the 30), scored on
# 10,000 samples; a conditional model also at other guidance scales, on 2,000.
TRAIN_30 = {
    "vae": ("vae", "{ds},budget30", ""),
    "vqvae": ("vqvae", "{ds},budget30", ""),
    "pixelcnn": ("pixelcnn", "{ds},cond,budget30", ""),
    "vqgan": ("vqgan", "{ds},budget30", ""),
    "gpt": ("gpt", "{ds},cond,budget30", ""),
    "maskgit": ("maskgit", "{ds},cond,budget30", ""),
    "dcgan": ("gan", "{ds},budget30", ""),
    "wgan_gp": ("gan", "{ds},wgan_gp,budget30", ""),
    "diffusion": ("diffusion", "{ds},cond,budget30", ""),
}
FIRST_STAGE_30 = {"pixelcnn": "vqvae", "gpt": "vqgan", "maskgit": "vqgan"}
ROWS_30 = [
    ("VAE (budget30)", "vae_{ds}", ["vae"], "--workdir={runs}/vae_{ds}", 10000),
    (
        "VQ-VAE (budget30) reconstructions",
        "vqvae_{ds}",
        ["vqvae"],
        "--workdir={runs}/vqvae_{ds}",
        0,
    ),
    (
        "VQ-VAE + PixelCNN (budget30, cond)",
        "pixelcnn_{ds}",
        ["vqvae", "pixelcnn"],
        "--workdir={runs}/pixelcnn_{ds}",
        10000,
    ),
    (
        "VQ-GAN (budget30) reconstructions",
        "vqgan_{ds}",
        ["vqgan"],
        "--workdir={runs}/vqgan_{ds}",
        0,
    ),
    *(
        (
            f"VQ-GAN + {name} (budget30, cond){label}",
            f"{prior}_{{ds}}{stem}",
            ["vqgan", prior],
            f"--workdir={{runs}}/{prior}_{{ds}}{flags}",
            num,
        )
        for prior, name in (("gpt", "GPT"), ("maskgit", "MaskGIT"))
        for label, stem, flags, num in (
            ("", "", "", 10000),
            (", CFG w=2", "_cfg_2", " --scale=2", 2000),
        )
    ),
    ("DCGAN (budget30)", "dcgan_{ds}", ["dcgan"], "--workdir={runs}/dcgan_{ds}", 10000),
    ("WGAN-GP (budget30)", "wgan_gp_{ds}", ["wgan_gp"], "--workdir={runs}/wgan_gp_{ds}", 10000),
    (
        "diffusion (budget30, cond), its default guidance (CFG w=2)",
        "diff_{ds}",
        ["diffusion"],
        "--workdir={runs}/diffusion_{ds}",
        10000,
    ),
    (
        "diffusion (budget30, cond), no guidance (w=1)",
        "diff_{ds}_cfg_1",
        ["diffusion"],
        "--workdir={runs}/diffusion_{ds} --guidance=none",
        2000,
    ),
]
for w in (1.5, 2, 3):
    ROWS_30.append(
        (
            f"diffusion (budget30, cond), CFG w={w}",
            f"diff_{{ds}}_cfg_{w}",
            ["diffusion"],
            f"--workdir={{runs}}/diffusion_{{ds}} --guidance=cfg --scale={w}",
            2000,
        )
    )


@dataclasses.dataclass(frozen=True)
class Table:
    """One results table: its runs (``runs/<runs>``), rows, committed file and pictures."""

    title: str
    runs: str  # runs/<runs>: the training runs and evals/
    out: str  # bench/results/<out>.md
    train: dict
    first_stage: dict
    rows: list
    quick_stems: tuple
    curves: str  # docs/images/<curves>_<ds>.png
    cfg_scales: tuple  # the rows diff_{ds}_cfg_<w> that the curves plot
    nfe: tuple = ()  # the rows diff_{ds}_dpmpp_<n>
    grids: dict = dataclasses.field(default_factory=dict)  # run -> sample.py flags of its grid
    # run -> its steps/s on the README's CPU (or {data set: steps/s}), for the runs trained
    # elsewhere whose metrics are not here (bench/results/budget30_notes.md has the rates)
    cpu_rates: dict = dataclasses.field(default_factory=dict)


TABLES = {
    "demo": Table(
        "Results table",
        "table",
        "eval_table",
        TRAIN,
        FIRST_STAGE,
        ROWS,
        QUICK_STEMS,
        "eval_curves",
        (0, 1, 2, 3, 5),
        (10, 20, 50),
    ),
    "budget30": Table(
        "30-minute budget",
        "budget30",
        "budget30",
        TRAIN_30,
        FIRST_STAGE_30,
        ROWS_30,
        ("diff_{ds}_cfg_1",),
        "budget30_curves",
        (1, 1.5, 2, 3),
        grids={
            "vae": "--num=64",
            "pixelcnn": "--num=100 --class=all",
            "gpt": "--num=100 --class=all",
            "maskgit": "--num=100 --class=all",
            "dcgan": "--num=64",
            "wgan_gp": "--num=64",
            "diffusion": "--num=100 --class=all",
        },
        cpu_rates={
            "vae": {"mnist": 87.0, "fashion_mnist": 6.0},
            "vqvae": 7.5,
            "pixelcnn": 5.6,
            "vqgan": 1.2,
            "gpt": 4.5,
            "maskgit": 4.0,
            "dcgan": 7.8,
            "wgan_gp": 3.3,
            "diffusion": 4.2,
        },
    ),
}
DEMO = TABLES["demo"]

DATASETS = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}


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


def _rows(datasets, quick: bool, table: Table = DEMO):
    """``(data set, row)`` of the table, in order; ``--quick`` keeps its ``quick_stems``."""
    for ds in datasets:
        for row in table.rows:
            if not quick or row[1] in table.quick_stems:
                yield ds, row


def build(
    where: harness.Runs, datasets, previous: dict | None = None, table: Table = DEMO
) -> tuple[str, list[str], dict]:
    lines, missing, loaded = [], [], {}
    previous = previous or {}
    header = (
        "| data | model | FD | KID | precision | recall | NLL | class acc. | N | samples/s "
        "| train steps | train wall |"
    )
    lines += [header, "|" + "---|" * 12]
    for ds, (label, stem, runs, _, _) in _rows(datasets, where.quick, table):
        name = DATASETS[ds]
        path = where.eval_json(stem.format(ds=ds))
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
            s, w = _train_cells(where, run, ds, table)
            steps.append(s)
            walls.append(w)
        rate = out.get("samples_per_s")
        device = out.get("device", "cpu")
        rate = f"{_fmt(rate)}{'' if device == 'cpu' else f' ({device})'}" if rate else ""
        lines.append(
            f"| {name} | {label} | {_fmt(m['fd'])} | {_fmt(m['kid'])} "
            f"| {_fmt(m.get('precision'), 2)} | {_fmt(m.get('recall'), 2)} | {nll} "
            f"| {_fmt(m.get('class_accuracy'), 2)} | {out['num_samples']} "
            f"| {rate} | {' + '.join(steps)} | {' + '.join(walls)} |"
        )
    return "\n".join(lines), missing, loaded


def _train_cells(where: harness.Runs, run: str, ds: str, table: Table) -> tuple[str, str]:
    """The train steps and wall time cells of ``run``: measured from its ``metrics.jsonl``,
    with the device when that was not the CPU. A run trained on another machine whose
    metrics did not come back (only its evals did) shows the steps its evals record and the
    CPU time they take at the table's ``cpu_rates`` (marked as an estimate)."""
    workdir = where.workdir(f"{run}_{ds}")
    steps, wall = harness.train_info(workdir)
    if steps:
        device = harness.trained_on(workdir)
        return str(steps), f"{wall:.0f} s" + ("" if device == "cpu" else f" ({device})")
    folder = os.path.dirname(where.eval_json("x"))
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        with open(os.path.join(folder, name)) as f:
            out = json.load(f)
        if os.path.basename(out.get("workdir", "").rstrip("/")) != f"{run}_{ds}":
            continue
        rate = table.cpu_rates.get(run, {})
        rate = rate.get(ds) if isinstance(rate, dict) else rate
        device = out.get("device", "cpu")
        if not rate:
            return str(out["step"]), f"({device})"
        return str(out["step"]), f"~{out['step'] / rate:.0f} s est. (trained on {device})"
    return "0", ""


def train_command(run: str, ds: str, runs: str = "runs/table", table: Table = DEMO) -> str:
    config, arg, flags = table.train[run]
    if run in table.first_stage:
        flags = f"--config.first_stage.workdir={runs}/{table.first_stage[run]}_{ds} {flags}"
    workdir = f"{runs}/{run}_{ds}"
    return f"python train.py {harness.config_flag(config, arg)} --workdir={workdir} {flags}".strip()


def commands(table: Table = DEMO) -> str:
    out = []
    folder = f"runs/{table.runs}"
    for label, _, runs, flags, num in table.rows:
        train = "; ".join(train_command(r, "{ds}", folder, table) for r in runs)
        flags = flags.format(runs=folder, ds="{ds}") + (f" --num={num}" if num else "")
        out.append(f"- {label}: `{train + '; ' if train else ''}python -m jaxgen.eval {flags}`")
    return "\n".join(out)


def plots(loaded: dict, folder: str, table: Table = DEMO) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for ds, name in DATASETS.items():
        nfe = [(n, loaded.get((ds, f"diff_{{ds}}_dpmpp_{n}"))) for n in table.nfe]
        nfe = [(n, o) for n, o in nfe if o]
        cfg = [(w, loaded.get((ds, f"diff_{{ds}}_cfg_{w}"))) for w in table.cfg_scales]
        cfg = [(w, o) for w, o in cfg if o]
        if not nfe and not cfg:
            continue
        fig, axes = plt.subplots(1, 2 if nfe else 1, figsize=(9 if nfe else 4.8, 3.4))
        axes = axes if nfe else [None, axes]
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
            n = cfg[0][1]["num_samples"]
            ax.set_title(f"{name}: FD and class accuracy vs w ({n:,} samples)")
        fig.tight_layout()
        path = os.path.join(folder, f"{table.curves}_{ds}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def run_missing(
    where: harness.Runs,
    datasets,
    skip,
    previous: dict,
    redo=(),
    table: Table = DEMO,
    jobs: int = 1,
    train_flags: str = "",
    eval_flags: str = "",
    only=(),
) -> list[str]:
    """Train and evaluate every row of ``datasets`` that neither ``where`` nor the previous
    table holds, or that ``redo`` names (see the module docstring). With ``jobs > 1`` (an
    accelerator has room for several; a 2-core CPU has not) the runs train that many at a time,
    each prior once its tokenizer has finished, and the evaluations then run that many at a
    time. A run or evaluation that fails costs only the rows that need it: the others go on.
    ``train_flags`` and ``eval_flags`` go last on every command of their kind (a smoke test's
    few steps and samples); ``only``: patterns of the row stems to make (default: all). Returns
    what failed, one line each."""
    rows, needed = [], []
    for ds, (label, stem, runs, flags, num) in _rows(datasets, where.quick, table):
        stem = stem.format(ds=ds)
        if os.path.exists(where.eval_json(stem)) or stem in skip:
            continue
        if only and not any(fnmatch.fnmatchcase(stem, pattern) for pattern in only):
            continue
        again = any(fnmatch.fnmatchcase(stem, pattern) for pattern in redo)
        if (DATASETS[ds], label) in previous and not again:
            continue
        rows.append((ds, stem, runs, flags, num))
        for run in runs:  # a prior's tokenizer first, whether or not the row names it
            for r in (table.first_stage.get(run), run):
                if r and (r, ds) not in needed:
                    needed.append((r, ds))
    failed = []

    def train(run, ds):
        first = table.first_stage.get(run)
        # Submitted earlier, so running or done: a prior waits only on a tokenizer in hand.
        if first and futures[(first, ds)].exception() is not None:
            raise RuntimeError(f"its first stage {first}_{ds} failed")
        config, arg, flags = table.train[run]
        where.train(
            f"{run}_{ds}",
            config,
            arg.format(ds=ds),
            f"{flags} {train_flags}".strip(),
            first_stage=where.workdir(f"{first}_{ds}") if first else "",
        )
        if run in table.grids:  # docs/images/<runs>_<run>_<ds>.png, unless it is there
            picture = f"{table.runs}_{run}_{ds}.png"
            where.sample_grid(where.workdir(f"{run}_{ds}"), picture, table.grids[run])

    futures = {}
    with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
        # First in, first started (a prior is listed after its tokenizer).
        for key in needed:
            futures[key] = pool.submit(train, *key)
        broken = set()
        for key, future in futures.items():
            if future.exception() is not None:
                broken.add(key)
                failed.append(f"train {key[0]}_{key[1]}: {future.exception()}")
        evals = {}
        for ds, stem, runs, flags, num in rows:
            if any((r, ds) in broken for r in runs):
                continue
            evaluate = functools.partial(
                where.evaluate,
                stem,
                flags.format(runs=where.root, ds=ds),
                ds,
                num=num or None,
                extra=eval_flags,
            )
            evals[stem] = pool.submit(evaluate)
            if jobs == 1:
                evals[stem].exception()  # one at a time, in table order
        for stem, future in evals.items():
            if future.exception() is not None:
                failed.append(f"eval {stem}: {future.exception()}")
    return failed


def main(argv=None) -> int:
    ap = harness.parser(__doc__)
    ap.add_argument("--run", action="store_true", help="produce the missing rows first")
    ap.add_argument("--datasets", default=None, help=f"default: {','.join(DATASETS)}")
    ap.add_argument("--skip", default="", help="with --run: row stems to leave out")
    ap.add_argument(
        "--redo",
        default="",
        help="with --run: patterns of row stems to measure again though the table has them",
    )
    ap.add_argument(
        "--table",
        choices=sorted(TABLES),
        default="demo",
        help="demo: the one table (runs/table); budget30: the 30-minute recipes (runs/budget30)",
    )
    ap.add_argument(
        "--jobs", type=int, default=1, help="with --run: runs and evaluations at a time (on a GPU)"
    )
    ap.add_argument(
        "--only", default="", help="with --run: patterns of the row stems to make (default: all)"
    )
    ap.add_argument("--train-flags", default="", help="with --run: added to every train.py")
    ap.add_argument("--eval-flags", default="", help="with --run: added to every jaxgen.eval")
    args = ap.parse_args(argv)
    os.chdir(harness.ROOT)
    spec = TABLES[args.table]
    where = harness.Runs.for_driver(spec.runs, args.quick)
    datasets = (args.datasets or ("mnist" if args.quick else ",".join(DATASETS))).split(",")
    out = harness.out_path(args, spec.out)
    previous = previous_rows(out)
    failed = []
    if args.run:
        redo = [p for p in args.redo.split(",") if p]
        skip = set(args.skip.split(","))
        failed = run_missing(
            where,
            datasets,
            skip,
            previous,
            redo,
            spec,
            max(1, args.jobs),
            args.train_flags,
            args.eval_flags,
            [p for p in args.only.split(",") if p],
        )
    # The table holds every data set (rows of others come from the previous table); --quick's
    # only its own.
    datasets = datasets if args.quick else list(DATASETS)
    table, missing, loaded = build(where, datasets, previous, spec)
    flag = "" if args.table == "demo" else f" --table {args.table}"
    text = f"# {spec.title} (python bench/eval_table.py{flag})\n\n"
    text += table + "\n\nCommands (`{ds}`: mnist or fashion_mnist):\n\n" + commands(spec) + "\n"
    if missing:
        text += "\nNot measured yet: " + ", ".join(os.path.basename(m) for m in missing) + "\n"
    figures = {f"{ds}/{stem.format(ds=ds)}": e for (ds, stem), e in loaded.items()}
    harness.write_results(out, text, {"evals": figures, "missing": missing})
    print(table)
    print("wrote", out)
    os.makedirs(where.images, exist_ok=True)
    for path in plots(loaded, where.images, spec):
        print("wrote", path)
    if missing:
        print(f"{len(missing)} rows missing", file=sys.stderr)
    if args.run and failed:
        print("failed:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
