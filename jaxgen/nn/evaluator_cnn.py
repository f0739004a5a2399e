"""The evaluator's network, ``EvaluatorCNN``: a small plain CNN whose penultimate features serve
the sample-quality metrics (``jaxgen.eval``; the restored classifier there is ``Evaluator``).

Per level one 3x3 convolution, GroupNorm and SiLU, then 2x2 max pooling; after the last level
the map is flattened into one dense layer whose SiLU output is the feature vector (``features``
wide), and one dense layer gives the logits. Two levels (32 and 64 channels) and 256 features
hold about 0.8M parameters; full-resolution convolutions are avoided, as they cost most of the
time on a CPU. Dropout sits between
features and logits only, so the features are the same at train and test time. GroupNorm
keeps examples independent (a model's samples are scored one by one, in any batch size).

It takes ``t`` like ``jaxgen.nn.classifier.Classifier`` and ignores it, so the classifier
family can train either network.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxgen.nn.layers import conv, group_norm


class EvaluatorCNN(nn.Module):
    """``logits = f(x)``; with ``features=True``, ``(logits, features [B, features])``.

    ``x: [B, H, W, C]`` in [-1, 1].
    """

    num_classes: int
    widths: Sequence[int] = (32, 64)
    features: int = 256
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, t=None, deterministic: bool = True, features: bool = False):
        del t  # a clean-image network
        h = x.astype(self.dtype)
        for width in self.widths:
            h = nn.silu(group_norm(width, self.dtype)(conv(width, self.dtype)(h)))
            h = nn.max_pool(h, (2, 2), strides=(2, 2))
        h = h.reshape(h.shape[0], -1)
        feats = nn.silu(nn.Dense(self.features, param_dtype=jnp.float32, name="features")(h))
        feats = feats.astype(jnp.float32)
        dropped = nn.Dropout(self.dropout, deterministic=deterministic)(feats)
        logits = nn.Dense(self.num_classes, param_dtype=jnp.float32, name="head")(dropped)
        return (logits, feats) if features else logits
