"""Data sets made from another: two-image canvases (``data.compose``) and captions
(``data.captions``), both fixed by ``data.seed`` and the split, never by the training seed.

- ``compose = 'pairs'``: example ``i`` of a split puts two images of the same split side by side
  (``[H, 2 W, C]``), with the label ``K * left + right`` for a base of ``K`` classes (MNIST:
  ``10 * left + right``). With ``data.held_out = True`` the training split never composes the
  ordered pairs of ``captions.HELD_OUT_PAIRS`` (their reverse it does), so a model can be asked
  for a combination it never saw; the test split has every pair.
- ``captions = <set>``: every example also gets ``text``, int32 ``[data.caption_len]`` tokens of
  its caption (``jaxgen.data.captions``): ``<bos>``, the words, padding.
"""

from __future__ import annotations

import numpy as np

from jaxgen.data import captions as caps
from jaxgen.data.sources import DataError, Split

COMPOSE = ("", "pairs")


def pairs(base: Split, num: int, seed: int, split: str, held_out: bool) -> Split:
    """``num`` side-by-side pairs of ``base``'s images (module docstring)."""
    everything = base.get(np.arange(base.num_examples))
    images, labels = everything["image"], everything["label"]
    k = int(labels.max()) + 1
    rng = np.random.default_rng([seed, 104729, 0 if split == "train" else 1])
    left = rng.integers(0, base.num_examples, num)
    right = rng.integers(0, base.num_examples, num)
    if split == "train" and held_out:
        banned = np.array([k * a + b for a, b in caps.HELD_OUT_PAIRS if a < k and b < k])
        for _ in range(1000):
            bad = np.isin(k * labels[left] + labels[right], banned)
            if not bad.any():
                break
            right[bad] = rng.integers(0, base.num_examples, int(bad.sum()))
        else:  # a base with a single class in some held-out pair's position
            raise DataError("compose='pairs': cannot avoid the held-out pairs in this data")
    pair_labels = (k * labels[left] + labels[right]).astype(np.int32)

    def get(indices):
        indices = np.asarray(indices)
        a, b = left[indices], right[indices]
        return {
            "image": np.concatenate([images[a], images[b]], axis=2),
            "label": pair_labels[indices],
        }

    h, w, c = base.image_shape
    return Split(num, (h, 2 * w, c), get, int(pair_labels.max()))


def captioned(base: Split, name: str, length: int, seed: int, split: str) -> Split:
    """``base`` with a ``text`` entry: the tokens of each example's caption."""
    caption_set = caps.caption_set(name)
    if base.max_label is not None and base.max_label >= caption_set.num_classes:
        raise DataError(
            f"data.captions={name!r} captions {caption_set.num_classes} classes but the data's "
            f"labels go up to {base.max_label}"
        )
    vocab = caption_set.vocabulary()
    draws = caps.split_draws(seed, split, base.num_examples)

    def get(indices):
        out = base.get(indices)
        texts = caps.captions_of(caption_set, out["label"], draws[np.asarray(indices)], split)
        out["text"] = vocab.encode_all(texts, length, f"data.captions={name!r}")
        return out

    return Split(base.num_examples, base.image_shape, get, base.max_label)
