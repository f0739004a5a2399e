"""What a text-conditional model does with its prompts, read by the data set's evaluator.

- **Prompt adherence** on MNIST pairs: a sample of a prompt that names two digits in order is
  correct when the MNIST evaluator reads its left half as the left digit and its right half as
  the right digit. Prompts come from the ordered templates (``captions.ORDERED``), both those
  used in training and the held-out ones, over ordered pairs seen in training and the held-out
  pairs (``captions.HELD_OUT_PAIRS``). ``class_adherence`` scores a class-conditional pairs
  model (label ``10 * left + right``) the same way: the control without text.
- **Negative prompts**: the share of each class among samples of a prompt, with and without a
  negative prompt (Fashion-MNIST "footwear" without "sneaker"; pairs "two odd digits" without
  "9", counted in either half).

``sample_fn(texts, negative, scale) -> images`` is the model; these functions only choose the
prompts and read the images, so they work for any text model of these data sets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from jaxgen.data import captions

SampleFn = Callable[[Sequence[str], "str | None", float], np.ndarray]


def pair_prompts(pairs, held_out_templates: bool, seed: int = 0) -> list[tuple[str, int, int]]:
    """``(prompt, left, right)`` for every ordered pair and every ordered template of the kind
    asked for (held out of training or not), its words drawn from ``seed``."""
    rng = np.random.default_rng([seed, 31])
    out = []
    for text in captions.ORDERED:
        template = captions.template(captions.MNIST_PAIRS, text)
        if template.held_out != held_out_templates:
            continue
        for a, b in pairs:
            prompt = captions.MNIST_PAIRS.write(template, 10 * a + b, rng.random(3))
            out.append((prompt, a, b))
    return out


def pair_prompt_templates(pairs, held_out_templates: bool) -> list[str]:
    """The template of each row of ``pair_prompts(pairs, held_out_templates)``, in its order."""
    return [
        text
        for text in captions.ORDERED
        if captions.template(captions.MNIST_PAIRS, text).held_out == held_out_templates
        for _ in pairs
    ]


def training_pairs(count: int, seed: int = 0) -> list[tuple[int, int]]:
    """``count`` ordered pairs that training composes (none of the held-out ones)."""
    held = set(captions.HELD_OUT_PAIRS)
    every = [(a, b) for a in range(10) for b in range(10) if (a, b) not in held]
    rng = np.random.default_rng([seed, 37])
    return [every[i] for i in rng.choice(len(every), count, replace=False)]


def read_pairs(evaluator, images) -> tuple[np.ndarray, np.ndarray]:
    """The evaluator's reading of each half of ``[N, H, 2 W, C]`` images: ``(left, right)``."""
    images = np.asarray(images)
    width = images.shape[2] // 2
    left = evaluator.outputs(images[:, :, :width], "the left halves")[0].argmax(-1)
    right = evaluator.outputs(images[:, :, width:], "the right halves")[0].argmax(-1)
    return left, right


def pair_scores(left, right, want_left, want_right) -> dict:
    """How halves read as ``(left, right)`` match the wanted digits: both in order
    (``correct``), each half, and ``swapped``, the share of samples of two different digits
    read as the two in the other order (as often as ``correct`` when a model knows which digits
    a prompt names but not where they go)."""
    left, right = np.asarray(left), np.asarray(right)
    want_left, want_right = np.asarray(want_left), np.asarray(want_right)
    differ = want_left != want_right
    swapped = (left == want_right) & (right == want_left) & differ
    return {
        "correct": float(np.mean((left == want_left) & (right == want_right))),
        "left": float(np.mean(left == want_left)),
        "right": float(np.mean(right == want_right)),
        "swapped": float(swapped.sum() / max(int(differ.sum()), 1)),
        "samples": len(left),
    }


def adherence(
    sample_fn: SampleFn,
    evaluator,
    prompts: Sequence[tuple[str, int, int]],
    per_prompt: int,
    scale: float,
    negative: str | None = None,
    by: Sequence[str] | None = None,
) -> dict:
    """``pair_scores`` of ``per_prompt`` samples of each ``(prompt, left, right)``; with ``by``
    (a key per prompt, such as its template) also ``"by"``: the scores of each key's samples."""
    texts = [p for p, _, _ in prompts for _ in range(per_prompt)]
    images = sample_fn(texts, negative, scale)
    left, right = read_pairs(evaluator, images)
    want_left = np.repeat([a for _, a, _ in prompts], per_prompt)
    want_right = np.repeat([b for _, _, b in prompts], per_prompt)
    result = pair_scores(left, right, want_left, want_right)
    if by is not None:
        if len(by) != len(prompts):
            raise ValueError(f"by has {len(by)} keys for {len(prompts)} prompts")
        keys = np.repeat(np.asarray(by, dtype=object), per_prompt)
        result["by"] = {
            key: pair_scores(left[m], right[m], want_left[m], want_right[m])
            for key in dict.fromkeys(by)
            for m in [keys == key]
        }
    return result


def class_adherence(
    sample_fn: Callable[[np.ndarray, float], np.ndarray],
    evaluator,
    pairs: Sequence[tuple[int, int]],
    per_pair: int,
    scale: float,
) -> dict:
    """``pair_scores`` of a class-conditional pairs model (label ``10 * left + right``):
    ``sample_fn(labels, scale) -> images``. The control for a text model over the same latents:
    the same placing of digits without any text."""
    want_left = np.repeat([a for a, _ in pairs], per_pair)
    want_right = np.repeat([b for _, b in pairs], per_pair)
    images = sample_fn(10 * want_left + want_right, scale)
    left, right = read_pairs(evaluator, images)
    return pair_scores(left, right, want_left, want_right)


def class_shares(evaluator, images, classes: int) -> np.ndarray:
    """The share of ``images`` the evaluator assigns to each class: ``[classes]``."""
    verdicts = evaluator.outputs(images)[0].argmax(-1)
    return np.bincount(verdicts, minlength=classes) / len(verdicts)


def digit_shares(evaluator, images) -> dict:
    """For pairs: the share of samples with a given digit in either half, and of samples whose
    halves are both odd (``"both_odd"``)."""
    left, right = read_pairs(evaluator, images)
    shares = {str(d): float(np.mean((left == d) | (right == d))) for d in range(10)}
    shares["both_odd"] = float(np.mean((left % 2 == 1) & (right % 2 == 1)))
    return shares
