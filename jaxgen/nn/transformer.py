"""A transformer over a sequence of discrete codes: the network of the GPT and MaskGIT priors.

The sequence a prior sees is ``[class token, t_1, ..., t_L]``: position 0 holds the embedding of
the class (``num_classes`` real classes plus one *null* class, index ``num_classes``, for an
unconditional model and for classifier-free guidance), positions ``1..L`` hold code tokens
(``num_codes`` codes, plus ``extra_tokens`` more ids, e.g. MaskGIT's ``[MASK]``). Learned position
embeddings; pre-LayerNorm blocks of multi-head self-attention and a GELU MLP; a final LayerNorm
and a linear head to ``num_codes`` logits at every position.

``causal=True`` (GPT): position ``i`` attends to positions ``<= i`` only, so the logits at
position ``i`` are a function of the class and ``t_1..t_i``; fed ``t = (c_1, .., c_{N-1})``, the
logits at positions ``0..N-1`` are the conditionals of ``c_1..c_N`` in raster order.
``causal=False`` (MaskGIT): every position attends to every other.

:meth:`CodeTransformer.decode_step` runs one new position of a causal model against a key-value
cache (:func:`init_cache`): the keys and values of earlier positions are stored, not recomputed, so
sampling ``N`` codes costs ``N`` one-position passes instead of ``N`` full forwards.

Mixed precision: float32 parameters, ``dtype`` the compute dtype, float32 softmax and logits.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.nn.layers import Block  # the transformer block, shared with the text encoder


class CodeTransformer(nn.Module):
    """Logits ``[B, L + 1, num_codes]`` for ``tokens [B, L]`` and ``labels [B]`` (module
    docstring); ``labels`` index ``num_classes + 1`` class embeddings, the last being null."""

    num_codes: int
    max_len: int  # L + 1 at most: the class position and the code positions
    num_classes: int = 0
    width: int = 256
    depth: int = 4
    heads: int = 4
    mlp_ratio: int = 4
    causal: bool = True
    extra_tokens: int = 0
    dtype: Any = jnp.float32

    def setup(self):
        init = nn.initializers.normal(0.02)
        self.token_embed = nn.Embed(
            self.num_codes + self.extra_tokens, self.width, embedding_init=init
        )
        self.class_embed = nn.Embed(self.num_classes + 1, self.width, embedding_init=init)
        self.pos_embed = self.param("pos_embed", init, (self.max_len, self.width))
        self.blocks = [
            Block(self.width, self.heads, self.mlp_ratio, self.dtype, name=f"block_{i}")
            for i in range(self.depth)
        ]
        self.ln_f = nn.LayerNorm(dtype=jnp.float32)
        self.head = nn.Dense(self.num_codes, dtype=jnp.float32, param_dtype=jnp.float32)

    def __call__(self, tokens: jax.Array, labels: jax.Array) -> jax.Array:
        b, length = tokens.shape
        if length + 1 > self.max_len:
            raise ValueError(
                f"CodeTransformer: {length} tokens + the class exceed max_len={self.max_len}"
            )
        x = jnp.concatenate([self.class_embed(labels)[:, None], self.token_embed(tokens)], axis=1)
        x = x + self.pos_embed[: length + 1]
        mask = None
        if self.causal:
            mask = jnp.tril(jnp.ones((length + 1, length + 1), bool))
        for block in self.blocks:
            x = block(x, mask)
        return self.head(self.ln_f(x))

    def decode_step(self, prev: jax.Array, labels: jax.Array, pos: jax.Array, cache: dict):
        """Logits ``[B, num_codes]`` at position ``pos`` of a causal model, given ``prev [B]``:
        the token at ``pos`` (ignored at ``pos = 0``, where the class goes), and the cache of
        positions ``< pos``. Returns ``(logits, cache)`` with ``pos`` written in."""
        x = jnp.where(pos == 0, self.class_embed(labels), self.token_embed(prev))[:, None]
        x = x + jax.lax.dynamic_slice_in_dim(self.pos_embed, pos, 1)[None]
        ks, vs = [], []
        for block, k, v in zip(self.blocks, cache["k"], cache["v"], strict=True):
            x, k, v = block.step(x, k, v, pos)
            ks.append(k)
            vs.append(v)
        return self.head(self.ln_f(x))[:, 0], {"k": ks, "v": vs}


def init_cache(model: CodeTransformer, batch: int) -> dict:
    """Zero keys and values for every layer of ``model``: ``[B, max_len, heads, width / heads]``
    each, for :meth:`CodeTransformer.decode_step`."""
    shape = (batch, model.max_len, model.heads, model.width // model.heads)
    return {
        "k": [jnp.zeros(shape, model.dtype) for _ in range(model.depth)],
        "v": [jnp.zeros(shape, model.dtype) for _ in range(model.depth)],
    }
