"""The VQ-VAE family: which loss term reaches which parameters, EMA and restarts as state
transforms inside the step, sharding, resume, and a tiny run that learns."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from support import ROOT, leaves, load_config, require_data, run_steps

from jaxgen import quantize as vq
from jaxgen.data import load_splits, train_batch
from jaxgen.engine import loop
from jaxgen.engine.metrics import read_metrics
from jaxgen.errors import ConfigError
from jaxgen.families import tokenizers, vqvae
from jaxgen.families.common import to_unit_interval


def _config(*variants):
    """A tiny VQ-VAE of the procedural 16x16 shapes: needs no files."""
    config = load_config(ROOT / "configs" / "vqvae.py", ",".join(["mnist", "tiny", *variants]))
    config.data.source = "shapes"
    config.data.image_shape = (16, 16, 1)
    config.data.num_train, config.data.num_test = 256, 64
    return config


def _state_and_batch(config):
    """Initial state and first batch, computed once per codebook kind (init compiles slowly)."""
    return _initial(config.vq.codebook)


@functools.cache
def _initial(codebook: str):
    config = _config() if codebook == "ema" else _config("loss")
    setup = loop.make_setup(config, jax.devices()[:1])
    train, _ = load_splits(config.data)
    batch = train_batch(train, config.seed, 0, config.train.batch_size)
    return setup.init_state(), batch


def _norm(tree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(tree)))


@pytest.mark.slow
def test_each_loss_term_reaches_exactly_the_parameters_the_paper_says():
    """Encoder: reconstruction + commitment; decoder: reconstruction; codebook: the VQ term.
    The commitment term never reaches the codebook, the VQ term never the encoder."""
    config = _config("loss")
    state, batch = _state_and_batch(config)
    x = to_unit_interval(batch["image"])
    terms = ("mse", "vq_loss", "commit_loss")

    @jax.jit
    def grad_norms(params):
        out = {}
        for term in terms:

            def one_term(p, term=term):
                return vqvae.loss_fn(config, p, p["codebook"], x)[1][0][term]

            grads = jax.grad(one_term)(params)
            out[term] = {group: _norm(g) for group, g in grads.items()}
        return out

    norms = jax.device_get(grad_norms(state.model.params))
    reaches = {"mse": {"encoder", "decoder"}, "vq_loss": {"codebook"}, "commit_loss": {"encoder"}}
    for term in terms:
        assert set(norms[term]) == {"encoder", "decoder", "codebook"}
        for group, norm in norms[term].items():
            if group in reaches[term]:
                assert norm > 1e-8, (term, group, norms[term])
            else:
                assert norm == 0.0, (term, group, norms[term])


@pytest.mark.slow
def test_ema_codebook_gets_no_gradient_and_moves_by_its_own_update():
    config = _config()
    state, batch = _state_and_batch(config)
    assert "codebook" not in state.model.params and state.extra.ema is not None
    config.vq.restart_after = 0
    new, metrics = jax.jit(functools.partial(vqvae.train_step, config))(state, batch)

    @jax.jit
    def by_hand(state):
        z_e = vqvae.encode(config, state.model.params, to_unit_interval(batch["image"]))
        indices = vq.nearest_code(z_e, state.extra.ema.codebook)[0]
        return vq.ema_update(state.extra.ema, z_e, indices, config.vq.ema_decay, config.vq.ema_eps)

    expected = by_hand(state)
    np.testing.assert_allclose(new.extra.ema.codebook, expected.codebook, rtol=1e-5, atol=1e-6)
    assert float(metrics["vq_loss"]) > 0  # reported, though not trained on


def test_beta_weights_the_commitment_term_only():
    config = _config("loss")
    state, batch = _state_and_batch(config)
    x = to_unit_interval(batch["image"])
    out = {}
    for beta in (0.25, 1.0):
        config.vq.beta = beta
        terms = jax.jit(lambda p, c=config: vqvae.loss_fn(c, p, p["codebook"], x)[1][0])
        out[beta] = terms(state.model.params)
    np.testing.assert_allclose(out[1.0]["commit_loss"], 4 * out[0.25]["commit_loss"], rtol=1e-5)
    np.testing.assert_allclose(out[1.0]["vq_loss"], out[0.25]["vq_loss"], rtol=1e-6)


@pytest.mark.slow
def test_dead_codes_are_restarted_inside_the_step_from_encoder_outputs():
    config = _config()
    config.vq.restart_after = 1
    state, batch = _state_and_batch(config)
    step = jax.jit(functools.partial(vqvae.train_step, config))
    state, _ = step(state, batch)  # codes unused in step 0 are now due
    x = to_unit_interval(batch["image"])
    z_e, chosen = jax.jit(
        lambda s: (
            z := vqvae.encode(config, s.model.params, x),
            vq.nearest_code(z, s.extra.ema.codebook)[0],
        )
    )(state)  # what step 1 sees
    used = np.zeros(config.vq.num_codes, bool)
    used[np.asarray(chosen).ravel()] = True
    new, metrics = step(state, batch)
    restarted = (np.asarray(new.extra.unused) == 0) & ~used
    assert restarted.sum() == float(metrics["restarted"]) > 0
    # Each restarted row is a copy of one of the batch's encoder outputs.
    flat = np.asarray(z_e).reshape(-1, config.vq.dim)
    for row in np.asarray(new.extra.ema.codebook)[restarted]:
        assert np.min(np.abs(flat - row).max(axis=1)) < 1e-6
    np.testing.assert_array_equal(np.asarray(new.extra.ema.cluster_size)[restarted], 1.0)


@pytest.mark.slow
def test_eight_device_steps_equal_one_device_steps_with_ema_and_restarts():
    config = _config()
    config.train.batch_size = 16
    sharded, m8 = run_steps(config, jax.devices(), 3)
    single, m1 = run_steps(config, jax.devices()[:1], 3)
    assert len(sharded.extra.ema.codebook.sharding.device_set) == 8
    for a, b in zip(leaves(sharded), leaves(single), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # As tight as the state: XNNPACK's convolutions (jaxgen.xla_cpu) sum in an order that
    # depends on the batch per device, so the two losses differ in float32 rounding (1e-5).
    np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-4)


@pytest.mark.slow
def test_a_tiny_run_learns_and_a_resumed_run_equals_it(tmp_path):
    config = _config()
    config.train.num_steps = 150
    config.train.batch_size = 32
    config.train.log_every = 10
    config.train.checkpoint_every = 0  # only the end / preemption checkpoints
    config.optimizer.learning_rate = 3e-3
    config.eval.final_num_examples = 64
    straight, summary = loop.train_and_evaluate(config, str(tmp_path / "a"))
    ev = summary["eval"]
    # 16 codes of D=4 on a 4x4 grid: far from exact, but well past the mean image (~10 dB).
    assert ev["psnr"] > 14, ev
    assert 0 < ev["codes_used"] <= 1 and ev["codes_perplexity"] > 2, ev
    rows = [r for r in read_metrics(str(tmp_path / "a")) if r["split"] == "train"]
    assert rows[-1]["mse"] < 0.5 * rows[0]["mse"], (rows[0], rows[-1])
    # Stopped at 70 and resumed: the EMA codebook and the unused counters come back too.
    _, summary = loop.train_and_evaluate(config, str(tmp_path / "b"), stop_at_step=70)
    assert summary["stopped_early"]
    resumed, _ = loop.train_and_evaluate(config, str(tmp_path / "b"))
    for a, b in zip(leaves(straight), leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("vq.codebook", "kmeans", r"vq.codebook='kmeans' is not one of \('ema', 'loss'\)"),
        ("vq.num_codes", 0, r"vq.num_codes=0 must be a positive integer"),
        ("vq.ema_decay", 1.0, r"vq.ema_decay=1.0 must be in \[0, 1\)"),
        ("vq.beta", -0.1, r"vq.beta=-0.1 must be >= 0"),
        ("vq.restart_after", -1, r"vq.restart_after=-1 must be an integer >= 0"),
        ("model.channels", (8, 8, 8, 8, 8), r"divisible by 32"),
    ],
)
def test_bad_vqvae_config_values_are_named(key, value, message, tmp_path):
    config = _config()
    section, name = key.split(".")
    config[section][name] = value
    with pytest.raises(ConfigError, match=message):
        loop.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("codebook", ["loss", "ema"])
@pytest.mark.slow
def test_seeding_puts_every_code_on_an_encoder_output_of_the_first_batch(codebook):
    config = _config() if codebook == "ema" else _config("loss")
    config.vq.seed_from_data, config.vq.restart_after = True, 0
    state, batch = _state_and_batch(config)
    step = jax.jit(functools.partial(vqvae.train_step, config))
    x = to_unit_interval(batch["image"])
    z_e = jax.jit(lambda s: vqvae.encode(config, s.model.params, x))(state)
    seeded, _ = step(state, batch)
    flat = np.asarray(z_e).reshape(-1, config.vq.dim)
    for row in np.asarray(tokenizers.codebook_of(seeded)):
        assert np.min(np.abs(flat - row).max(axis=1)) < 1e-6
    # only step 0 seeds: a later step leaves every row where its own update puts it (up to
    # float rounding: the two programs fuse differently)
    later = seeded.replace(step=jnp.asarray(1, jnp.int32))
    config.vq.seed_from_data = False
    expected, _ = jax.jit(functools.partial(vqvae.train_step, config))(later, batch)
    config.vq.seed_from_data = True
    again, _ = step(later, batch)
    np.testing.assert_allclose(
        tokenizers.codebook_of(again), tokenizers.codebook_of(expected), rtol=1e-6, atol=1e-7
    )


@pytest.mark.slow
def test_restarts_of_a_seeded_loss_codebook_do_not_shock_the_decoder():
    """The README's restart problem, on real MNIST. Unseeded, a codebook learned by the VQ loss
    (Adam moves each row by about the learning rate a step) stays near its +-1/K start while
    the encoder's outputs grow, so the decoder learns on tiny codes; the first restart then puts
    hundreds of codes on encoder outputs orders of magnitude larger, the loss jumps by hundreds
    of times, and Adam's second moments carry the shock for the rest of the run. Seeded from
    the first batch, the codebook starts on the encoder's scale and a restart is a small step."""
    config = load_config(ROOT / "configs" / "vqvae.py", "mnist,loss")
    if not require_data(config.data.path):
        pytest.skip("MNIST is not on this machine")
    config.vq.restart_after = 15
    config.optimizer.warmup_steps, config.optimizer.decay_steps = 0, 0
    train, _ = load_splits(config.data)
    setup = loop.make_setup(config, jax.devices()[:1])
    state = setup.init_state()
    step = jax.jit(functools.partial(vqvae.train_step, config))
    mse, restarted = [], []
    for i in range(20):
        state, m = step(state, train_batch(train, config.seed, i, config.train.batch_size))
        mse.append(float(m["mse"]))
        restarted.append(float(m["restarted"]))
    first = next(i for i, r in enumerate(restarted) if r > 0)
    assert restarted[first] > 50, restarted  # many codes were re-seeded at once
    assert max(mse[first + 1 : first + 4]) < 2 * mse[first], (first, mse)


@pytest.mark.parametrize("codebook", ["loss", "ema"])
@pytest.mark.slow
def test_a_checkpoint_of_the_dict_codebook_layout_restores_into_codebook_state(codebook, tmp_path):
    """Runs saved before the codebook state had a type kept ``extra = {"ema", "unused"}``; the
    checkpoint names the same leaves, so it restores into ``quantize.CodebookState``."""
    from jaxgen.engine.checkpoint import Checkpointer

    config = _config() if codebook == "ema" else _config("loss")
    state, _ = _state_and_batch(config)
    assert isinstance(state.extra, vq.CodebookState)
    unused = jnp.arange(config.vq.num_codes, dtype=jnp.int32)
    old = state.replace(extra={"ema": state.extra.ema, "unused": unused})
    checkpoints = Checkpointer(str(tmp_path), keep=1)
    assert checkpoints.save(1, old)
    checkpoints.close()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    restored = Checkpointer(str(tmp_path), keep=1).restore(abstract)
    assert isinstance(restored.extra, vq.CodebookState)
    np.testing.assert_array_equal(restored.extra.unused, unused)
    np.testing.assert_array_equal(tokenizers.codebook_of(restored), tokenizers.codebook_of(state))
