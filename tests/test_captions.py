"""Caption data sets: every caption is true of its image's label (checked by a reading of the
captions written here, independently of the generator), held-out templates and ordered pairs
stay out of training, captions are fixed by the data seed, and the vocabulary tokenizes them
with clear errors."""

import re

import numpy as np
import pytest
from support import REQUIRE_DATA, ROOT, load_config, require_data

from jaxgen.data import captions as caps
from jaxgen.data import derived, load_splits
from jaxgen.data.sources import Split
from jaxgen.engine.config import check_derived_data
from jaxgen.errors import ConfigError

MNIST_NPZ = ROOT.parent / "shared" / "data" / "mnist.npz"

# ----------------------------------------------------------------- an independent reading
NUMBER = {w: i for i, w in enumerate("zero one two three four five six seven eight nine".split())}
NUMBER.update({str(i): i for i in range(10)})
D = r"(\w+)"
ART = r"(a|an)"


def _digit(article, word):
    """The digit a word names, after checking its article ("an" only before 8 and eight)."""
    value = NUMBER[word]
    if article is not None:
        assert article == ("an" if value == 8 else "a"), (article, word)
    return value


def pair_facts(caption):
    """What a pairs caption claims, as a predicate on ``(left, right)``; None if unreadable."""
    c = caption
    rules = [
        (rf"^{ART} {D} to the left of {ART} {D}$", lambda m: (_d(m, 1), _d(m, 3))),
        (rf"^{ART} {D} to the right of {ART} {D}$", lambda m: (_d(m, 3), _d(m, 1))),
        (rf"^{D} on the left, {D} on the right$", lambda m: (_n(m, 1), _n(m, 2))),
        (rf"^{D} on the right, {D} on the left$", lambda m: (_n(m, 2), _n(m, 1))),
        (rf"^{ART} {D} then {ART} {D}$", lambda m: (_d(m, 1), _d(m, 3))),
        (rf"^{ART} {D} followed by {ART} {D}$", lambda m: (_d(m, 1), _d(m, 3))),
        (rf"^{D} followed by {D}$", lambda m: (_n(m, 1), _n(m, 2))),
    ]
    for pattern, read in rules:
        m = re.match(pattern, c)
        if m:
            left, right = read(m)
            return lambda a, b, left=left, right=right: (a, b) == (left, right)
    if c == "two odd digits":
        return lambda a, b: a % 2 == 1 and b % 2 == 1
    if c == "two even digits":
        return lambda a, b: a % 2 == 0 and b % 2 == 0
    parity = {"odd": 1, "even": 0}
    m = re.match(rf"^an (odd|even) digit then {ART} {D}$", c)
    if m:
        p, right = parity[m[1]], _digit(m[2], m[3])
        return lambda a, b: a % 2 == p and b == right
    m = re.match(rf"^{ART} {D} then an (odd|even) digit$", c)
    if m:
        left, p = _digit(m[1], m[2]), parity[m[3]]
        return lambda a, b: a == left and b % 2 == p
    m = re.match(r"^an (odd|even) digit then an (odd|even) digit$", c)
    if m:
        p, q = parity[m[1]], parity[m[2]]
        return lambda a, b: a % 2 == p and b % 2 == q
    m = re.match(rf"^{ART} {D} on the (left|right)$", c)
    if m:
        x, side = _digit(m[1], m[2]), m[3]
        return lambda a, b: (a if side == "left" else b) == x
    m = re.match(rf"^one of the digits is {ART} {D}$", c)
    if m:
        x = _digit(m[1], m[2])
        return lambda a, b: x in (a, b)
    return None


def _d(m, i):
    return _digit(m[i], m[i + 1])


def _n(m, i):
    return _digit(None, m[i])


FASHION_NOUNS = {  # what each class may be called (the test's own list)
    0: {"t-shirt", "tee"},
    1: {"trousers", "pants"},
    2: {"pullover", "sweater", "jumper"},
    3: {"dress"},
    4: {"coat", "jacket"},
    5: {"sandal"},
    6: {"shirt", "blouse"},
    7: {"sneaker", "trainer", "running shoe"},
    8: {"bag", "handbag"},
    9: {"ankle boot", "boot"},
}
FASHION_GROUPS = {"footwear": {5, 7, 9}, "top": {0, 2, 4, 6}, "upper body": {0, 2, 4, 6}}


def fashion_classes(caption):
    """The classes a Fashion-MNIST caption is true of (by its noun)."""
    body = re.sub(r"^(a photo of|a picture of) ", "", caption)
    body = re.sub(r"^(a garment for the|a pair of|pair of|a piece of|some|an|a) ", "", body)
    for group, classes in FASHION_GROUPS.items():
        if body == group:
            return classes
    return {k for k, nouns in FASHION_NOUNS.items() if body in nouns}


def _all_captions(caption_set, split, per_label=60, seed=0):
    labels = np.repeat(np.arange(caption_set.num_classes), per_label)
    draws = caps.split_draws(seed, split, len(labels))
    return labels, caps.captions_of(caption_set, labels, draws, split)


@pytest.mark.parametrize("split", ["train", "test"])
def test_every_pairs_caption_is_true_of_its_label(split):
    labels, texts = _all_captions(caps.MNIST_PAIRS, split)
    for label, text in zip(labels, texts, strict=True):
        holds = pair_facts(text)
        assert holds is not None, f"unreadable caption {text!r}"
        assert holds(*divmod(int(label), 10)), f"{text!r} is false of pair {divmod(label, 10)}"
    # Every phrasing is used (the reading above is not vacuous).
    assert len({re.sub(r"\d|zero|one|two|three|four|five|six|seven|eight|nine", "#", t)
                for t in texts}) >= 12  # fmt: skip


@pytest.mark.parametrize("split", ["train", "test"])
def test_every_fashion_caption_is_true_of_its_label(split):
    labels, texts = _all_captions(caps.FASHION_MNIST, split)
    for label, text in zip(labels, texts, strict=True):
        classes = fashion_classes(text)
        assert int(label) in classes, f"{text!r} is not true of class {label}"
    footwear = [t for y, t in zip(labels, texts, strict=True) if "footwear" in t]
    assert footwear and {int(y) for y, t in zip(labels, texts, strict=True)
                         if "footwear" in t} == {5, 7, 9}  # fmt: skip


SLOT_PATTERNS = {
    "A": r"(a|an) \w+",
    "B": r"(a|an) \w+",
    "x": r"(a|an) \w+",
    "a": r"\w+",
    "b": r"\w+",
    "pa": r"an (odd|even) digit",
    "pb": r"an (odd|even) digit",
    "group": r"(footwear|a piece of footwear|some footwear|a top|a garment for the upper body)",
}


def _template_pattern(text):
    return "^" + re.sub(r"\{(\w+)\}", lambda m: SLOT_PATTERNS[m[1]], text) + "$"


def test_held_out_templates_only_in_test_captions():
    for caption_set in (caps.MNIST_PAIRS, caps.FASHION_MNIST):
        held = [_template_pattern(t.text) for t in caption_set.templates if t.held_out]
        assert held
        for split in ("train", "test"):
            _, texts = _all_captions(caption_set, split, per_label=40)
            used = sum(any(re.match(p, t) for p in held) for t in texts)
            if split == "train":
                assert used == 0, caption_set.name
            else:  # about half of the labels a held-out template holds for
                assert used > len(texts) / 8, (caption_set.name, used)


def test_captions_are_fixed_by_the_data_seed():
    labels = np.arange(100)
    a = caps.captions_of(caps.MNIST_PAIRS, labels, caps.split_draws(0, "train", 100))
    b = caps.captions_of(caps.MNIST_PAIRS, labels, caps.split_draws(0, "train", 100))
    c = caps.captions_of(caps.MNIST_PAIRS, labels, caps.split_draws(1, "train", 100))
    t = caps.captions_of(caps.MNIST_PAIRS, labels, caps.split_draws(0, "test", 100), "test")
    assert a == b and a != c and a != t


def _digits_split(n=400, seed=0):
    """Procedural 'digits': image i is filled with its label's value, so a pair's halves can be
    read back."""
    labels = np.random.default_rng(seed).integers(0, 10, n)
    images = np.broadcast_to((labels * 20)[:, None, None, None], (n, 4, 4, 1)).astype(np.uint8)
    return Split.from_arrays(images, labels)


def test_pairs_compose_their_labels_and_hold_out_ordered_pairs():
    base = _digits_split()
    banned = {10 * a + b for a, b in caps.HELD_OUT_PAIRS}
    train = derived.pairs(base, 3000, seed=0, split="train", held_out=True)
    test = derived.pairs(base, 3000, seed=0, split="test", held_out=True)
    for split in (train, test):
        got = split.get(np.arange(split.num_examples))
        assert got["image"].shape == (3000, 4, 8, 1)
        left, right = got["image"][:, 0, 0, 0] // 20, got["image"][:, 0, 4, 0] // 20
        np.testing.assert_array_equal(got["label"], 10 * left + right)
    train_labels = set(train.get(np.arange(3000))["label"].tolist())
    test_labels = set(test.get(np.arange(3000))["label"].tolist())
    assert not train_labels & banned
    assert banned <= test_labels
    assert {10 * b + a for a, b in caps.HELD_OUT_PAIRS} <= train_labels  # the reverse is seen
    kept = derived.pairs(base, 3000, seed=0, split="train", held_out=False)
    assert set(kept.get(np.arange(3000))["label"].tolist()) & banned


def test_captioned_split_tokens_decode_to_true_captions():
    base = derived.pairs(_digits_split(), 500, seed=0, split="train", held_out=True)
    split = derived.captioned(base, "mnist_pairs", 12, seed=0, split="train")
    got = split.get(np.arange(500))
    vocab = caps.MNIST_PAIRS.vocabulary()
    assert got["text"].shape == (500, 12) and got["text"].dtype == np.int32
    assert (got["text"][:, 0] == caps.BOS).all()
    for label, tokens in zip(got["label"], got["text"], strict=True):
        text = vocab.decode(tokens)
        pattern = text.replace(" on the right ", " on the right, ").replace(
            " on the left ", " on the left, "
        )
        holds = pair_facts(text) or pair_facts(pattern)
        assert holds is not None and holds(*divmod(int(label), 10)), text
    np.testing.assert_array_equal(split.get(np.arange(7))["text"], got["text"][:7])


def test_vocabulary_errors_name_the_word_and_the_limit(tmp_path):
    vocab = caps.MNIST_PAIRS.vocabulary()
    tokens = vocab.encode("a 3 to the left of a 7", 12)
    assert tokens[0] == caps.BOS and (tokens[9:] == caps.PAD).all() and tokens[8] != caps.PAD
    assert vocab.decode(tokens) == "a 3 to the left of a 7"
    np.testing.assert_array_equal(vocab.encode("", 4), [caps.BOS, 0, 0, 0])
    with pytest.raises(caps.CaptionError, match=r"'purple' is not in the vocabulary"):
        vocab.encode("a purple 3", 12)
    with pytest.raises(caps.CaptionError, match=r"at most 3 fit"):
        vocab.encode("a 3 to the left", 4)
    vocab.save(str(tmp_path), "mnist_pairs")
    assert caps.Vocabulary.load(str(tmp_path)) == vocab
    (tmp_path / caps.VOCAB_FILE).write_text("{not json")
    with pytest.raises(caps.CaptionError, match="cannot read the run's vocabulary"):
        caps.Vocabulary.load(str(tmp_path))


def test_caption_config_is_checked():
    config = load_config(ROOT / "configs" / "vae.py", "mnist")
    config.data.captions = "mnist_pairs"
    config.data.caption_len = 5
    with pytest.raises(ConfigError, match=r"data.caption_len=5 is too short.*at least 9"):
        check_derived_data(config.data)
    config.data.captions = "cifar_captions"
    with pytest.raises(ConfigError, match=r"data.captions='cifar_captions' is not a caption set"):
        check_derived_data(config.data)
    config.data.captions = ""
    config.data.compose = "triples"
    with pytest.raises(ConfigError, match=r"data.compose='triples' is not one of"):
        check_derived_data(config.data)


@pytest.mark.slow
@pytest.mark.skipif(
    not REQUIRE_DATA and not MNIST_NPZ.exists(), reason="../shared/data/mnist.npz not present"
)
def test_real_mnist_pairs_with_captions():
    require_data(MNIST_NPZ)
    config = load_config(ROOT / "configs" / "vae.py", "mnist")
    config.data.compose = "pairs"
    config.data.image_shape = (28, 56, 1)
    config.data.num_train, config.data.num_test = 60_000, 10_000
    config.data.captions = "mnist_pairs"
    train, test = load_splits(config.data)
    assert (train.num_examples, test.num_examples) == (60_000, 10_000)
    batch = train.get(np.arange(64))
    assert batch["image"].shape == (64, 28, 56, 1) and batch["text"].shape == (64, 12)
    labels = train.get(np.arange(60_000))["label"]
    assert set(np.unique(labels)) == set(range(100)) - {10 * a + b for a, b in caps.HELD_OUT_PAIRS}


# ----------------------------------------------------------------- prompt adherence prompts
def test_adherence_prompts_name_their_pair_in_order_and_keep_held_out_kinds_apart():
    from jaxgen.eval import prompts as prompt_eval

    seen = prompt_eval.training_pairs(20)
    assert len(set(seen)) == 20 and not set(seen) & set(caps.HELD_OUT_PAIRS)
    held = [_template_pattern(t.text) for t in caps.MNIST_PAIRS.templates if t.held_out]
    for held_out in (False, True):
        prompts = prompt_eval.pair_prompts(seen, held_out)
        assert len(prompts) == 20 * (2 if held_out else 5)
        for text, a, b in prompts:
            holds = pair_facts(text)
            assert holds(a, b), text
            assert a == b or not holds(b, a), text  # the order is part of the prompt
            assert any(re.match(p, text) for p in held) == held_out, text
        # Each prompt's template, in the same order: the prompt matches it and no other.
        templates = prompt_eval.pair_prompt_templates(seen, held_out)
        assert len(templates) == len(prompts)
        for (text, _, _), template in zip(prompts, templates, strict=True):
            matches = [t for t in caps.ORDERED if re.match(_template_pattern(t), text)]
            assert matches == [template], (text, matches)


def test_read_pairs_reads_each_half():
    from jaxgen.eval import prompts as prompt_eval

    class Brightness:  # an "evaluator" that reads a half's brightness as its digit
        def outputs(self, images, what=""):
            digits = np.round(np.asarray(images).mean(axis=(1, 2, 3)) / 20).astype(int)
            return np.eye(10)[digits], None

    pairs = np.array([[3, 7], [0, 9], [5, 5]])
    halves = [np.full((3, 4, 4, 1), 20 * pairs[:, i, None, None, None]) for i in (0, 1)]
    images = np.concatenate(halves, axis=2)
    left, right = prompt_eval.read_pairs(Brightness(), images)
    np.testing.assert_array_equal(left, pairs[:, 0])
    np.testing.assert_array_equal(right, pairs[:, 1])
    fn = lambda texts, negative, scale: images[: len(texts)]  # noqa: E731
    result = prompt_eval.adherence(
        fn, Brightness(), [("a", 3, 7), ("b", 0, 9), ("c", 5, 1)], 1, 1.0
    )
    assert result["correct"] == 2 / 3 and result["right"] == 2 / 3 and result["left"] == 1.0
    assert result["swapped"] == 0.0
    # Scored by key too: each key's own samples.
    result = prompt_eval.adherence(
        fn, Brightness(), [("a", 3, 7), ("b", 0, 9), ("c", 5, 1)], 1, 1.0, by=["x", "y", "x"]
    )
    assert result["by"]["x"]["correct"] == 0.5 and result["by"]["x"]["samples"] == 2
    assert result["by"]["y"]["correct"] == 1.0 and result["by"]["y"]["samples"] == 1
    # A class-conditional model that draws each pair in the other order: every sample swapped.
    swap = lambda labels, scale: images[[1, 0]]  # 90 and 73 drawn as 09 and 37  # noqa: E731
    result = prompt_eval.class_adherence(swap, Brightness(), [(9, 0), (7, 3)], 1, 1.0)
    assert result["correct"] == 0.0 and result["swapped"] == 1.0 and result["samples"] == 2
