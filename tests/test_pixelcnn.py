"""The gated PixelCNN prior: exact raster-order causality, no blind spot, class conditioning,
the autoregressive sampler, and a short training run."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgen.nn.pixelcnn import GatedPixelCNN, sample_codes

K = 6
ATOL = 1e-6  # the CPU convolutions may leave rounding noise on logits a code cannot reach


def _key(seed):
    """An RBG key: XLA compiles its random ops in a fraction of threefry's time on CPU."""
    return jax.random.key(seed, impl="rbg")


def _influence(model, params, codes, labels=None):
    """``D[q, p]``: the largest change of the logits at raster position ``p`` when the code at
    ``q`` is changed (to another random code), from one batched forward pass of ``H * W + 1``
    grids. ``codes: [H, W]``."""
    hgt, wid = codes.shape
    n = hgt * wid
    flat = codes.reshape(n)
    shift = jax.random.randint(_key(7), (n,), 1, K)
    perturbed = jnp.tile(flat, (n, 1)).at[jnp.arange(n), jnp.arange(n)].set((flat + shift) % K)
    batch = jnp.concatenate([flat[None], perturbed]).reshape(n + 1, hgt, wid)
    if labels is not None:
        labels = jnp.full((n + 1,), labels, jnp.int32)
    logits = jax.jit(model.apply)(params, batch, labels).reshape(n + 1, n, K)
    return np.asarray(jnp.max(jnp.abs(logits[1:] - logits[:1]), axis=-1))


def _init(model, hgt, wid, seed=0):
    codes = jax.random.randint(_key(seed + 1), (hgt, wid), 0, K)
    labels = 1 if model.num_classes else None
    dummy_labels = None if labels is None else jnp.zeros((1,), jnp.int32)
    params = model.init(_key(seed), codes[None], dummy_labels)
    return params, codes, labels


@pytest.mark.parametrize("kernel_size, num_layers, num_classes", [(3, 3, 0), (5, 2, 3)])
@pytest.mark.slow
def test_logits_ignore_current_and_later_codes(kernel_size, num_layers, num_classes):
    model = GatedPixelCNN(
        K,
        channels=8,
        num_layers=num_layers,
        kernel_size=kernel_size,
        num_classes=num_classes,
        head_channels=16,
    )
    params, codes, labels = _init(model, 4, 5)  # not square: rows and columns can't be confused
    d = _influence(model, params, codes, labels)
    n = d.shape[0]
    later_or_same = np.arange(n)[:, None] >= np.arange(n)[None, :]  # [q, p]: q >= p
    assert d[later_or_same].max() < ATOL
    assert d[~later_or_same].max() > 1e-3  # the model is not trivially constant


@pytest.mark.slow
def test_no_blind_spot():
    """With ``(num_layers + 1) * (k // 2) >= W - 1`` every earlier code reaches every position,
    including the ones up and to the right, which stacked masked 3x3 convolutions never see
    (e.g. the code at (0, 4) for the position (1, 0) or (2, 1))."""
    hgt = wid = 5
    model = GatedPixelCNN(K, channels=8, num_layers=3, head_channels=16)
    params, codes, _ = _init(model, hgt, wid, seed=3)
    d = _influence(model, params, codes)
    n = hgt * wid
    earlier = np.arange(n)[:, None] < np.arange(n)[None, :]
    assert d[earlier].min() > 1e-5  # far and deep paths are weak at init, ~1e-4
    assert d[~earlier].max() < ATOL
    # One layer less and the far upper right falls out of reach: the bound is tight.
    model = GatedPixelCNN(K, channels=8, num_layers=2, head_channels=16)
    params, codes, _ = _init(model, hgt, wid, seed=3)
    d = _influence(model, params, codes)
    assert d[0 * wid + 4, 1 * wid + 0] < ATOL  # (0, 4) -> (1, 0): 4 columns to the right
    assert d[0 * wid + 3, 1 * wid + 0] > 1e-5  # (0, 3) -> (1, 0): 3 columns to the right


@pytest.mark.slow
def test_class_conditioning():
    model = GatedPixelCNN(K, channels=8, num_layers=2, num_classes=3, head_channels=16)
    codes = jax.random.randint(_key(0), (2, 4, 4), 0, K)
    params = model.init(_key(1), codes, jnp.zeros((2,), jnp.int32))
    same = jnp.stack([codes[0], codes[0]])
    out = model.apply(params, same, jnp.array([0, 2], jnp.int32))
    # Every position moves with the label, even the first one, which sees no code at all.
    assert float(jnp.abs(out[0] - out[1]).max(axis=-1).min()) > 1e-3
    with pytest.raises(ValueError, match="labels"):
        model.apply(params, codes)
    plain = GatedPixelCNN(K, channels=8, num_layers=2, head_channels=16)
    plain_params = plain.init(_key(1), codes)
    with pytest.raises(ValueError, match="labels"):
        plain.apply(plain_params, codes, jnp.zeros((2,), jnp.int32))


def test_bfloat16_compute_gives_float32_logits_close_to_float32():
    model = GatedPixelCNN(K, channels=8, num_layers=2, head_channels=16)
    codes = jax.random.randint(_key(0), (2, 4, 4), 0, K)
    params = model.init(_key(1), codes)
    low = GatedPixelCNN(K, channels=8, num_layers=2, head_channels=16, dtype=jnp.bfloat16)
    out, out_low = model.apply(params, codes), jax.jit(low.apply)(params, codes)
    assert out_low.dtype == jnp.float32
    assert float(jnp.abs(out - out_low).max()) < 0.1


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_sampler_matches_fixed_distribution(temperature):
    b, hgt, wid = 4000, 2, 3
    fixed = 1.5 * jax.random.normal(_key(0), (hgt, wid, K))
    logits_fn = lambda grid: jnp.broadcast_to(fixed, (*grid.shape, K))
    codes = jax.jit(lambda r: sample_codes(logits_fn, (b, hgt, wid), r, temperature))(_key(1))
    assert codes.dtype == jnp.int32
    freq = np.asarray(jax.nn.one_hot(codes, K).mean(axis=0))
    expected = np.asarray(jax.nn.softmax(fixed / temperature, axis=-1))
    assert np.abs(freq - expected).max() < 0.03


def test_sampler_sees_earlier_codes():
    """Logits at ``p`` put (nearly) all mass on ``(code at p - 1) + 1 mod K``; position 0 is
    uniform. A sampler that read a stale grid would break the chain."""
    b, hgt, wid = 64, 3, 4

    def logits_fn(grid):
        flat = grid.reshape(grid.shape[0], -1)
        target = (jnp.roll(flat, 1, axis=1) + 1) % K
        logits = 30.0 * jax.nn.one_hot(target, K)
        logits = logits.at[:, 0].set(0.0)
        return logits.reshape(*grid.shape, K)

    codes = sample_codes(logits_fn, (b, hgt, wid), jax.random.PRNGKey(0))  # a raw uint32 key
    flat = np.asarray(codes).reshape(b, -1)
    np.testing.assert_array_equal(flat[:, 1:], (flat[:, :-1] + 1) % K)
    assert len(np.unique(flat[:, 0])) == K


@pytest.mark.parametrize("temperature", [0.0, -1.0, 0])
def test_sampler_rejects_bad_temperature(temperature):
    logits_fn = lambda grid: jnp.zeros((*grid.shape, K))
    with pytest.raises(ValueError, match="temperature"):
        sample_codes(logits_fn, (2, 2, 2), _key(0), temperature)


def _stripes(rng, b, size):
    """Grids whose rows are constant (horizontal stripes) or whose columns are (vertical),
    half and half, each stripe a random code: ``(log 2 + size * log K) / size**2`` nats per
    code."""
    k_codes, k_dir = jax.random.split(rng)
    stripes = jax.random.randint(k_codes, (b, size), 0, K)
    rows = jnp.broadcast_to(stripes[:, :, None], (b, size, size))
    vertical = jax.random.bernoulli(k_dir, 0.5, (b,))
    return jnp.where(vertical[:, None, None], rows.transpose(0, 2, 1), rows).astype(jnp.int32)


@pytest.mark.slow
def test_training_lowers_loss_and_samples_follow_the_data():
    size, steps = 4, 80
    model = GatedPixelCNN(K, channels=16, num_layers=3, head_channels=32)
    data = _stripes(_key(0), 256, size)
    params = model.init(_key(1), data[:1])
    opt = optax.adam(1e-2)
    opt_state = opt.init(params)

    def loss_fn(params, batch):
        logits = model.apply(params, batch)
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch).mean()

    @jax.jit
    def train_step(params, opt_state, rng):
        batch = data[jax.random.choice(rng, data.shape[0], (64,), replace=False)]
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    losses = []
    for i in range(steps):
        params, opt_state, loss = train_step(params, opt_state, _key(100 + i))
        losses.append(float(loss))
    final = float(loss_fn(params, data))
    floor = (math.log(2) + size * math.log(K)) / size**2  # entropy of the data, per code
    assert final < 0.5 * losses[0]
    assert final < 0.5 * math.log(K)
    assert final < floor + 0.25

    # Samples of the trained prior are mostly stripes.
    samples = jax.jit(
        lambda r: sample_codes(lambda c: model.apply(params, c), (64, size, size), r)
    )(_key(2))
    s = np.asarray(samples)
    striped = (s == s[:, :, :1]).all(axis=(1, 2)) | (s == s[:, :1, :]).all(axis=(1, 2))
    assert striped.mean() > 0.5
