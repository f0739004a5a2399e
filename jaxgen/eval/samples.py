"""Scores for class-conditional samples, from an evaluator classifier trained on clean data
(``configs/classifier.py:<data set>,clean``), kept separate from any classifier used for guidance.

- ``class_accuracy``: the share of samples the evaluator assigns to the class they were asked
  for: how well generation follows the condition.
- ``within_class_diversity``: the mean pairwise Euclidean distance between the evaluator's
  pooled features of samples of the same class, averaged over classes: how much variety is
  left. Compare it with the same figure for real test images of those classes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.eval.evaluator import to_uint8
from jaxgen.families import classifier


def evaluator_outputs(config, params, images: np.ndarray, batch_size: int = 500):
    """``(logits [N, K], features [N, F])`` of images in ``[0, 1]`` (float, quantised to uint8
    first, as ``Evaluator.outputs`` does) or uint8."""
    fn = jax.jit(classifier.features_fn(config, params))
    images = np.asarray(images)
    logits, feats = [], []
    for i in range(0, len(images), batch_size):
        x = to_uint8(images[i : i + batch_size]).astype(np.float32) / 255.0
        x = jnp.asarray(x * 2.0 - 1.0, jnp.float32)
        out_logits, out_feats = fn(x, jnp.zeros((x.shape[0],), jnp.float32))
        logits.append(np.asarray(out_logits))
        feats.append(np.asarray(out_feats))
    return np.concatenate(logits), np.concatenate(feats)


def class_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, -1) == np.asarray(labels)))


def within_class_diversity(features: np.ndarray, labels: np.ndarray) -> float:
    """Mean pairwise distance of features within each class, averaged over the classes."""
    features, labels = np.asarray(features, np.float64), np.asarray(labels)
    per_class = []
    for k in np.unique(labels):
        f = features[labels == k]
        if len(f) < 2:
            continue
        sq = np.sum(f**2, 1)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * f @ f.T, 0.0)
        n = len(f)
        per_class.append(np.sqrt(d2)[~np.eye(n, dtype=bool)].mean())
    if not per_class:
        raise ValueError("within_class_diversity needs two or more samples of some class")
    return float(np.mean(per_class))
