"""Drawing code sequences from transformer priors: pure functions, usable with any network.

- :func:`filter_logits`: temperature-free top-k and top-p (nucleus) filtering;
- :func:`guide`: classifier-free guidance on logits, ``u + w (c - u)`` (``w = 1``: the
  conditional model, ``w = 0``: the unconditional one);
- :func:`sample_autoregressive`: one ``lax.scan`` over positions of a causal model that keeps a
  key-value cache, one new position per step (GPT); :func:`sample_autoregressive_uncached`, a
  full forward per position, for comparison;
- :func:`mask_rate`: MaskGIT's masking schedule ``gamma(r) = cos(pi/2 r)``, the one function
  both its training masks (:func:`random_mask`) and its decoding plan use;
- :func:`unmask_schedule` and :func:`maskgit_decode`: MaskGIT's parallel decoding (Chang et al.
  2022) in a fixed number of steps, one ``lax.scan`` with fixed shapes;
- :func:`corrupt`: VQGAN's input noise for training a GPT prior.

Guided sampling runs the batch twice, conditional then null labels, in one call of the network.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

_NEG_INF = -jnp.inf


def mask_rate(r):
    """MaskGIT's masking schedule ``gamma(r) = cos(pi/2 r)``: the share of the codes masked at
    progress ``r`` in ``[0, 1]`` (1 at ``r = 0``, 0 at ``r = 1``). Training draws ``r ~ U(0, 1)``
    (:func:`random_mask`); decoding step ``t`` of ``T`` leaves ``gamma((t + 1) / T)`` masked
    (:func:`unmask_schedule`). A JAX array in gives a JAX array; a Python or NumPy number gives
    float64 NumPy, so the static decoding plan is not rounded to float32."""
    if isinstance(r, jax.Array):
        return jnp.cos(0.5 * jnp.pi * r)
    return np.cos(0.5 * np.pi * np.asarray(r, np.float64))


def random_mask(rng: jax.Array, shape: tuple[int, int], min_rate: float = 0.0) -> jax.Array:
    """MaskGIT's training masks ``[B, N]`` (True: masked): per example ``ceil(gamma N)``
    uniformly chosen positions, ``gamma = max(mask_rate(r), min_rate)`` with ``r ~ U(0, 1)``,
    at least one."""
    b, n = shape
    k_rate, k_pos = jax.random.split(rng)
    rate = jnp.maximum(mask_rate(jax.random.uniform(k_rate, (b, 1))), min_rate)
    count = jnp.clip(jnp.ceil(rate * n), 1, n)
    rank = jnp.argsort(jnp.argsort(jax.random.uniform(k_pos, (b, n)), axis=1), axis=1)
    return rank < count


def corrupt(codes: jax.Array, pkeep: float, rng: jax.Array, num_codes: int) -> jax.Array:
    """VQGAN's input noise for a GPT prior: each of ``codes`` (int, any shape) kept with
    probability ``pkeep``, else replaced by a code drawn uniformly from ``0..num_codes - 1``.
    ``pkeep = 1`` returns ``codes`` (plain teacher forcing)."""
    if isinstance(pkeep, (int, float)) and pkeep >= 1.0:
        return codes
    k_keep, k_draw = jax.random.split(rng)
    keep = jax.random.bernoulli(k_keep, pkeep, codes.shape)
    return jnp.where(keep, codes, jax.random.randint(k_draw, codes.shape, 0, num_codes))


def filter_logits(logits: jax.Array, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
    """Logits ``[..., K]`` with all but the ``top_k`` largest (0: no limit) and all outside the
    smallest set whose probability reaches ``top_p`` (1: no limit) set to ``-inf``. The most
    likely code always survives. ``top_k`` is static; ``top_p`` may be traced."""
    k = logits.shape[-1]
    if not isinstance(top_k, int) or not 0 <= top_k:
        raise ValueError(f"top_k={top_k!r} must be an integer >= 0 (0: no limit)")
    if 0 < top_k < k:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, _NEG_INF, logits)
    if isinstance(top_p, (int, float)) and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p={top_p!r} must be in (0, 1] (1: no limit)")
    if not (isinstance(top_p, (int, float)) and top_p >= 1.0):
        ordered = jnp.sort(logits, axis=-1)[..., ::-1]
        probs = jax.nn.softmax(ordered, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass of the codes ranked above each one
        kept = before < top_p  # the first is always kept (before = 0)
        threshold = jnp.min(jnp.where(kept, ordered, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < threshold, _NEG_INF, logits)
    return logits


def guide(logits: jax.Array, scale) -> jax.Array:
    """Classifier-free guidance: ``logits [2B, ...]`` holds the conditional half then the
    unconditional; returns ``u + scale (c - u)``, ``[B, ...]``."""
    cond, uncond = jnp.split(logits, 2, axis=0)
    return uncond + scale * (cond - uncond)


def _labels(labels: jax.Array, scale, null_label, who: str) -> jax.Array:
    """The labels a sampler runs: with guidance (``scale`` given), the null class appended."""
    if scale is None:
        return labels
    if null_label is None:
        raise ValueError(f"{who}: guidance (scale) needs null_label")
    return jnp.concatenate([labels, jnp.full_like(labels, null_label)])


def _next_code(logits, rng, pos, temperature, top_k, top_p, scale) -> jax.Array:
    """Guide, divide by the temperature, filter, draw under ``fold_in(rng, pos)``."""
    logits = logits.astype(jnp.float32)
    if scale is not None:
        logits = guide(logits, scale)
    logits = filter_logits(logits / temperature, top_k, top_p)
    return jax.random.categorical(jax.random.fold_in(rng, pos), logits).astype(jnp.int32)


def sample_autoregressive(
    step_fn: Callable,
    make_cache: Callable[[int], object],
    labels: jax.Array,
    length: int,
    rng: jax.Array,
    *,
    temperature=1.0,
    top_k: int = 0,
    top_p=1.0,
    scale=None,
    null_label: int | None = None,
) -> jax.Array:
    """Codes ``[B, length]`` (int32) drawn left to right from a causal model with a cache.

    ``step_fn(prev [B'], labels [B'], pos, cache) -> (logits [B', K], cache)`` gives the logits
    of position ``pos`` from the token at ``pos`` (``prev``: the code drawn at ``pos - 1``;
    ignored at ``pos = 0``) and the cache of earlier positions (``CodeTransformer.decode_step``);
    ``make_cache(B')`` its empty cache. With ``scale`` (not None) the batch runs twice,
    ``labels`` then ``null_label``, and the logits are guided (:func:`guide`). Then temperature,
    then :func:`filter_logits`; the code at ``pos`` is drawn under ``fold_in(rng, pos)``.
    """
    b = labels.shape[0]
    guided, labels = scale is not None, _labels(labels, scale, null_label, "sample_autoregressive")

    def body(carry, pos):
        prev, cache = carry
        logits, cache = step_fn(
            jnp.concatenate([prev, prev]) if guided else prev, labels, pos, cache
        )
        code = _next_code(logits, rng, pos, temperature, top_k, top_p, scale)
        return (code, cache), code

    start = (jnp.zeros((b,), jnp.int32), make_cache(labels.shape[0]))
    _, codes = jax.lax.scan(body, start, jnp.arange(length))
    return codes.T


def sample_autoregressive_uncached(
    logits_fn: Callable,
    labels: jax.Array,
    length: int,
    rng: jax.Array,
    *,
    temperature=1.0,
    top_k: int = 0,
    top_p=1.0,
    scale=None,
    null_label: int | None = None,
) -> jax.Array:
    """:func:`sample_autoregressive` without a cache, for comparison: every step runs
    ``logits_fn(tokens [B', length - 1], labels [B']) -> [B', length, K]`` (a causal model's
    full forward) on the codes drawn so far and takes position ``pos``. The same keys, so the
    same codes as the cached sampler up to float rounding."""
    b = labels.shape[0]
    guided, labels = (
        scale is not None,
        _labels(labels, scale, null_label, "sample_autoregressive_uncached"),
    )

    def body(seq, pos):
        inputs = seq[:, :-1]
        logits = logits_fn(jnp.concatenate([inputs, inputs]) if guided else inputs, labels)
        logits = jax.lax.dynamic_index_in_dim(logits, pos, axis=1, keepdims=False)
        code = _next_code(logits, rng, pos, temperature, top_k, top_p, scale)
        return seq.at[:, pos].set(code), None

    seq, _ = jax.lax.scan(body, jnp.zeros((b, length), jnp.int32), jnp.arange(length))
    return seq


def unmask_schedule(n: int, steps: int) -> np.ndarray:
    """How many of ``n`` codes are still masked after each of ``steps`` decoding steps:
    ``floor(n mask_rate((t + 1) / steps))``, kept at least ``steps - 1 - t`` (so that every later
    step has a code to reveal; at least 1 before the last step) and at most one fewer than
    before (every step reveals a code), and 0 after the last. Needs ``1 <= steps <= n``."""
    if not (isinstance(steps, int) and 1 <= steps <= n):
        raise ValueError(f"steps={steps!r} must be an integer in [1, {n}] (the number of codes)")
    out, before = [], n
    for t in range(steps):
        if t == steps - 1:
            m = 0
        else:
            m = math.floor(n * float(mask_rate((t + 1) / steps)))
            m = min(max(m, steps - 1 - t), before - 1)
        out.append(m)
        before = m
    return np.asarray(out, np.int32)


def maskgit_decode(
    logits_fn: Callable,
    labels: jax.Array,
    length: int,
    rng: jax.Array,
    *,
    mask_id: int,
    steps: int = 12,
    temperature=1.0,
    choice_temperature=4.5,
    scale=None,
    null_label: int | None = None,
    trace: bool = False,
):
    """MaskGIT decoding: codes ``[B, length]`` (int32), and with ``trace`` the codes after every
    step ``[steps, B, length]`` (``mask_id`` where still masked).

    ``logits_fn(tokens [B', length], labels [B']) -> [B', length, K]`` is the bidirectional
    model. Every step predicts all positions at once and draws a code for each masked one (at
    ``temperature``); its confidence is the drawn code's log-probability plus Gumbel noise
    scaled by ``choice_temperature * (1 - (t + 1) / steps)`` (the reference's ratio, the same as
    the mask schedule's: 0 at the last step); of the positions masked before the step,
    the :func:`unmask_schedule` number with the lowest confidence stay masked and the rest keep
    their drawn code. Codes decided at an earlier step never change. ``scale`` guides as in
    :func:`sample_autoregressive`.
    """
    b = labels.shape[0]
    guided, labels = scale is not None, _labels(labels, scale, null_label, "maskgit_decode")
    schedule = jnp.asarray(unmask_schedule(length, steps))

    def body(codes, xs):
        t, still_masked = xs
        key_draw, key_choice = jax.random.split(jax.random.fold_in(rng, t))
        masked = codes == mask_id
        logits = logits_fn(jnp.concatenate([codes, codes]) if guided else codes, labels)
        logits = logits.astype(jnp.float32)
        if guided:
            logits = guide(logits, scale)
        logp = jax.nn.log_softmax(logits / temperature, axis=-1)
        drawn = jax.random.categorical(key_draw, logp).astype(jnp.int32)
        conf = jnp.take_along_axis(logp, drawn[..., None], axis=-1)[..., 0]
        noise = jax.random.gumbel(key_choice, conf.shape)
        conf = conf + choice_temperature * (1.0 - (t + 1) / steps) * noise
        conf = jnp.where(masked, conf, jnp.inf)  # decided codes are never re-masked
        rank = jnp.argsort(jnp.argsort(conf, axis=-1), axis=-1)
        remask = rank < still_masked
        codes = jnp.where(masked, jnp.where(remask, mask_id, drawn), codes)
        return codes, codes if trace else None

    start = jnp.full((b, length), mask_id, jnp.int32)
    codes, history = jax.lax.scan(body, start, (jnp.arange(steps), schedule))
    return (codes, history) if trace else codes
