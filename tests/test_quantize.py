"""Tests for jaxgen.quantize: VQ-VAE nearest-code search, losses, EMA codebook, dead codes."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxgen import quantize as vq


def _rand(seed, shape):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _np_distances(z, codebook):
    z = np.asarray(z, np.float64).reshape(-1, codebook.shape[-1])
    return ((z[:, None, :] - np.asarray(codebook, np.float64)[None]) ** 2).sum(-1)


# --- nearest_code / quantize -----------------------------------------------------------------


@pytest.mark.parametrize("shape", [(40, 3), (2, 3, 4, 5)])
def test_nearest_code_matches_brute_force(shape):
    z = _rand(0, shape)
    codebook = _rand(1, (7, shape[-1]))
    indices, codes = vq.nearest_code(jnp.asarray(z), jnp.asarray(codebook))
    assert indices.dtype == jnp.int32
    indices = np.asarray(indices).reshape(-1)

    dist = _np_distances(z, codebook)
    expected = dist.argmin(-1)
    # Chosen codes are at the minimum distance everywhere, and equal the brute-force argmin
    # wherever that minimum is not a near-tie (float32 vs float64 rounding).
    chosen = dist[np.arange(len(indices)), indices]
    np.testing.assert_allclose(chosen, dist.min(-1), rtol=1e-5, atol=1e-5)
    sorted_dist = np.sort(dist, axis=-1)
    clear = sorted_dist[:, 1] - sorted_dist[:, 0] > 1e-4
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(indices[clear], expected[clear])
    np.testing.assert_array_equal(np.asarray(codes).reshape(-1, shape[-1]), codebook[indices])


def test_nearest_code_ties_go_to_lowest_index():
    codebook = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    z = jnp.array([[2.0, 0.0], [0.0, 3.0], [0.5, 0.5]])
    indices, _ = vq.nearest_code(z, codebook)
    np.testing.assert_array_equal(np.asarray(indices), [0, 1, 0])


@pytest.mark.slow
def test_straight_through_identity_jacobian_and_value():
    codebook = jnp.asarray(_rand(2, (5, 2)))
    z = jnp.asarray(_rand(3, (3, 2)))
    q = vq.quantize(z, codebook)
    np.testing.assert_allclose(np.asarray(q.z_q), np.asarray(q.codes), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(q.codes), np.asarray(codebook)[np.asarray(q.indices)])

    jac = jax.jacobian(lambda x: vq.quantize(x, codebook).z_q)(z)
    np.testing.assert_array_equal(np.asarray(jac).reshape(6, 6), np.eye(6))
    # The raw codes are piecewise constant in z_e: zero Jacobian.
    jac_codes = jax.jacobian(lambda x: vq.quantize(x, codebook).codes)(z)
    assert not np.any(np.asarray(jac_codes))


# --- gradient routing ------------------------------------------------------------------------


@pytest.mark.slow
def test_gradient_routing_of_each_loss_term():
    x = jnp.asarray(_rand(4, (16, 4)))
    params = {
        "encoder": jnp.asarray(_rand(5, (4, 3))),
        "decoder": jnp.asarray(_rand(6, (3, 4))),
        "codebook": jnp.asarray(_rand(7, (5, 3))),
    }

    def terms(p):
        z_e = x @ p["encoder"]
        q = vq.quantize(z_e, p["codebook"])
        recon = q.z_q @ p["decoder"]
        return {
            "recon": jnp.mean(jnp.square(recon - x)),
            "codebook": vq.codebook_loss(z_e, q.codes),
            "commitment": vq.commitment_loss(z_e, q.codes, beta=0.25),
        }

    expected_nonzero = {
        "recon": {"encoder", "decoder"},
        "codebook": {"codebook"},
        "commitment": {"encoder"},
    }
    for term, nonzero in expected_nonzero.items():
        grads = jax.grad(lambda p, t=term: terms(p)[t])(params)
        for group, g in grads.items():
            g = np.asarray(g)
            if group in nonzero:
                assert np.abs(g).max() > 1e-6, (term, group)
            else:
                assert not np.any(g), (term, group)


# --- losses ----------------------------------------------------------------------------------


def test_losses_formulas_beta_and_reduction():
    z = _rand(8, (4, 3, 2, 5))
    c = _rand(9, (4, 3, 2, 5))
    sq = (z.astype(np.float64) - c) ** 2
    expected = {"mean": sq.mean(), "sum": sq.sum() / z.shape[0]}
    assert "beta" not in inspect.signature(vq.codebook_loss).parameters
    for reduction, value in expected.items():
        cb = vq.codebook_loss(jnp.asarray(z), jnp.asarray(c), reduction=reduction)
        one = vq.commitment_loss(jnp.asarray(z), jnp.asarray(c), beta=1.0, reduction=reduction)
        b = vq.commitment_loss(jnp.asarray(z), jnp.asarray(c), beta=0.37, reduction=reduction)
        np.testing.assert_allclose(float(cb), value, rtol=1e-5)
        np.testing.assert_allclose(float(one), value, rtol=1e-5)
        np.testing.assert_allclose(float(b), 0.37 * float(one), rtol=1e-6)
    for fn in (vq.codebook_loss, vq.commitment_loss):
        with pytest.raises(ValueError, match="bogus") as info:
            fn(jnp.asarray(z), jnp.asarray(c), reduction="bogus")
        assert "mean" in str(info.value) and "sum" in str(info.value)


# --- EMA codebook ----------------------------------------------------------------------------


def _np_ema_update(state, z, idx, decay, eps):
    codebook, cluster_size, embed_sum = (np.asarray(a, np.float64) for a in state)
    k = codebook.shape[0]
    z = np.asarray(z, np.float64).reshape(-1, codebook.shape[1])
    idx = np.asarray(idx).reshape(-1)
    counts = np.array([(idx == j).sum() for j in range(k)], np.float64)
    sums = np.stack([z[idx == j].sum(0) for j in range(k)])
    cluster_size = decay * cluster_size + (1 - decay) * counts
    embed_sum = decay * embed_sum + (1 - decay) * sums
    n = cluster_size.sum()
    smoothed = (cluster_size + eps) / (n + k * eps) * n
    return embed_sum / smoothed[:, None], cluster_size, embed_sum


def test_ema_init_is_consistent():
    codebook = jnp.asarray(_rand(10, (6, 3)))
    ema = vq.ema_init(codebook)
    np.testing.assert_array_equal(np.asarray(ema.cluster_size), np.ones(6))
    np.testing.assert_array_equal(np.asarray(ema.embed_sum), np.asarray(codebook))
    np.testing.assert_array_equal(
        np.asarray(ema.codebook), np.asarray(ema.embed_sum / ema.cluster_size[:, None])
    )


def test_ema_update_matches_numpy_over_several_steps():
    k, d = 5, 3
    ema = vq.ema_init(jnp.asarray(_rand(11, (k, d))))
    ref = tuple(np.asarray(a) for a in (ema.codebook, ema.cluster_size, ema.embed_sum))
    rng = np.random.default_rng(12)
    for step in range(4):
        z = rng.normal(size=(4, 6, d)).astype(np.float32)
        # Arbitrary assignments, leaving code 4 unused on some steps.
        idx = rng.integers(0, k - (step % 2), size=(4, 6)).astype(np.int32)
        ema = vq.ema_update(ema, jnp.asarray(z), jnp.asarray(idx), decay=0.9, eps=1e-5)
        ref = _np_ema_update(ref, z, idx, decay=0.9, eps=1e-5)
        for got, want in zip((ema.codebook, ema.cluster_size, ema.embed_sum), ref, strict=True):
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_ema_update_laplace_smoothing_by_hand():
    """Guards the Laplace smoothing of the cluster sizes (dropping it, ``smoothed =
    cluster_size``, leaves the other EMA tests passing at eps=1e-5): with eps=0.1 and codes of
    tiny and zero cluster size, the smoothed sizes differ clearly from the raw ones."""
    eps, decay = 0.1, 0.5
    ema = vq.EmaCodebook(
        codebook=jnp.zeros((4, 2)),  # not read by the update
        cluster_size=jnp.array([2.0, 0.02, 0.004, 0.0]),
        embed_sum=jnp.array([[2.0, 4.0], [0.02, -0.04], [0.02, -0.02], [0.0, 0.0]]),
    )
    z = jnp.array([[1.0, 1.0], [3.0, -1.0], [0.5, 0.5]])
    idx = jnp.array([0, 0, 1], jnp.int32)  # codes 2 and 3 get nothing this batch
    new = vq.ema_update(ema, z, idx, decay=decay, eps=eps)

    cluster_size = np.array([2.0, 0.51, 0.002, 0.0])  # 0.5 * old + 0.5 * [2, 1, 0, 0]
    embed_sum = np.array([[3.0, 2.0], [0.26, 0.23], [0.01, -0.01], [0.0, 0.0]])
    n = 2.512  # sum(cluster_size)
    smoothed = (cluster_size + eps) / (n + 4 * eps) * n  # [1.8115, 0.5262, 0.0880, 0.0863]
    expected = embed_sum / smoothed[:, None]
    np.testing.assert_allclose(np.asarray(new.cluster_size), cluster_size, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(new.embed_sum), embed_sum, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(new.codebook), expected, rtol=1e-5, atol=1e-7)
    # Unsmoothed, code 2 would stay at (5, -5) and code 3 would be 0 / 0; smoothed, code 2
    # shrinks towards the origin and code 3 sits at it.
    assert np.all(np.isfinite(np.asarray(new.codebook)))
    assert np.abs(np.asarray(new.codebook[2])).max() < 0.2


def test_ema_update_with_zero_decay_gives_cluster_means():
    k, d = 6, 4
    z = _rand(13, (3, 5, d))
    codebook = jnp.asarray(_rand(14, (k, d)))
    indices, _ = vq.nearest_code(jnp.asarray(z), codebook)
    ema = vq.ema_update(vq.ema_init(codebook), jnp.asarray(z), indices, decay=0.0)
    flat, idx = z.reshape(-1, d), np.asarray(indices).reshape(-1)
    used = np.unique(idx)
    assert len(used) >= 3
    for j in used:
        np.testing.assert_allclose(
            np.asarray(ema.codebook[j]), flat[idx == j].mean(0), rtol=1e-3, atol=1e-5
        )


def test_ema_update_sends_no_gradient_to_encoder():
    codebook = jnp.asarray(_rand(15, (4, 2)))
    z = jnp.asarray(_rand(16, (8, 2)))
    idx, _ = vq.nearest_code(z, codebook)
    g = jax.grad(lambda x: jnp.sum(vq.ema_update(vq.ema_init(codebook), x, idx).codebook))(z)
    assert not np.any(np.asarray(g))


@pytest.mark.skipif(len(jax.devices()) < 8, reason="needs 8 devices")
def test_ema_update_and_counts_sharded_equal_single_device():
    k, d = 5, 3
    z = _rand(17, (16, 4, d))
    codebook = _rand(18, (k, d))
    idx = np.asarray(vq.nearest_code(jnp.asarray(z), jnp.asarray(codebook))[0])
    ema = vq.ema_init(jnp.asarray(codebook))

    def step(ema, z, idx):
        ema = vq.ema_update(ema, z, idx, decay=0.9, eps=1e-5)
        return ema, vq.code_counts(idx, k)

    cpu0 = jax.devices()[0]
    single = jax.jit(step)(
        jax.device_put(ema, cpu0), jax.device_put(z, cpu0), jax.device_put(idx, cpu0)
    )

    mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
    batch, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    z_sh, idx_sh = jax.device_put(z, batch), jax.device_put(idx, batch)
    assert not z_sh.sharding.is_fully_replicated
    sharded = jax.jit(step)(jax.device_put(ema, replicated), z_sh, idx_sh)

    for got, want in zip(jax.tree.leaves(sharded), jax.tree.leaves(single), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(sharded[1]), np.bincount(idx.ravel(), minlength=k))


def test_ema_kmeans_lowers_quantisation_error():
    centers = np.array([[5.0, 5.0], [-5.0, 5.0], [5.0, -5.0], [-5.0, -5.0]], np.float32)
    rng = np.random.default_rng(19)

    def sample(n):
        labels = rng.integers(0, 4, size=n)
        return (centers[labels] + 0.3 * rng.normal(size=(n, 2))).astype(np.float32)

    @jax.jit
    def step(ema, z):
        idx, codes = vq.nearest_code(z, ema.codebook)
        err = jnp.mean(jnp.sum(jnp.square(z - codes), axis=-1))
        return vq.ema_update(ema, z, idx, decay=0.9), err

    ema = vq.ema_init(jnp.asarray(sample(4)))  # codes start at data points
    errors = []
    for _ in range(50):
        ema, err = step(ema, jnp.asarray(sample(64)))
        errors.append(float(err))
    assert np.mean(errors[-5:]) < 0.25 * errors[0]


# --- usage statistics ------------------------------------------------------------------------


@pytest.mark.slow
def test_perplexity_counts_and_fraction_used():
    k = 8
    uniform = jnp.tile(jnp.arange(k, dtype=jnp.int32), 3).reshape(4, 6)
    np.testing.assert_allclose(float(vq.perplexity(uniform, k)), k, rtol=1e-5)
    single = jnp.full((4, 6), 3, jnp.int32)
    np.testing.assert_allclose(float(vq.perplexity(single, k)), 1.0, rtol=1e-6)
    two = jnp.array([0, 0, 5, 5], jnp.int32)
    np.testing.assert_allclose(float(vq.perplexity(two, k)), 2.0, rtol=1e-5)

    counts = vq.code_counts(jnp.array([[0, 2], [2, 2]], jnp.int32), 4)
    assert counts.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(counts), [1.0, 0.0, 3.0, 0.0])
    assert float(vq.fraction_used(counts)) == 0.5
    assert float(vq.fraction_used(jnp.array([0.0, 0.0, 1.0, 7.0, 2.0]))) == pytest.approx(0.6)


# --- dead codes ------------------------------------------------------------------------------


def test_update_unused():
    steps = jnp.array([0, 2, 5, 1], jnp.int32)
    new = vq.update_unused(steps, jnp.array([[0, 0], [2, 0]], jnp.int32))
    assert new.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(new), [0, 3, 0, 2])


def _is_row_of(row, rows):
    return bool(np.any(np.all(rows == row[None], axis=-1)))


@pytest.mark.slow
def test_restart_dead_codes():
    k, d = 6, 3
    codebook = jnp.asarray(_rand(20, (k, d)))
    z = _rand(21, (2, 5, d))
    flat = z.reshape(-1, d)
    steps = jnp.array([0, 3, 1, 7, 2, 3], jnp.int32)
    dead = np.asarray(steps) >= 3
    key = jax.random.key(0)

    new_cb, new_steps = jax.jit(vq.restart_dead_codes, static_argnums=4)(
        codebook, steps, jnp.asarray(z), key, 3
    )
    new_cb = np.asarray(new_cb)
    for j in range(k):
        if dead[j]:
            assert _is_row_of(new_cb[j], flat), j
        else:
            np.testing.assert_array_equal(new_cb[j], np.asarray(codebook[j]))
    np.testing.assert_array_equal(np.asarray(new_steps), np.where(dead, 0, np.asarray(steps)))

    # Traced threshold behaves the same.
    traced = jax.jit(vq.restart_dead_codes)(codebook, steps, jnp.asarray(z), key, 3)
    np.testing.assert_array_equal(np.asarray(traced[0]), new_cb)

    # max_unused <= 0: never restart, static or traced.
    for max_unused in (0, jnp.int32(0), -1):
        same_cb, same_steps = vq.restart_dead_codes(
            codebook, steps, jnp.asarray(z), key, max_unused
        )
        np.testing.assert_array_equal(np.asarray(same_cb), np.asarray(codebook))
        np.testing.assert_array_equal(np.asarray(same_steps), np.asarray(steps))


@pytest.mark.slow
def test_restart_dead_codes_ema_keeps_state_consistent():
    k, d = 5, 2
    z = _rand(22, (4, 8, d))
    flat = z.reshape(-1, d)
    codebook = jnp.asarray(_rand(23, (k, d)))
    ema = vq.ema_update(vq.ema_init(codebook), jnp.asarray(z), jnp.zeros((4, 8), jnp.int32))
    steps = jnp.array([4, 0, 9, 1, 4], jnp.int32)
    dead = np.asarray(steps) >= 4

    new, new_steps = vq.restart_dead_codes_ema(ema, steps, jnp.asarray(z), jax.random.key(1), 4)
    for j in range(k):
        if dead[j]:
            row = np.asarray(new.codebook[j])
            assert _is_row_of(row, flat), j
            assert float(new.cluster_size[j]) == 1.0
            np.testing.assert_array_equal(np.asarray(new.embed_sum[j]), row)
        else:
            for field in ("codebook", "cluster_size", "embed_sum"):
                np.testing.assert_array_equal(
                    np.asarray(getattr(new, field)[j]), np.asarray(getattr(ema, field)[j])
                )
    np.testing.assert_array_equal(np.asarray(new_steps), np.where(dead, 0, np.asarray(steps)))

    same, same_steps = vq.restart_dead_codes_ema(ema, steps, jnp.asarray(z), jax.random.key(1), 0)
    for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(ema), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(same_steps), np.asarray(steps))


# --- CodebookState: init, check, step ------------------------------------------------------


def _codebook_batch():
    key = jax.random.PRNGKey(5)
    codebook = jax.random.normal(key, (6, 3))
    z_e = jax.random.normal(jax.random.fold_in(key, 1), (2, 4, 3)) + 5.0  # far from every code
    indices = jnp.array([[0, 0, 1, 1], [0, 1, 1, 0]], jnp.int32)  # codes 2..5 unused
    return codebook, z_e, indices


def test_codebook_state_init_holds_the_ema_or_leaves_the_codebook_to_the_caller():
    codebook, _, _ = _codebook_batch()
    ema = vq.CodebookState.init(codebook, ema=True)
    np.testing.assert_array_equal(ema.codebook(), codebook)
    np.testing.assert_array_equal(ema.ema.cluster_size, np.ones(6))
    assert ema.unused.shape == (6,) and ema.unused.dtype == jnp.int32 and not ema.unused.any()
    learned = vq.CodebookState.init(codebook, ema=False)
    assert learned.ema is None
    np.testing.assert_array_equal(learned.codebook(codebook * 2), codebook * 2)
    with pytest.raises(ValueError, match="holds no EMA: pass it"):
        learned.codebook()


def test_codebook_state_checks_name_what_is_inconsistent():
    codebook, z_e, indices = _codebook_batch()
    key = jax.random.PRNGKey(0)
    ema = vq.CodebookState.init(codebook, ema=True)
    with pytest.raises(ValueError, match="exactly when there is no EMA one"):
        ema.step(codebook, z_e, indices, key)
    with pytest.raises(ValueError, match="exactly when there is no EMA one"):
        vq.CodebookState.init(codebook, ema=False).step(None, z_e, indices, key)
    bad = ema.replace(unused=jnp.zeros((5,), jnp.int32))
    with pytest.raises(ValueError, match=r"unused must be \[K\] = \(6,\) integers, got \(5,\)"):
        bad.check()
    with pytest.raises(ValueError, match=r"integers, got \(6,\) float32"):
        ema.replace(unused=jnp.zeros((6,), jnp.float32)).check()


@pytest.mark.parametrize("use_ema", [True, False])
def test_codebook_state_step_is_the_update_the_counters_and_the_restarts_in_order(use_ema):
    codebook, z_e, indices = _codebook_batch()
    key = jax.random.PRNGKey(9)
    state = vq.CodebookState.init(codebook, ema=use_ema)
    state = state.replace(unused=jnp.array([0, 0, 2, 0, 2, 1], jnp.int32))
    learned = None if use_ema else codebook
    new, new_learned, restarted = state.step(
        learned, z_e, indices, key, decay=0.9, eps=1e-5, restart_after=3
    )
    # by hand: EMA update, counters, then codes unused for 3 steps (2 and 4) re-seeded
    unused = vq.update_unused(state.unused, indices)
    if use_ema:
        ema = vq.ema_update(state.ema, z_e, indices, decay=0.9, eps=1e-5)
        ema, unused = vq.restart_dead_codes_ema(ema, unused, z_e, key, 3)
        expected = ema.codebook
        assert new_learned is None
    else:
        expected, unused = vq.restart_dead_codes(codebook, unused, z_e, key, 3)
        np.testing.assert_array_equal(new_learned, expected)
    np.testing.assert_array_equal(new.codebook(new_learned), expected)
    np.testing.assert_array_equal(new.unused, unused)
    np.testing.assert_array_equal(new.unused, [0, 0, 0, 1, 0, 2])
    assert float(restarted) == 2.0
    rows = np.asarray(z_e).reshape(-1, 3)
    for k in (2, 4):  # re-seeded from the batch
        assert np.min(np.abs(rows - np.asarray(expected)[k]).sum(axis=1)) < 1e-6


@pytest.mark.parametrize("use_ema", [True, False])
def test_codebook_state_seeding_puts_every_code_on_a_batch_vector(use_ema):
    codebook, z_e, indices = _codebook_batch()
    key = jax.random.PRNGKey(2)
    state = vq.CodebookState.init(codebook, ema=use_ema)
    learned = None if use_ema else codebook
    rows = np.asarray(z_e).reshape(-1, 3)
    every = jnp.ones((6,), jnp.int32)  # seeding is the restart with every code dead
    if use_ema:
        ema = vq.ema_update(state.ema, z_e, indices)
        expected = vq.restart_dead_codes_ema(ema, every, z_e, jax.random.fold_in(key, 1), 1)[0]
        expected = expected.codebook
    else:
        expected = vq.restart_dead_codes(codebook, every, z_e, jax.random.fold_in(key, 1), 1)[0]
    for seed in (True, jnp.bool_(True)):  # static or traced
        new, new_learned, _ = state.step(learned, z_e, indices, key, seed=seed)
        np.testing.assert_array_equal(new.codebook(new_learned), expected)
        for row in np.asarray(new.codebook(new_learned)):
            assert np.min(np.abs(rows - row).sum(axis=1)) < 1e-6
    for seed in (False, jnp.bool_(False)):
        new, new_learned, _ = state.step(learned, z_e, indices, key, seed=seed)
        moved = np.abs(np.asarray(new.codebook(new_learned)) - np.asarray(codebook)).max(axis=1)
        # only the EMA's assigned codes 0 and 1 move; nothing is re-seeded
        assert (moved[2:] < 1e-4).all() and (moved[:2] > 0.01).all() == use_ema
