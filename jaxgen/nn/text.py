"""A small transformer text encoder and the cross-attention through which a network reads it.

``TextEncoder``: tokens ``[B, L]`` (``<bos>`` at position 0, padding id 0 after the words) ->
``(context [B, L, width], mask [B, L])``: token and learned position embeddings, pre-LayerNorm
blocks of self-attention and an MLP (``jaxgen.nn.transformer.Block``), a final LayerNorm.
Padding is masked as a key everywhere, so no real position ever reads a padding position:
what padding holds, and how much of it there is, cannot change the output at the words
(latent diffusion's text-to-image model trains such a transformer jointly with its UNet).

``CrossAttention`` (``jaxgen.nn.layers``, with the transformer ``Block``; re-exported here):
image features ``[B, H, W, C]`` attend to a context ``[B, L, D]``:
queries from the GroupNorm-ed features, keys and values from the context, padding keys
masked, and a zero-initialised output projection added back (so a new block is the identity).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.nn.layers import Block, CrossAttention

__all__ = ["PAD", "CrossAttention", "TextEncoder", "padding_mask"]

PAD = 0


def padding_mask(tokens: jax.Array) -> jax.Array:
    """``[B, L]`` bool: True at real tokens (``<bos>`` and words), False at padding."""
    return tokens != PAD


class TextEncoder(nn.Module):
    vocab_size: int
    max_len: int
    width: int = 64
    depth: int = 2
    heads: int = 4
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        b, length = tokens.shape
        if length > self.max_len:
            raise ValueError(f"TextEncoder: {length} tokens exceed max_len={self.max_len}")
        init = nn.initializers.normal(0.02)
        x = nn.Embed(self.vocab_size, self.width, embedding_init=init, name="token_embed")(tokens)
        pos = self.param("pos_embed", init, (self.max_len, self.width))
        x = x + pos[:length]
        mask = padding_mask(tokens)
        keys = mask[:, None, None, :]  # [B, 1, Tq, Tk]: every query, real keys only
        for i in range(self.depth):
            x = Block(self.width, self.heads, dtype=self.dtype, name=f"block_{i}")(x, keys)
        return nn.LayerNorm(dtype=jnp.float32, name="ln_f")(x), mask
