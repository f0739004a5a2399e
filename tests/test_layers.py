"""The shared building blocks of jaxgen.nn.layers: attention against a direct NumPy computation,
through both networks that use it (the VQ-GAN's AttnBlock, the CodeTransformer with its causal
mask and its key-value cache), and the rule that networks share code through it only."""

import ast
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.nn.layers import attention, num_groups
from jaxgen.nn.transformer import CodeTransformer, init_cache
from jaxgen.nn.vqgan import AttnBlock


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _direct_attention(q, k, v, mask=None):
    """softmax(q k^T / sqrt(D)) v in float64, one head at a time: ``[T, D]`` each."""
    logits = q @ k.T / np.sqrt(q.shape[-1])
    if mask is not None:
        logits = np.where(mask, logits, -np.inf)
    return _softmax(logits) @ v


def _dense(p, x):
    return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p.get("bias", 0.0), np.float64)


def _layer_norm(p, x, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * np.asarray(p["scale"]) + np.asarray(p["bias"])


@pytest.mark.parametrize("causal", [False, True])
def test_attention_is_softmax_of_scaled_dot_products(causal):
    b, t, h, d = 2, 5, 3, 4
    q, k, v = (
        np.asarray(jax.random.normal(key, (b, t, h, d)))
        for key in jax.random.split(jax.random.PRNGKey(0), 3)
    )
    mask = np.tril(np.ones((t, t), bool)) if causal else None
    got = np.asarray(attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), mask))
    want = np.stack(
        [
            np.stack(
                [_direct_attention(q[i, :, j], k[i, :, j], v[i, :, j], mask) for j in range(h)], 1
            )
            for i in range(b)
        ]
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    if causal:  # the first position sees only itself
        np.testing.assert_allclose(got[:, 0], v[:, 0], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_vqgan_attn_block_is_direct_single_head_attention():
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 4, 8))
    block = AttnBlock()
    params = block.init(jax.random.PRNGKey(2), x)["params"]
    got = np.asarray(block.apply({"params": params}, x))
    norm = nn.GroupNorm(num_groups=num_groups(8))
    normed = norm.apply({"params": params["GroupNorm_0"]}, x)
    y = np.asarray(normed, np.float64).reshape(2, 16, 8)
    want = []
    for i in range(2):
        q, k, v = (_dense(params[n], y[i]) for n in ("q", "k", "v"))
        want.append(_dense(params["proj"], _direct_attention(q, k, v)))
    want = np.asarray(x, np.float64) + np.stack(want).reshape(x.shape)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def _direct_transformer(params, tokens, labels, heads):
    """A causal one-block CodeTransformer in float64: ``[B, L + 1, num_codes]``."""
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
    blk = p["block_0"]
    x = np.concatenate(
        [p["class_embed"]["embedding"][labels][:, None], p["token_embed"]["embedding"][tokens]], 1
    )
    x = x + p["pos_embed"][: x.shape[1]]
    t, width = x.shape[1:]
    mask = np.tril(np.ones((t, t), bool))
    out = []
    for xb in x:
        hn = _layer_norm(blk["ln1"], xb)
        q, k, v = (_dense(blk[n], hn).reshape(t, heads, -1) for n in ("query", "key", "value"))
        att = np.concatenate(
            [_direct_attention(q[:, j], k[:, j], v[:, j], mask) for j in range(heads)], -1
        )
        xb = xb + _dense(blk["proj"], att)
        hidden = np.asarray(
            nn.gelu(jnp.asarray(_dense(blk["fc1"], _layer_norm(blk["ln2"], xb)))), np.float64
        )
        xb = xb + _dense(blk["fc2"], hidden)
        out.append(_dense(p["head"], _layer_norm(p["ln_f"], xb)))
    return np.stack(out)


@pytest.mark.slow
def test_code_transformer_causal_forward_and_kv_cache_decode_match_direct_attention():
    num_codes, length, heads = 7, 5, 2
    model = CodeTransformer(
        num_codes=num_codes, max_len=length + 1, num_classes=3, width=8, depth=1, heads=heads
    )
    tokens = jax.random.randint(jax.random.PRNGKey(3), (2, length), 0, num_codes)
    labels = jnp.array([1, 3])  # 3 is the null class
    params = model.init(jax.random.PRNGKey(4), tokens, labels)["params"]
    want = _direct_transformer(params, np.asarray(tokens), np.asarray(labels), heads)

    full = np.asarray(model.apply({"params": params}, tokens, labels))
    np.testing.assert_allclose(full, want, rtol=1e-4, atol=1e-4)

    # Decoding one position at a time against the cache: position ``pos`` gets the token at
    # ``pos`` (the class at 0) and must give the same logits as the full causal pass.
    step = jax.jit(
        lambda prev, pos, cache: model.apply(
            {"params": params}, prev, labels, pos, cache, method=CodeTransformer.decode_step
        )
    )
    cache = init_cache(model, 2)
    prev = jnp.zeros((2,), jnp.int32)
    decoded = []
    for pos in range(length + 1):
        logits, cache = step(prev, jnp.int32(pos), cache)
        decoded.append(np.asarray(logits))
        if pos < length:
            prev = tokens[:, pos]
    np.testing.assert_allclose(np.stack(decoded, 1), want, rtol=1e-4, atol=1e-4)


def test_networks_share_code_through_layers_only():
    """A network module imports shared pieces from jaxgen.nn.layers, never from another network
    (the VQ-GAN once took its Norm from the GAN's module)."""
    folder = pathlib.Path(attention.__code__.co_filename).parent
    for path in sorted(folder.glob("*.py")):
        tree = ast.parse(path.read_text())
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        others = {m for m in modules if m.startswith("jaxgen.nn") and m != "jaxgen.nn.layers"}
        assert not others, f"{path.name} imports {sorted(others)}"
