"""Property tests (hypothesis) of the vector quantiser: named shape and dtype errors, the
nearest code really is nearest, and no NaN at the extremes (a zero-variance batch, codes far
apart, empty clusters in the EMA update, a single code used, dead-code restarts).

Shapes come from a small fixed set and the functions are jitted once per shape.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from strategies import arrays, floats

from jaxgen import quantize as vq

SETTINGS = settings(deadline=None, database=None)

K, D = 8, 3  # codebook size and code dimension
SHAPES = [(6, D), (2, 3, D)]  # encoder outputs [..., D]


def _flat(a):
    return np.asarray(a).reshape(-1, np.shape(a)[-1])


# --------------------------------------------------------------------------- shape errors
Z, BOOK = np.zeros((2, 4, D), np.float32), np.zeros((K, D), np.float32)
IDX = np.zeros((2, 4), np.int32)
EMA = vq.ema_init(jnp.asarray(BOOK))
KEY = jax.random.PRNGKey(0)
UNUSED = np.zeros((K,), np.int32)

BAD = [
    (
        lambda: vq.nearest_code(np.zeros((2, 4)), BOOK),
        ValueError,
        r"nearest_code: z_e must be \[\.\.\., D\] with D = codebook.shape\[-1\] = 3, "
        r"got z_e \(2, 4\) and codebook \(8, 3\)",
    ),
    (
        lambda: vq.nearest_code(Z, np.zeros((K,))),
        ValueError,
        r"nearest_code: codebook must be \[K, D\], got shape \(8,\)",
    ),
    (
        lambda: vq.quantize(np.zeros((2, 4)), BOOK),
        ValueError,
        r"quantize: z_e .* got z_e \(2, 4\) and codebook \(8, 3\)",
    ),
    (
        lambda: vq.straight_through(Z, Z[..., :2]),
        ValueError,
        r"straight_through: z_e and codes must have the same shape, got z_e \(2, 4, 3\) and "
        r"codes \(2, 4, 2\)",
    ),
    (
        lambda: vq.codebook_loss(Z, IDX),
        ValueError,
        r"codebook_loss: z_e and codes .* z_e \(2, 4, 3\) and codes \(2, 4\)",
    ),
    (
        lambda: vq.commitment_loss(Z, Z[:1]),
        ValueError,
        r"commitment_loss: z_e and codes .* z_e \(2, 4, 3\) and codes \(1, 4, 3\)",
    ),
    (lambda: vq.ema_init(np.zeros((K,))), ValueError, r"ema_init: codebook must be \[K, D\]"),
    (
        lambda: vq.ema_update(EMA, np.zeros((2, 4, 5)), IDX),
        ValueError,
        r"ema_update: z_e .* D = ema.codebook.shape\[-1\] = 3, got z_e \(2, 4, 5\)",
    ),
    (
        lambda: vq.ema_update(EMA, Z, IDX.reshape(-1)[:5]),
        ValueError,
        r"ema_update: indices must have shape z_e.shape\[:-1\] = \(2, 4\), got indices \(5,\)",
    ),
    (
        lambda: vq.ema_update(EMA, Z, IDX.astype(np.float32)),
        TypeError,
        r"ema_update: indices must be integer code indices, got dtype float32",
    ),
    (
        lambda: vq.code_counts(IDX.astype(np.float32), K),
        TypeError,
        r"code_counts: indices must be integer",
    ),
    (lambda: vq.code_counts(IDX, 0), ValueError, r"code_counts: num_codes must be an integer >= 1"),
    (
        lambda: vq.perplexity(IDX, 2.5),
        ValueError,
        r"perplexity: num_codes must be an integer >= 1, got 2.5",
    ),
    (
        lambda: vq.update_unused(np.zeros((K, 1), np.int32), IDX),
        ValueError,
        r"update_unused: steps_unused must be \[K\], got shape \(8, 1\)",
    ),
    (
        lambda: vq.restart_dead_codes(BOOK, np.zeros((4,), np.int32), Z, KEY, 2),
        ValueError,
        r"restart_dead_codes: steps_unused must be \[K\] with K = codebook.shape\[0\] = 8, "
        r"got steps_unused \(4,\)",
    ),
    (
        lambda: vq.restart_dead_codes(BOOK, UNUSED, np.zeros((0, D)), KEY, 2),
        ValueError,
        r"restart_dead_codes: z_e \(0, 3\) holds no vectors",
    ),
    (
        lambda: vq.restart_dead_codes_ema(EMA, UNUSED, np.zeros((2, 4)), KEY, 2),
        ValueError,
        r"restart_dead_codes_ema: z_e .* got z_e \(2, 4\) and ema.codebook \(8, 3\)",
    ),
]


@pytest.mark.parametrize("call, error, message", BAD)
def test_shape_and_dtype_errors_name_the_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_shape_errors_are_raised_at_trace_time_under_jit():
    with pytest.raises(ValueError, match=r"nearest_code: z_e .* got z_e \(2, 4\)"):
        jax.jit(vq.nearest_code)(jnp.zeros((2, 4)), jnp.asarray(BOOK))


# --------------------------------------------------------------------------- nearest code
_nearest = jax.jit(vq.nearest_code)


@st.composite
def vectors_and_codebook(draw, lo=-1e3, hi=1e3):
    shape = draw(st.sampled_from(SHAPES))
    z_e = draw(arrays(shape, floats(lo, hi, 0.0, lo, hi)))
    codebook = draw(arrays((K, D), floats(lo, hi, 0.0, lo, hi)))
    return z_e, codebook


@SETTINGS
@given(vectors_and_codebook())
def test_nearest_code_is_a_nearest_row(case):
    """Within float32 rounding of |z|^2 - 2 z.e + |e|^2 no other row is closer, and the
    returned code is the indexed row."""
    z_e, codebook = case
    indices, codes = _nearest(z_e, codebook)
    indices, codes = np.asarray(indices), np.asarray(codes)
    assert indices.shape == z_e.shape[:-1] and indices.dtype == np.int32
    assert np.all((0 <= indices) & (indices < K))
    np.testing.assert_array_equal(codes, codebook[indices])
    z, book = _flat(z_e).astype(np.float64), codebook.astype(np.float64)
    dist = ((z[:, None, :] - book[None]) ** 2).sum(-1)
    chosen = dist[np.arange(len(z)), indices.reshape(-1)]
    rounding = 1e-5 * ((z**2).sum(-1) + (book**2).sum(-1).max()) + 1e-6
    assert np.all(chosen <= dist.min(axis=1) + rounding)


@SETTINGS
@given(vectors_and_codebook(), st.data())
def test_exact_ties_go_to_the_lowest_index(case, data):
    z_e, codebook = case[0], case[1].copy()
    i, j = sorted(data.draw(st.lists(st.integers(0, K - 1), min_size=2, max_size=2, unique=True)))
    codebook[j] = codebook[i]  # rows i < j identical: j must never be chosen
    indices = np.asarray(_nearest(z_e, codebook)[0])
    assert not np.any(indices == j)


@SETTINGS
@given(
    spread=floats(1.0, 1e3, 1.0, 1e3),
    grid=st.lists(st.tuples(*[st.integers(-3, 3)] * D), min_size=K, max_size=K, unique=True),
    shape=st.sampled_from(SHAPES),
    data=st.data(),
)
def test_codes_far_apart_are_found_exactly(spread, grid, shape, data):
    """Codes on a grid of spacing ``spread`` (up to 1e3), inputs within a quarter spacing of
    code ``j``: the index is ``j`` and the code is that row, bit for bit."""
    codebook = (np.asarray(grid, np.float64) * spread).astype(np.float32)
    n = int(np.prod(shape[:-1]))
    target = np.asarray(data.draw(st.lists(st.integers(0, K - 1), min_size=n, max_size=n)))
    offsets = data.draw(arrays((n, D), floats(-0.25, 0.25, -0.25, 0.25, 0.0)))
    z_e = (codebook[target] + offsets * np.float32(spread)).reshape(shape)
    indices, codes = _nearest(z_e, codebook)
    np.testing.assert_array_equal(np.asarray(indices).reshape(-1), target)
    np.testing.assert_array_equal(_flat(codes), codebook[target])


# --------------------------------------------------------------------------- zero variance
@jax.jit
def _zero_variance_step(z_e, codebook, decay):
    q = vq.quantize(z_e, codebook)
    ema = vq.ema_update(vq.ema_init(codebook), z_e, q.indices, decay=decay)
    return (
        q,
        vq.perplexity(q.indices, K),
        vq.code_counts(q.indices, K),
        vq.codebook_loss(z_e, q.codes),
        vq.commitment_loss(z_e, q.codes, beta=0.25),
        ema,
    )


@SETTINGS
@given(
    shape=st.sampled_from(SHAPES),
    value=arrays((D,), floats(-1e3, 1e3, 0.0, -1e3, 1e3)),
    codebook=arrays((K, D), floats(-1e3, 1e3, 0.0)),
    decay=st.sampled_from([0.0, 0.5, 0.99]),
)
@pytest.mark.slow
def test_a_zero_variance_batch(shape, value, codebook, decay):
    """All ``z_e`` identical: one index, perplexity exactly 1, one count of N, finite losses
    and EMA state, and with ``decay = 0`` the used code moves onto the shared vector."""
    z_e = np.broadcast_to(value, shape).copy()
    n = int(np.prod(shape[:-1]))
    q, perplexity, counts, codebook_term, commit_term, ema = _zero_variance_step(
        z_e, codebook, np.float32(decay)
    )
    indices = np.asarray(q.indices)
    assert np.all(indices == indices.flat[0])
    k = int(indices.flat[0])
    assert float(perplexity) == 1.0
    np.testing.assert_array_equal(counts, np.eye(K, dtype=np.float32)[k] * n)
    assert np.isfinite(codebook_term) and codebook_term >= 0
    np.testing.assert_allclose(commit_term, 0.25 * codebook_term, rtol=1e-6)
    for leaf in jax.tree.leaves(ema):
        assert np.all(np.isfinite(leaf))
    # straight-through: the value of codes, up to the rounding of z_e + (codes - z_e)
    rounding = 1e-6 * (np.abs(z_e) + np.abs(q.codes))
    assert np.all(np.abs(np.asarray(q.z_q) - np.asarray(q.codes)) <= rounding)
    if decay == 0.0:
        # Laplace smoothing shifts the row by a relative (K - 1) eps / N, eps = 1e-5.
        np.testing.assert_allclose(ema.codebook[k], value, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- EMA update
@jax.jit  # decay and steps traced: one compilation per shape
def _ema_run(codebook, z_e, indices, decay, steps):
    """``steps`` updates with the same batch: codes never assigned stay empty throughout."""
    ema = vq.ema_init(codebook)
    return jax.lax.fori_loop(0, steps, lambda _, e: vq.ema_update(e, z_e, indices, decay), ema)


@SETTINGS
@given(
    case=vectors_and_codebook(),
    used=st.lists(st.integers(0, K - 1), min_size=1, max_size=3, unique=True),
    decay=st.sampled_from([0.0, 0.5, 0.99]),
    steps=st.sampled_from([1, 200]),
    data=st.data(),
)
@pytest.mark.slow
def test_ema_update_with_empty_clusters(case, used, decay, steps, data):
    """Only a few codes get vectors, for 1 or 200 steps (an empty cluster's size decays to 0
    or underflows): every field stays finite, the total count follows the EMA exactly, and
    an empty code's sum only decays."""
    z_e, codebook = case
    n = int(np.prod(z_e.shape[:-1]))
    picks = data.draw(st.lists(st.sampled_from(used), min_size=n, max_size=n))
    indices = np.asarray(picks, np.int32).reshape(z_e.shape[:-1])
    ema = _ema_run(codebook, z_e, indices, np.float32(decay), np.int32(steps))
    for leaf in jax.tree.leaves(ema):
        assert np.all(np.isfinite(leaf))
    total = K * decay**steps + n * (1 - decay**steps)  # starts at K pseudo-counts
    np.testing.assert_allclose(float(jnp.sum(ema.cluster_size)), total, rtol=1e-4)
    empty = np.setdiff1d(np.arange(K), used)
    np.testing.assert_allclose(
        ema.embed_sum[empty], codebook[empty] * decay**steps, rtol=1e-4, atol=1e-30
    )
    np.testing.assert_allclose(ema.cluster_size[empty], decay**steps, rtol=1e-4, atol=1e-30)


# --------------------------------------------------------------------------- usage statistics
_usage = jax.jit(
    lambda indices: (vq.perplexity(indices, K), vq.code_counts(indices, K)),
)


@SETTINGS
@given(st.sampled_from([s[:-1] for s in SHAPES]), st.data())
def test_perplexity_and_counts(shape, data):
    indices = data.draw(hnp.arrays(np.int32, shape, elements=st.integers(0, K - 1)))
    perplexity, counts = (np.asarray(a) for a in _usage(indices))
    n = indices.size
    np.testing.assert_array_equal(counts, np.bincount(indices.reshape(-1), minlength=K))
    p = counts / n
    expected = np.exp(-np.sum(p[p > 0] * np.log(p[p > 0])))
    np.testing.assert_allclose(perplexity, expected, rtol=1e-5)
    assert 1.0 - 1e-6 <= perplexity <= min(K, n) * (1 + 1e-6)
    assert 0.0 < float(vq.fraction_used(counts)) <= 1.0
    if np.all(indices == indices.flat[0]):
        assert float(perplexity) == 1.0


def test_perplexity_is_1_for_one_code_and_k_for_uniform_use():
    for k in range(K):
        assert float(_usage(np.full((6,), k, np.int32))[0]) == 1.0
    np.testing.assert_allclose(vq.perplexity(jnp.arange(2 * K) % K, K), K, rtol=1e-6)


# --------------------------------------------------------------------------- losses, ST
_losses_and_grad = jax.jit(
    lambda z_e, codes, w: (
        vq.codebook_loss(z_e, codes),
        vq.codebook_loss(z_e, codes, reduction="sum"),
        vq.commitment_loss(z_e, codes, beta=0.25),
        jax.grad(lambda z: jnp.sum(w * vq.straight_through(z, codes)))(z_e),
    )
)


@SETTINGS
@given(vectors_and_codebook(), st.data())
def test_vq_losses_and_straight_through(case, data):
    z_e, codebook = case
    codes = codebook[np.asarray(_nearest(z_e, codebook)[0])]
    w = data.draw(arrays(z_e.shape, floats(-2.0, 2.0)))
    mean, total, commit, grad = _losses_and_grad(z_e, codes, w)
    sq = (z_e.astype(np.float64) - codes) ** 2
    assert np.isfinite(mean) and mean >= 0
    np.testing.assert_allclose(mean, sq.mean(), rtol=1e-5, atol=1e-30)
    np.testing.assert_allclose(total, sq.sum() / z_e.shape[0], rtol=1e-5, atol=1e-30)
    np.testing.assert_allclose(commit, 0.25 * mean, rtol=1e-6, atol=1e-30)
    np.testing.assert_array_equal(grad, w)  # the gradient reaches z_e unchanged


# --------------------------------------------------------------------------- dead codes
_restart = jax.jit(vq.restart_dead_codes)  # max_unused traced: one compilation per shape
_restart_ema = jax.jit(vq.restart_dead_codes_ema)


@SETTINGS
@given(
    case=vectors_and_codebook(),
    steps_unused=hnp.arrays(np.int32, (K,), elements=st.integers(0, 5)),
    max_unused=st.sampled_from([-1, 0, 1, 3, 6]),
    seed=st.integers(0, 2**31 - 1),
)
@pytest.mark.slow
def test_restart_dead_codes(case, steps_unused, max_unused, seed):
    """Codes unused for ``max_unused`` steps or more become rows of ``z_e`` with a reset
    counter (the EMA state restarted self-consistently); all other codes are untouched."""
    z_e, codebook = case
    key = jax.random.PRNGKey(seed)
    traced = np.int32(max_unused)
    book, unused = (np.asarray(a) for a in _restart(codebook, steps_unused, z_e, key, traced))
    ema, unused_ema = _restart_ema(vq.ema_init(codebook), steps_unused, z_e, key, traced)
    if max_unused <= 0:  # a Python int <= 0 returns its inputs without drawing
        same = vq.restart_dead_codes(codebook, steps_unused, z_e, key, max_unused)
        assert same[0] is codebook and same[1] is steps_unused
    dead = (steps_unused >= max_unused) & (max_unused > 0)
    np.testing.assert_array_equal(book[~dead], codebook[~dead])
    np.testing.assert_array_equal(unused, np.where(dead, 0, steps_unused))
    np.testing.assert_array_equal(unused_ema, unused)
    rows = _flat(z_e)
    for k in np.flatnonzero(dead):
        assert np.any(np.all(rows == book[k], axis=1)), "a restarted code is a row of z_e"
    np.testing.assert_array_equal(ema.codebook, book)
    np.testing.assert_array_equal(ema.embed_sum, book)
    np.testing.assert_array_equal(ema.cluster_size, np.ones(K, np.float32))
    used_now = np.asarray(vq.update_unused(jnp.asarray(steps_unused), jnp.asarray([0, 1])))
    np.testing.assert_array_equal(used_now[:2], 0)
    np.testing.assert_array_equal(used_now[2:], steps_unused[2:] + 1)
