"""Latent diffusion against pixel diffusion, and its first stages (issue 29): the runs, the table.

    python bench/ldm_table.py --run          # train and score what is missing (hours on a CPU)
    python bench/ldm_table.py                # the table from the runs
    python bench/ldm_table.py --run --quick  # tiny runs, under $BENCH_QUICK_DIR: the plumbing

Runs (``runs/ldm_table/<name>``):

- first stages ``kl_<data set>`` and ``kl_<data set>_f2`` (``configs/autoencoder_kl.py``, factor
  4 and 2) on Fashion-MNIST and MNIST pairs, scored by their reconstructions of the test split
  (``python -m jaxgen.eval``: FD, KID, precision, recall on the evaluator's features; pairs
  have no evaluator of their own, so only their training figures);
- latent models ``ldm_<data set>[_f2]`` (text, ``configs/ldm.py``) over them,
  ``ldm_fashion_mnist_uncond`` (unconditional) for the comparison with pixel diffusion, and
  ``ldm_mnist_pairs_cond`` (class-conditional, labels ``10 * left + right``), the control that
  ``bench/text_prompts.py --pairs-cond`` reads beside the text model. These first models
  predict eps (``EPS``, pinned so that they retrain as they were). The recipe's v is used by
  the ``_v`` runs (``ldm_fashion_mnist_uncond_v``: the unconditional run with v alone changed),
  ``ldm_fashion_mnist_f2`` and ``ldm_fashion_mnist_uncond_small`` (the ``small`` UNet, twice
  the steps in about the same time). ``ldm_mnist_pairs_v`` was trained before the captions
  gained the one-side templates ("a 7 on the right"), ``ldm_mnist_pairs_v_sides`` with them
  (the same recipe), ``ldm_mnist_pairs_v_deep`` with a text encoder of 4 blocks, not 2 (the
  held-out phrasing). ``ldm_mnist_pairs_f2`` keeps the cross-attention at 14 and 7 it was
  trained with (``F2_14_7``); ``ldm_mnist_pairs_f2_v`` has the f2 default, 7 alone.
  ``levels_f2_v_14_7`` and ``levels_f2_v_7``: cross-attention at 14 and 7 or at 7 alone, at
  factor 2 for 1,500 steps each (``bench/text_prompts.py`` reads them);
- ``pixel_fashion_mnist``: pixel-space diffusion (``configs/diffusion.py:fashion_mnist,cpu``,
  unconditional) trained for the same wall time as ``ldm_fashion_mnist_uncond`` (its steps are
  that time times the pixel model's measured rate).

Table: ``bench/results/ldm_table.md`` (figures in ``.json``): per run its train wall time and
img/s, and for the unconditional models FD, KID, precision, recall and sampling img/s (20
DPM-Solver++ steps, decoding included) at N = 10,000, and their sampling rates measured again
in one process, in turns, with the ratio to the pixel model (``sampling_rates``). Prompt
adherence and negative prompts are ``bench/text_prompts.py``'s, over the text models here.
"""

from __future__ import annotations

import os
import statistics
import time

import harness

FIRST_STAGES = {  # name: (config argument, data set)
    "kl_fashion_mnist": ("fashion_mnist", "fashion_mnist"),
    "kl_fashion_mnist_f2": ("fashion_mnist,f2", "fashion_mnist"),
    "kl_mnist_pairs": ("mnist_pairs", "mnist_pairs"),
    "kl_mnist_pairs_f2": ("mnist_pairs,f2", "mnist_pairs"),
}
EPS = "--config.diffusion.prediction=eps"  # the first models, before configs/ldm.py chose v
CONTEXT = "--config.model.context_resolutions"
LEVELS = f"--config.train.num_steps=1500 {CONTEXT}"
F2_14_7 = f"{CONTEXT}=(14,7)"  # the f2 default before it became (7,)
LATENT = {  # name: (config argument, first stage, flags)
    "ldm_mnist_pairs": ("mnist_pairs", "kl_mnist_pairs", EPS),
    "ldm_fashion_mnist": ("fashion_mnist", "kl_fashion_mnist", EPS),
    "ldm_fashion_mnist_v": ("fashion_mnist", "kl_fashion_mnist", ""),
    "ldm_fashion_mnist_uncond": ("fashion_mnist,uncond", "kl_fashion_mnist", EPS),
    "ldm_fashion_mnist_uncond_v": ("fashion_mnist,uncond", "kl_fashion_mnist", ""),
    "ldm_fashion_mnist_uncond_small": ("fashion_mnist,uncond,small", "kl_fashion_mnist", ""),
    "ldm_mnist_pairs_cond": ("mnist_pairs,cond", "kl_mnist_pairs", EPS),  # the control for text
    "ldm_mnist_pairs_v": ("mnist_pairs", "kl_mnist_pairs", ""),  # before the one-side templates
    "ldm_mnist_pairs_v_sides": ("mnist_pairs", "kl_mnist_pairs", ""),  # with them
    "ldm_mnist_pairs_v_deep": ("mnist_pairs", "kl_mnist_pairs", "--config.text.depth=4"),
    "ldm_mnist_pairs_f2": ("mnist_pairs,f2", "kl_mnist_pairs_f2", f"{EPS} {F2_14_7}"),
    "ldm_mnist_pairs_f2_v": ("mnist_pairs,f2", "kl_mnist_pairs_f2", ""),
    "ldm_fashion_mnist_f2": ("fashion_mnist,f2", "kl_fashion_mnist_f2", ""),
    # Which levels cross-attention pays at (factor 2, 1,500 steps each): 14 and 7, or 7 alone.
    "levels_f2_v_14_7": ("mnist_pairs,f2", "kl_mnist_pairs_f2", f"{LEVELS}=(14,7)"),
    "levels_f2_v_7": ("mnist_pairs,f2", "kl_mnist_pairs_f2", f"{LEVELS}=(7,)"),
}
PIXEL = "pixel_fashion_mnist"
UNCOND = tuple(name for name in LATENT if "_uncond" in name)  # scored against PIXEL


def pixel_rate(seconds: float = 20.0) -> float:
    """Train steps per second of the pixel model on this machine (a short timed loop)."""
    config = harness.load_config("diffusion", "fashion_mnist,cpu")
    _, timing = harness.time_train_step(config, seconds)
    return 1000.0 / timing["ms_per_step"]


def read_reconstructions(where: harness.Runs, name: str, num: int = 2_000) -> dict:
    """How often the MNIST evaluator reads both digits of a pairs first stage's reconstructions
    of the first ``num`` test pairs, and of the pairs themselves: whether the latents keep what
    a diffusion model over them must draw. Cached in ``evals/<name>_read.json``."""
    import json

    import numpy as np

    out = where.eval_json(name + "_read")
    if not os.path.exists(out):
        from jaxgen.data.sources import load_splits
        from jaxgen.engine import loop, sampling
        from jaxgen.eval import evaluator as evaluator_lib
        from jaxgen.eval import prompts

        setup, state = loop.restore_for_inference(where.workdir(name))
        _, test = load_splits(setup.config.data)
        batch = test.get(np.arange(min(num, test.num_examples)))
        images, labels = batch["image"], batch["label"]
        fn = sampling.reconstructor(setup)
        rec = np.concatenate(
            [np.asarray(fn(state, images[i : i + 250])) for i in range(0, len(images), 250)]
        )
        path = where.evaluator("mnist") if where.quick else None
        ev = evaluator_lib.load_for("mnist", path, allow_weak=where.quick)
        read = {}
        for what, x in (("originals", images), ("reconstructions", rec)):
            left, right = prompts.read_pairs(ev, x)
            read[what] = prompts.pair_scores(left, right, labels // 10, labels % 10)["correct"]
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "w") as f:
            json.dump({"num": len(images), **read}, f)
    with open(out) as f:
        return json.load(f)


def sampling_rates(where: harness.Runs, names, batch: int = 500, repeats: int = 3) -> dict:
    """Sampling img/s of the unconditional models ``names`` measured in one process, in turns
    (after a compiling call, one call of each model a round for ``repeats`` rounds; the
    median), so that their ratios compare like with like on a shared machine. A call is one
    compiled ``family.sample`` of ``batch`` images with the config's sampler (20 DPM-Solver++
    steps), decoding included.
    Cached in ``evals/sampling_rates.json`` for the same names."""
    import json

    out = where.eval_json("sampling_rates")
    if os.path.exists(out):
        with open(out) as f:
            cached = json.load(f)
        if cached["names"] == list(names):
            return cached
    import jax

    from jaxgen.engine import loop, sampling

    calls = {}
    for name in names:
        setup, state = loop.restore_for_inference(where.workdir(name))
        kwargs = sampling.prepare(setup, {}, loop.restore_for_inference)
        fn = jax.jit(
            lambda state, rng, setup=setup, kw=kwargs: setup.family.sample(
                setup.config, state, rng, batch, **kw
            )
        )
        calls[name] = (fn, state)
        jax.block_until_ready(fn(state, jax.random.PRNGKey(0)))  # compile
    times = {name: [] for name in names}
    for r in range(repeats):
        for name, (fn, state) in calls.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(state, jax.random.PRNGKey(1 + r)))
            times[name].append(time.perf_counter() - t0)
    rates = {name: batch / statistics.median(t) for name, t in times.items()}
    result = {"names": list(names), "batch": batch, "repeats": repeats, "img_s": rates}
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f)
    return result


def run_missing(where: harness.Runs) -> None:
    """Train and score what is missing, factor 4 first (the text models and the comparison with
    pixel diffusion), then factor 2."""
    for factor in ("", "_f2"):
        for name, (arg, dataset) in FIRST_STAGES.items():
            if name.endswith("_f2") == bool(factor):
                workdir = where.train(name, "autoencoder_kl", arg)
                if dataset != "mnist_pairs":
                    where.evaluate(name, f"--workdir={workdir}", dataset, num=10_000)
                else:
                    read_reconstructions(where, name)
        for name, (arg, first, flags) in LATENT.items():
            if ("_f2" in name) == bool(factor):
                where.train(name, "ldm", arg, flags, first_stage=where.workdir(first))
        if not factor:
            latent = where.workdir("ldm_fashion_mnist_uncond")
            _, wall_s = harness.train_info(latent)
            steps = 2 if where.quick else max(1, round(wall_s * pixel_rate()))
            where.train(
                PIXEL, "diffusion", "fashion_mnist,cpu", f"--config.train.num_steps={steps}"
            )
            for name in (*UNCOND, PIXEL):
                where.evaluate(
                    name, f"--workdir={where.workdir(name)}", "fashion_mnist", num=10_000
                )
            sampling_rates(where, (PIXEL, *UNCOND), batch=8 if where.quick else 500)


def rows(where: harness.Runs) -> list[dict]:
    import json

    out = []
    sampling = {}
    path = where.eval_json("sampling_rates")
    if os.path.exists(path):
        with open(path) as f:
            sampling = json.load(f)["img_s"]
    for name in [*FIRST_STAGES, *LATENT, PIXEL]:
        workdir = where.workdir(name)
        if not harness.finished(workdir):
            continue
        steps, wall_s = harness.train_info(workdir)
        train = [r for r in harness.metrics_rows(workdir) if r.get("split") == "train"]
        rates = [r["examples_per_s"] for r in train[1:] if "examples_per_s" in r]
        row = {"run": name, "steps": steps, "train_s": wall_s}
        with open(os.path.join(workdir, "config.json")) as f:
            row["prediction"] = json.load(f).get("diffusion", {}).get("prediction")
        row["train_img_s"] = sorted(rates)[len(rates) // 2] if rates else None
        path = where.eval_json(name)
        if os.path.exists(path):
            with open(path) as f:
                scored = json.load(f)
            row.update(scored["metrics"])
            row["sample_img_s"] = scored.get("samples_per_s")
        if name in sampling:
            row["sample_img_s_one_run"] = sampling[name]
            row["x_pixel"] = sampling[name] / sampling[PIXEL] if PIXEL in sampling else None
        path = where.eval_json(name + "_read")
        if os.path.exists(path):
            with open(path) as f:
                row["read"] = json.load(f)["reconstructions"]
        out.append(row)
    return out


def _fmt(value, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def table(found: list[dict]) -> str:
    lines = [
        "# Latent diffusion against pixel diffusion (issue 29)",
        "",
        "`python bench/ldm_table.py --run` (runs in the module docstring). FD, KID, precision "
        "and recall at N = 10,000 on the Fashion-MNIST evaluator's features: of a first stage's "
        "reconstructions of the test split, of a generator's samples. img/s: the median of the "
        "train log's rows; sampling, 20 DPM-Solver++ steps with decoding, as the scoring run "
        "measured it (separate runs), and measured in one process in turns (one run; x pixel: "
        "the ratio to the pixel model there). read: the share of a "
        "pairs first stage's reconstructions of 2,000 test pairs whose two digits the MNIST "
        "evaluator reads right. prediction: what a diffusion model is trained to predict.",
        "",
        "| run | prediction | steps | train s | train img/s | FD | KID | precision | recall | "
        "read | sample img/s | sample img/s, one run | x pixel |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in found:
        lines.append(
            f"| {r['run']} | {r.get('prediction') or ''} | {r['steps']} | {r['train_s']:.0f} | "
            f"{_fmt(r['train_img_s'], '.0f')} "
            f"| {_fmt(r.get('fd'), '.1f')} | {_fmt(r.get('kid'), '.3f')} | "
            f"{_fmt(r.get('precision'), '.2f')} | {_fmt(r.get('recall'), '.2f')} | "
            f"{_fmt(r.get('read'), '.1%')} | {_fmt(r.get('sample_img_s'), '.0f')} | "
            f"{_fmt(r.get('sample_img_s_one_run'), '.0f')} | {_fmt(r.get('x_pixel'), '.1f')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--run", action="store_true", help="train and score what is missing")
    args = parser.parse_args()
    where = harness.Runs.for_driver("ldm_table", args.quick)
    if args.run:
        run_missing(where)
    found = rows(where)
    path = harness.out_path(args, "ldm_table")
    harness.write_results(path, table(found), found)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
