"""Prompt adherence and negative prompts of text-conditional latent diffusion (issue 29).

    python bench/text_prompts.py --pairs=runs/ldm_pairs [--fashion=runs/ldm_fashion] \\
        [--pairs-cond=runs/ldm_pairs_cond] [--scales=1,2,4,7.5,10] [--per-prompt=10] \\
        [--steps=20] [--grids]

- **Adherence** (``--pairs``, a text model of ``mnist_pairs``): for each guidance scale, the
  share of samples the MNIST evaluator reads as the prompt's left and right digits, over four
  groups of prompts: the ordered templates used in training and the held-out ones, each over 20
  ordered pairs seen in training and over the five held-out pairs (``jaxgen.eval.prompts``).
- **The class-conditional control** (``--pairs-cond``, ``configs/ldm.py:mnist_pairs,cond``
  over the same first stage): the same reading for labels ``10 * left + right`` of the seen
  pairs, so that what the latent model cannot draw is told apart from what the text path loses.
  Every row also has ``swapped``: the share of samples of two different digits read in the
  other order.
- **Negative prompts**: pairs "two odd digits" with and without the negative prompt "9" (the
  share of samples with a 9 in either half); with ``--fashion``, "footwear" with and without
  "sneaker" (the evaluator's share of sandals, sneakers and ankle boots).
- ``--grids``: ``docs/images/ldm_<name>.png``, one row per prompt, without then with the
  negative prompt (``--out=bench/results/text_prompts_f2``: ``ldm_<name>_f2.png``).

Writes ``bench/results/text_prompts.md`` and ``.json``; a run of one part keeps the other's
figures from the last run. Every sample is made with DPM-Solver++ (``--steps`` model calls) and
classifier-free guidance.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jaxgen.data import captions  # noqa: E402
from jaxgen.eval import prompts as prompt_eval  # noqa: E402

PARTS = ("pairs", "pairs_cond", "fashion")  # the results' parts, each from its own option
FASHION_NAMES = (
    "T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
    "ankle boot",
)  # fmt: skip


def _generator(workdir: str, steps: int, batch: int, seed: int):
    """``(setup, generate(num, scale, condition) -> images)`` for the model in ``workdir``,
    guided by classifier-free guidance; ``condition`` holds its tokens or labels."""
    import jax

    from jaxgen.engine import loop, sampling

    setup, state = loop.restore_for_inference(workdir)

    def generate(num, scale, condition):
        values = {"guidance": "cfg", "scale": float(scale), "steps": steps}
        kwargs = sampling.prepare(setup, values, loop.restore_for_inference)
        kwargs.update(condition)
        key = jax.random.PRNGKey(seed)
        images, _ = sampling.generate(setup, state, key, num, kwargs, batch=batch)
        return np.asarray(images)

    return setup, generate


def sampler(workdir: str, steps: int, batch: int, seed: int):
    """``sample_fn(texts, negative, scale) -> images`` of the text model in ``workdir``."""
    setup, generate = _generator(workdir, steps, batch, seed)
    vocab = captions.Vocabulary.load(workdir)
    length = setup.config.data.caption_len

    def sample_fn(texts, negative, scale):
        condition = {"text": vocab.encode_all(list(texts), length, "prompt")}
        if negative is not None:
            negatives = [negative] * len(texts)
            condition["negative_text"] = vocab.encode_all(negatives, length, "negative")
        return generate(len(texts), scale, condition)

    return sample_fn


def class_sampler(workdir: str, steps: int, batch: int, seed: int):
    """``sample_fn(labels, scale) -> images`` of the class-conditional model in ``workdir``."""
    _, generate = _generator(workdir, steps, batch, seed)
    return lambda labels, scale: generate(
        len(labels), scale, {"label": np.asarray(labels, np.int32)}
    )


def control_rows(sample_fn, evaluator, scales, per_prompt: int) -> list[dict]:
    """The class-conditional control over the seen pairs, at each scale (``per_prompt`` times
    the five ordered train templates' samples a pair, as many as the text model's group)."""
    rows = []
    pairs = prompt_eval.training_pairs(20)
    for scale in scales:
        t0 = time.time()
        result = prompt_eval.class_adherence(sample_fn, evaluator, pairs, 5 * per_prompt, scale)
        rows.append({"scale": scale, "group": "classes, seen pairs", **result})
        rows[-1]["s"] = time.time() - t0
        print(f"w={scale:g} class control: {result['correct']:.1%}", flush=True)
    return rows


def adherence_rows(sample_fn, evaluator, scales, per_prompt: int) -> list[dict]:
    seen = prompt_eval.training_pairs(20)
    groups = {
        "train templates, seen pairs": prompt_eval.pair_prompts(seen, False),
        "held-out templates, seen pairs": prompt_eval.pair_prompts(seen, True),
        "train templates, held-out pairs": prompt_eval.pair_prompts(captions.HELD_OUT_PAIRS, False),
        "held-out templates, held-out pairs": prompt_eval.pair_prompts(
            captions.HELD_OUT_PAIRS, True
        ),
    }
    by = {  # the held-out templates are also scored one by one
        "held-out templates, seen pairs": prompt_eval.pair_prompt_templates(seen, True),
        "held-out templates, held-out pairs": prompt_eval.pair_prompt_templates(
            captions.HELD_OUT_PAIRS, True
        ),
    }
    rows = []
    for scale in scales:
        for group, prompts in groups.items():
            t0 = time.time()
            result = prompt_eval.adherence(
                sample_fn, evaluator, prompts, per_prompt, scale, by=by.get(group)
            )
            rows.append({"scale": scale, "group": group, **result, "s": time.time() - t0})
            print(f"w={scale:g} {group}: {result['correct']:.1%}", flush=True)
    return rows


def negative_rows(sample_fn, evaluator, kind: str, scale: float, num: int) -> list[dict]:
    rows = []
    if kind == "pairs":
        prompt, negative = "two odd digits", "9"
        for neg in (None, negative):
            shares = prompt_eval.digit_shares(evaluator, sample_fn([prompt] * num, neg, scale))
            rows.append({"prompt": prompt, "negative": neg, **shares})
    else:
        prompt, negative = "footwear", "sneaker"
        for neg in (None, negative):
            shares = prompt_eval.class_shares(evaluator, sample_fn([prompt] * num, neg, scale), 10)
            named = {FASHION_NAMES[k]: float(shares[k]) for k in (5, 7, 9)}
            rows.append({"prompt": prompt, "negative": neg, **named})
    return rows


def not_footwear(row: dict) -> float:
    """The share of a Fashion-MNIST row's samples read as no kind of footwear."""
    return 1.0 - sum(row[name] for name in ("sandal", "sneaker", "ankle boot"))


def grid(sample_fn, path: str, rows: list[str], negative: str, scale: float, ncol: int = 8):
    from jaxgen.engine.images import save_grid

    texts = [r for r in rows for _ in range(ncol)]
    plain = sample_fn(texts, None, scale)
    steered = sample_fn(texts, negative, scale)
    parts = []
    for i in range(len(rows)):
        parts += [plain[i * ncol : (i + 1) * ncol], steered[i * ncol : (i + 1) * ncol]]
    save_grid(np.concatenate(parts), path, ncol)
    return path


def _pair_row(r: dict) -> str:
    swapped = f"{r['swapped']:.1%}" if "swapped" in r else "n/a"  # rows of earlier runs
    return (
        f"| {r['scale']:g} | {r['group']} | {r['correct']:.1%} | {r['left']:.1%} | "
        f"{r['right']:.1%} | {swapped} | {r['samples']} |"
    )


def markdown(result: dict) -> str:
    """The results page, from ``result``'s parts (``pairs``, ``pairs_cond``, ``fashion``; any
    may be absent)."""
    lines = ["# Prompts and negative prompts of text-conditional latent diffusion", ""]
    if "pairs" in result:
        part = result["pairs"]
        lines += [
            f"MNIST pairs (`{part['workdir']}`, DPM-Solver++ {part['steps']} steps, "
            f"{part['per_prompt']} samples a prompt): share of samples the MNIST evaluator "
            "reads as the prompt's digits",
            "",
            "| w | group | both digits | left | right | swapped | samples |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [_pair_row(r) for r in part["adherence"]]
        one_by_one = [
            {**scores, "scale": r["scale"], "group": f"{r['group'].split(',')[1].strip()}: {t}"}
            for r in part["adherence"]
            for t, scores in r.get("by", {}).items()
        ]
        if one_by_one:
            lines += [
                "",
                "The held-out templates one by one (the same samples)",
                "",
                "| w | pairs: template | both digits | left | right | swapped | samples |",
                "|---|---|---|---|---|---|---|",
            ]
            lines += [_pair_row(r) for r in one_by_one]
        lines += [
            "",
            f"Negative prompt at w = {part['best']:g} (the best scale above): share of samples "
            "with a 9 in either half, and with two odd digits",
            "",
            "| prompt | negative | a 9 | both odd | samples |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['prompt']} | {r['negative'] or '(none)'} | {r['9']:.1%} | "
            f"{r['both_odd']:.1%} | {part['negative_num']} |"
            for r in part["negative"]
        ]
    if "pairs_cond" in result:
        part = result["pairs_cond"]
        lines += [
            "",
            f"The class-conditional control (`{part['workdir']}`, labels `10 * left + right` of "
            "the seen pairs): the same reading without text",
            "",
            "| w | group | both digits | left | right | swapped | samples |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [_pair_row(r) for r in part["adherence"]]
    if "fashion" in result:
        part = result["fashion"]
        lines += [
            "",
            f"Fashion-MNIST (`{part['workdir']}`), w = {part['scale']:g}, "
            f"{part['negative_num']} samples: the evaluator's share of each kind of footwear",
            "",
            "| prompt | negative | sandal | sneaker | ankle boot | not footwear |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['prompt']} | {r['negative'] or '(none)'} | {r['sandal']:.1%} | "
            f"{r['sneaker']:.1%} | {r['ankle boot']:.1%} | {not_footwear(r):.1%} |"
            for r in part["negative"]
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", default="", help="workdir of a text model of mnist_pairs")
    parser.add_argument("--fashion", default="", help="workdir of a text model of fashion_mnist")
    parser.add_argument(
        "--pairs-cond", default="", help="workdir of a class-conditional model of mnist_pairs"
    )
    parser.add_argument("--scales", default="1,2,4,7.5,10")
    parser.add_argument("--per-prompt", type=int, default=10)
    parser.add_argument("--negative-num", type=int, default=500)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grids", action="store_true")
    parser.add_argument("--allow-weak-evaluator", action="store_true")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "text_prompts"))
    args = parser.parse_args()
    from jaxgen.eval import evaluator as evaluator_lib

    scales = [float(s) for s in args.scales.split(",")]
    # --out=bench/results/text_prompts_f2 draws docs/images/ldm_pairs_f2.png, and so on.
    name = os.path.basename(args.out)
    suffix = name[len("text_prompts") :] if name.startswith("text_prompts") else f"_{name}"
    # A run of one part keeps the other's figures from the last run.
    result: dict = {}
    if os.path.exists(args.out + ".json"):
        with open(args.out + ".json") as f:
            result = {k: v for k, v in json.load(f).items() if k in PARTS}
    settings = {"steps": args.steps, "negative_num": args.negative_num, "seed": args.seed}
    if args.pairs:
        ev = evaluator_lib.load_for("mnist", allow_weak=args.allow_weak_evaluator)
        fn = sampler(args.pairs, args.steps, args.batch, args.seed)
        rows = adherence_rows(fn, ev, scales, args.per_prompt)
        best = max(scales, key=lambda s: np.mean([r["correct"] for r in rows if r["scale"] == s]))
        negative = negative_rows(fn, ev, "pairs", best, args.negative_num)
        result["pairs"] = {
            "workdir": args.pairs,
            **settings,
            "per_prompt": args.per_prompt,
            "adherence": rows,
            "best": best,
            "negative": negative,
        }
        if args.grids:
            prompts = ["a 3 to the left of a 7", "two odd digits", "an even digit then a 9"]
            path = os.path.join(ROOT, "docs", "images", f"ldm_pairs{suffix}.png")
            grid(fn, path, prompts, "9", best)
    if args.pairs_cond:
        ev = evaluator_lib.load_for("mnist", allow_weak=args.allow_weak_evaluator)
        fn = class_sampler(args.pairs_cond, args.steps, args.batch, args.seed)
        result["pairs_cond"] = {
            "workdir": args.pairs_cond,
            **settings,
            "adherence": control_rows(fn, ev, scales, args.per_prompt),
        }
    if args.fashion:
        ev = evaluator_lib.load_for("fashion_mnist", allow_weak=args.allow_weak_evaluator)
        fn = sampler(args.fashion, args.steps, args.batch, args.seed)
        scale = scales[-1] if 7.5 not in scales else 7.5
        negative = negative_rows(fn, ev, "fashion", scale, args.negative_num)
        result["fashion"] = {
            "workdir": args.fashion,
            **settings,
            "scale": scale,
            "negative": negative,
        }
        if args.grids:
            prompts = ["footwear", "a top", "a photo of a bag"]
            path = os.path.join(ROOT, "docs", "images", f"ldm_fashion{suffix}.png")
            grid(fn, path, prompts, "sneaker", scale)
    with open(args.out + ".json", "w") as f:
        json.dump(result, f, indent=1)
    with open(args.out + ".md", "w") as f:
        f.write(markdown(result))
    print(f"wrote {args.out}.md and .json")


if __name__ == "__main__":
    main()
