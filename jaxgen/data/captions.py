"""Captions made from images' labels, and the word-level vocabulary that tokenizes them.

A caption set turns a label into a short English caption that is true of every image with that
label. Each set is a list of templates; a template holds for some labels (``holds(label)``) and
fills its slots from the label with words chosen at random (``"three"`` or ``"3"``, ``"a
sneaker"`` or ``"a trainer"``). Which template and which words an example gets is drawn from
``(seed, split, example index)``, so the captions are fixed data, the same in every run.

Sets (``data.captions``):

- ``fashion_mnist``: names and short descriptions of the ten classes, and two
  super-categories: *footwear* (sandal, sneaker, ankle boot) and *tops* (T-shirt, pullover,
  shirt, coat);
- ``mnist_pairs``: for the two-digit canvases of ``data.compose = 'pairs'`` (label
  ``10 * left + right``): both digits and their order in several phrasings ("a 3 to the left
  of a 7", "seven on the right, three on the left"), or properties ("two odd digits", "an even
  digit then a 9").

Some templates are *held out*: train captions never use them, test captions do (half of
them), and a prompt may; that measures whether a model understands a phrasing it never saw.

The vocabulary (``Vocabulary``) is every word any template can write, held-out ones included,
after ``words()``: lower case, commas dropped. Token 0 pads, token 1 (``<bos>``) starts every
caption, so even the empty caption, the unconditional model's, has one token to attend to.
A run saves its vocabulary in its workdir (``vocab.json``); an unknown word in a prompt is an
error that names the word and that file.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import string
from collections.abc import Callable, Sequence

import numpy as np

from jaxgen.errors import ConfigError

PAD, BOS = 0, 1
SPECIALS = ("<pad>", "<bos>")
VOCAB_FILE = "vocab.json"
DRAWS = 4  # uniform draws per caption: the template, then one per slot

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


class CaptionError(ConfigError):
    """A prompt the vocabulary cannot tokenize, or a bad caption setting."""


def empty_prompt(length: int) -> np.ndarray:
    """The tokens of the empty caption, the unconditional model's: ``<bos>`` then padding."""
    return np.array([BOS] + [PAD] * (length - 1), np.int32)


def words(text: str) -> list[str]:
    """A caption's words: lower case, commas dropped, split on white space."""
    return text.lower().replace(",", " ").split()


@dataclasses.dataclass(frozen=True)
class Template:
    """``text`` with ``{slot}`` fields; ``holds(label)``: whether it may caption that label."""

    text: str
    holds: Callable[[int], bool] = lambda label: True
    held_out: bool = False


@dataclasses.dataclass(frozen=True)
class CaptionSet:
    """``fill(slot, label, u) -> str`` writes a slot for a label from a uniform draw ``u``;
    ``choices(slot, label)`` lists every value a slot can take (for the vocabulary)."""

    name: str
    num_classes: int
    templates: tuple[Template, ...]
    choices: Callable[[str, int], Sequence[str]]

    def fill(self, slot: str, label: int, u: float) -> str:
        options = self.choices(slot, label)
        return options[min(int(u * len(options)), len(options) - 1)]

    def eligible(self, label: int, split: str) -> list[Template]:
        """Templates that hold for ``label``: train captions use the training ones only."""
        return [
            t for t in self.templates if t.holds(label) and (split != "train" or not t.held_out)
        ]

    def caption(self, label: int, draws: Sequence[float], split: str = "train") -> str:
        """The caption of one example from its ``DRAWS`` uniform draws. Test captions take a
        held-out template half of the time (when one holds), so both kinds are measured."""
        templates = self.eligible(label, split)
        if split != "train":
            held = [t for t in templates if t.held_out]
            if held:
                kept = [t for t in templates if not t.held_out]
                templates = held if draws[0] < 0.5 else kept
                draws = [(2 * draws[0]) % 1.0, *draws[1:]]
        if not templates:
            raise CaptionError(f"caption set {self.name!r}: no template holds for label {label}")
        template = templates[min(int(draws[0] * len(templates)), len(templates) - 1)]
        return self.write(template, label, draws[1:])

    def write(self, template: Template, label: int, draws: Sequence[float]) -> str:
        """``template`` filled for ``label``, slot ``i`` from ``draws[i]``."""
        slots = _slots(template.text)
        values = {s: self.fill(s, label, draws[i % len(draws)]) for i, s in enumerate(slots)}
        return template.text.format(**values)

    def vocabulary(self) -> Vocabulary:
        seen: set[str] = set()
        for template in self.templates:
            slots = _slots(template.text)
            seen.update(words(template.text.format(**{s: "" for s in slots})))
            for label in range(self.num_classes):
                for s in slots:
                    for value in self.choices(s, label):
                        seen.update(words(value))
        return Vocabulary(tuple(sorted(seen)))

    def max_words(self) -> int:
        """The longest caption any template can write, in words."""
        longest = 0
        for template in self.templates:
            slots = _slots(template.text)
            for label in range(self.num_classes):
                if not template.holds(label):
                    continue
                fixed = len(words(template.text.format(**{s: "" for s in slots})))
                extra = sum(max(len(words(v)) for v in self.choices(s, label)) for s in slots)
                longest = max(longest, fixed + extra)
        return longest


def _slots(text: str) -> list[str]:
    return [field for _, field, _, _ in string.Formatter().parse(text) if field]


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """Words to token ids: ``<pad>`` 0, ``<bos>`` 1, then the words in sorted order."""

    words: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(SPECIALS) + len(self.words)

    @functools.cached_property
    def ids(self) -> dict[str, int]:
        return {w: i + len(SPECIALS) for i, w in enumerate(self.words)}

    def encode(self, text: str, length: int, where: str = "") -> np.ndarray:
        """int32 ``[length]``: ``<bos>``, the words' ids, then padding."""
        table = self.ids  # built once per vocabulary, not once per caption
        tokens = [BOS]
        for word in words(text):
            if word not in table:
                shown = ", ".join(self.words[:40]) + (", ..." if len(self.words) > 40 else "")
                raise CaptionError(
                    f"{where or 'prompt'} {text!r}: the word {word!r} is not in the vocabulary "
                    f"({len(self.words)} words: {shown})"
                )
            tokens.append(table[word])
        if len(tokens) > length:
            raise CaptionError(
                f"{where or 'prompt'} {text!r} has {len(tokens) - 1} words; at most "
                f"{length - 1} fit (data.caption_len={length} tokens, <bos> included)"
            )
        return np.array(tokens + [PAD] * (length - len(tokens)), np.int32)

    def encode_all(self, texts: Sequence[str], length: int, where: str = "") -> np.ndarray:
        return np.stack([self.encode(t, length, where) for t in texts])

    def decode(self, tokens) -> str:
        names = SPECIALS + self.words
        return " ".join(names[int(t)] for t in tokens if int(t) not in (PAD, BOS))

    def save(self, workdir: str, captions: str) -> str:
        """Write ``vocab.json`` in ``workdir`` (atomically); returns its path."""
        from jaxgen.files import atomic_path

        path = os.path.join(workdir, VOCAB_FILE)
        with atomic_path(path) as tmp, open(tmp, "w") as f:
            json.dump({"captions": captions, "specials": SPECIALS, "words": self.words}, f)
        return path

    @classmethod
    def load(cls, workdir: str) -> Vocabulary:
        path = os.path.join(workdir, VOCAB_FILE)
        try:
            with open(path) as f:
                data = json.load(f)
            vocab = cls(tuple(data["words"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CaptionError(
                f"{path}: cannot read the run's vocabulary ({e}); a text model's workdir holds "
                "the vocab.json its training wrote"
            ) from e
        return vocab


# ------------------------------------------------------------------------ Fashion-MNIST
FASHION_NAMES = (
    ("a t-shirt", "a tee"),
    ("trousers", "a pair of trousers", "pants"),
    ("a pullover", "a sweater", "a jumper"),
    ("a dress",),
    ("a coat", "a jacket"),
    ("a sandal",),
    ("a shirt", "a blouse"),
    ("a sneaker", "a trainer", "a running shoe"),
    ("a bag", "a handbag"),
    ("an ankle boot", "a boot"),
)
FOOTWEAR, TOPS = (5, 7, 9), (0, 2, 4, 6)
FASHION_GROUPS = {
    FOOTWEAR: ("footwear", "a piece of footwear", "some footwear"),
    TOPS: ("a top", "a garment for the upper body"),
}


def _bare(name: str) -> str:
    """A name without its article ("a sneaker" -> "sneaker")."""
    first, _, rest = name.partition(" ")
    return rest if first in ("a", "an") and rest else name


def _fashion_choices(slot: str, label: int) -> Sequence[str]:
    if slot == "name":
        return FASHION_NAMES[label]
    if slot == "bare":
        return tuple(dict.fromkeys(_bare(n) for n in FASHION_NAMES[label]))
    if slot == "group":
        return next((v for k, v in FASHION_GROUPS.items() if label in k), ())
    raise KeyError(slot)


def _in_group(label: int) -> bool:
    return any(label in k for k in FASHION_GROUPS)


FASHION_MNIST = CaptionSet(
    name="fashion_mnist",
    num_classes=10,
    templates=(
        Template("{name}"),
        Template("{bare}"),
        Template("a photo of {name}"),
        Template("a picture of {name}"),
        Template("{group}", _in_group),
        Template("a photo of {group}", _in_group),
        Template("a picture of {group}", _in_group, held_out=True),
    ),
    choices=_fashion_choices,
)


# ------------------------------------------------------------------------ MNIST pairs
def _article(word: str) -> str:
    return ("an " if word in ("8", "eight", "11", "eleven") else "a ") + word


def _digit(d: int) -> tuple[str, str]:
    return (str(d), DIGIT_WORDS[d])


def _parity(d: int) -> str:
    return "an odd digit" if d % 2 else "an even digit"


def _pairs_choices(slot: str, label: int) -> Sequence[str]:
    left, right = divmod(label, 10)
    d = {"a": left, "b": right}
    if slot in ("a", "b"):
        return _digit(d[slot])
    if slot in ("A", "B"):
        return tuple(_article(w) for w in _digit(d[slot.lower()]))
    if slot in ("pa", "pb"):
        return (_parity(d[slot[1]]),)
    if slot == "x":  # either digit, named with its article
        return tuple(_article(w) for w in (*_digit(left), *_digit(right)))
    raise KeyError(slot)


def _both(parity: int) -> Callable[[int], bool]:
    return lambda label: all(d % 2 == parity for d in divmod(label, 10))


MNIST_PAIRS = CaptionSet(
    name="mnist_pairs",
    num_classes=100,
    templates=(
        Template("{A} to the left of {B}"),
        Template("{B} to the right of {A}"),
        Template("{a} on the left, {b} on the right"),
        Template("{A} then {B}"),
        Template("{a} followed by {b}"),
        Template("two odd digits", _both(1)),
        Template("two even digits", _both(0)),
        Template("{pa} then {B}"),
        Template("{A} then {pb}"),
        Template("one of the digits is {x}"),
        # One digit and its side, whichever side is named: with these the held-out template
        # below is a new order of phrases seen in training (it still came out swapped 92% of
        # the time at w = 7.5: docs/families/latent.md).
        Template("{A} on the left"),
        Template("{B} on the right"),
        Template("{b} on the right, {a} on the left", held_out=True),
        Template("{A} followed by {B}", held_out=True),
        Template("{pa} then {pb}", held_out=True),
    ),
    choices=_pairs_choices,
)

# The templates that name both digits in order (the prompt-adherence prompts) and the ordered
# pairs never composed for training (``data.held_out_pairs``).
ORDERED = (
    "{A} to the left of {B}",
    "{B} to the right of {A}",
    "{a} on the left, {b} on the right",
    "{A} then {B}",
    "{a} followed by {b}",
    "{b} on the right, {a} on the left",
    "{A} followed by {B}",
)
HELD_OUT_PAIRS = ((3, 7), (8, 1), (0, 5), (6, 2), (9, 4))

CAPTION_SETS = {s.name: s for s in (FASHION_MNIST, MNIST_PAIRS)}


def caption_set(name: str) -> CaptionSet:
    if name not in CAPTION_SETS:
        raise CaptionError(
            f"data.captions={name!r} is not a caption set; expected one of "
            f"{sorted(CAPTION_SETS)} (or '' for none)"
        )
    return CAPTION_SETS[name]


def template(caption_set_: CaptionSet, text: str) -> Template:
    """The template of ``caption_set_`` whose text is ``text``."""
    for t in caption_set_.templates:
        if t.text == text:
            return t
    raise KeyError(text)


def split_draws(seed: int, split: str, num: int) -> np.ndarray:
    """``[num, DRAWS]`` uniform draws: example ``i``'s caption choices, fixed by the seed."""
    rng = np.random.default_rng([seed, 7919, 0 if split == "train" else 1])
    return rng.random((num, DRAWS))


def captions_of(
    caption_set_: CaptionSet, labels, draws: np.ndarray, split: str = "train"
) -> list[str]:
    return [caption_set_.caption(int(y), d, split) for y, d in zip(labels, draws, strict=True)]
