"""The family contract: families the engine has never seen train, resume and sample through it,
and the wiring every family relies on (batches split over devices, a fresh key every step).

Two families defined in the tests (``two_player_family``, ``fake_tokenizer_family``) stand for
the GAN and tokenizers to come: nothing in the engine or the scripts knows them.
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import two_player_family
from jax.sharding import PartitionSpec
from support import ROOT, leaves, load_config

from jaxgen.data import load_splits, step_batch
from jaxgen.engine import loop, sampling
from jaxgen.engine.checkpoint import Checkpointer
from jaxgen.engine.metrics import read_metrics
from jaxgen.errors import ConfigError
from jaxgen.families import FAMILIES, Capabilities, Family, get_family

TWO_PLAYER = "tests.two_player_family"


def test_families_are_found_by_name_or_module_path_and_unknown_names_are_named():
    assert get_family("vae").name == "vae"
    assert get_family(TWO_PLAYER).capabilities(None).batches_per_step == 3
    with pytest.raises(ConfigError, match=r"family='flow' is not a known family"):
        get_family("flow")
    with pytest.raises(ConfigError, match=r"no module 'no_such.family' can be imported"):
        get_family("no_such.family")


def test_a_declared_capability_needs_its_entry_point():
    family = Family("x", lambda c: None, lambda c: Capabilities(), lambda *a: None, lambda *a: a)
    family.check(Capabilities(held_out=False))
    with pytest.raises(ValueError, match="declares generates but has no entry point"):
        family.check(Capabilities(held_out=False, generates=True))
    with pytest.raises(ValueError, match="declares held_out"):
        family.check(Capabilities())
    with pytest.raises(ValueError, match="batches_per_step=0"):
        family.check(Capabilities(held_out=False, batches_per_step=0))


@pytest.mark.cli
def test_two_players_three_batches_a_step_train_stop_and_resume_bit_for_bit(tmp_path):
    config = two_player_family.get_config()
    straight, summary = loop.train_and_evaluate(config, str(tmp_path / "a"))
    assert "eval" not in summary  # no held-out metrics, and the loop did not ask for any
    assert set(summary["train"]) >= {"d_loss", "g_loss", "index_sum"}
    assert "loss" not in summary["train"]
    # Each step consumed batches 3k, 3k+1, 3k+2 of the deterministic stream.
    train, _ = load_splits(config.data)
    for row in read_metrics(str(tmp_path / "a")):
        k = row["step"] - 1
        expected = step_batch(train, config.seed, k, config.train.batch_size, 3)["index"]
        assert expected.shape == (3, config.train.batch_size)
        assert row["index_sum"] == float(expected.sum())
    first, summary = loop.train_and_evaluate(config, str(tmp_path / "b"), stop_at_step=2)
    assert summary["stopped_early"] and Checkpointer(str(tmp_path / "b")).all_steps() == [2]
    # The checkpoint holds the players but not State.constants: the resume below rebuilds them
    # (wrong values there would change every critic update after step 2).
    stored = Checkpointer(str(tmp_path / "b"), read_only=True).stored_arrays(2)
    assert any(name.startswith("players.discriminator.params") for name in stored)
    assert not [name for name in stored if name.startswith("constants")], stored
    resumed, _ = loop.train_and_evaluate(config, str(tmp_path / "b"))
    assert int(resumed.step) == config.train.num_steps
    for a, b in zip(leaves(straight), leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    # Both players trained, each with its own optimiser state (Adam moments vs plain SGD).
    fresh = two_player_family.init(config, jax.random.PRNGKey(config.seed), None)
    for name in ("generator", "discriminator"):
        moved = jax.tree.map(
            lambda a, b: np.abs(np.asarray(a) - np.asarray(b)).max(),
            straight.players[name].params,
            fresh.players[name].params,
        )
        assert max(jax.tree.leaves(moved)) > 0, name
    assert len(jax.tree.leaves(straight.players["generator"].opt_state)) > len(
        jax.tree.leaves(straight.players["discriminator"].opt_state)
    )

    # sample.py, as a user runs it, with the family's own --steps option.
    out = str(tmp_path / "s.png")
    result = subprocess.run(
        [sys.executable, "sample.py", f"--workdir={tmp_path / 'a'}", "--num=5", "--steps=2"]
        + [f"--out={out}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    images = np.load(out.replace(".png", ".npz"))["images"]
    assert images.shape == (5, 8, 8, 1) and 0 <= images.min() and images.max() <= 1
    expected = two_player_family.sample(config, straight, jax.random.PRNGKey(0), 5, steps=2)
    np.testing.assert_allclose(images, expected.images, atol=1e-6)


def test_a_checkpoint_of_the_layout_before_constants_restores_with_them(tmp_path):
    """Until 2026-12-04 ``State`` had no ``constants`` and the VQ-GAN kept its LPIPS weights in
    ``frozen``, so its checkpoints saved them; such a checkpoint restores, with ``frozen`` empty
    and ``constants`` rebuilt. (Every family's older checkpoints lack the field.)"""
    config = two_player_family.get_config()
    setup = loop.make_setup(config, jax.devices()[:1])
    state = setup.init_state()
    generator = state.players["generator"]
    trained = generator.replace(params={**generator.params, "w": generator.params["w"] + 1})
    legacy = state.replace(players={**state.players, "generator": trained})
    # The five fields of that State: no `constants` field at all, the constants in `frozen`.
    legacy = {
        "step": legacy.step,
        "rng": legacy.rng,
        "players": legacy.players,
        "extra": legacy.extra,
        "frozen": legacy.constants,
    }
    writer = Checkpointer(str(tmp_path))
    writer.save(0, legacy, force=True)
    writer.close()
    restored = setup.restore(Checkpointer(str(tmp_path), read_only=True))
    assert restored.frozen is None
    np.testing.assert_array_equal(
        restored.constants["pixel_weights"], two_player_family.constants(config)["pixel_weights"]
    )
    np.testing.assert_array_equal(restored.players["generator"].params["w"], trained.params["w"])


@pytest.mark.slow
def test_k_batches_are_split_along_their_batch_axis():
    """The compiled step takes ``[k, B, ...]`` batches sharded on ``B`` over 8 devices, and a
    one-batch family's ``[B, ...]`` on its first axis: nothing is replicated."""
    assert jax.device_count() == 8
    for config in (two_player_family.get_config(), _tiny("vae")):
        setup = loop.make_setup(config)
        k = setup.caps.batches_per_step
        train, _ = load_splits(config.data)
        batch = loop.train_batch_for_step(setup, train, 0)
        compiled = loop.compile_train_step(setup).lower(setup.init_state(), batch).compile()
        spec = PartitionSpec(None, "data") if k > 1 else PartitionSpec("data")
        shardings = compiled.input_shardings[0][1]
        assert shardings["image"] is not None  # (inputs a step never reads are pruned: None)
        for name, sharding in shardings.items():
            assert sharding is None or sharding.spec == spec, (config.family, name, sharding)
        rows = config.train.batch_size // 8
        for shard in batch["image"].addressable_shards:
            assert shard.data.shape[k > 1] == rows


def _tiny(family):
    """A tiny config of a built-in family on procedural 16x16 shapes (``gan:wgan_gp``: that
    family with that variant)."""
    family, _, variant = family.partition(":")
    arg = f"mnist,tiny,{variant}" if variant else "mnist,tiny"
    config = load_config(ROOT / "configs" / f"{family}.py", arg)
    config.data.source = "shapes"
    config.data.image_shape = (16, 16, 1)
    config.data.num_train, config.data.num_test = 256, 64
    if family == "diffusion":
        config.model.num_classes = 10  # conditional: label dropout draws from the key too
    return config


@pytest.mark.parametrize("family", ["vae", "diffusion", "classifier", "gan", TWO_PLAYER])
@pytest.mark.slow
def test_every_step_draws_fresh_randomness(family):
    """A family that draws noise in its step must draw it from ``fold_in(rng, step)``: the same
    state and batch at another step number give another update (one reused key would not)."""
    config = two_player_family.get_config() if family == TWO_PLAYER else _tiny(family)
    setup = loop.make_setup(config, jax.devices()[:1])
    train, _ = load_splits(config.data)
    batch = loop.train_batch_for_step(setup, train, 0)
    state = setup.init_state()
    step = jax.jit(lambda s, b: setup.family.train_step(config, s, b))
    at_0, _ = step(state, batch)
    at_5, _ = step(state.replace(step=jnp.asarray(5, jnp.int32)), batch)
    again, _ = step(state, batch)
    differ = [
        not np.array_equal(a, b)
        for a, b in zip(leaves(at_0.players), leaves(at_5.players), strict=True)
    ]
    assert any(differ)
    for a, b in zip(leaves(at_0.players), leaves(again.players), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_a_prior_trains_on_any_tokenizer_through_the_interface(tmp_path):
    """The PixelCNN prior over a tokenizer it has never heard of: it learns the codes'
    distribution, its checkpoint holds the tokenizer's parameters, and its samples decode
    through that tokenizer."""
    import fake_tokenizer_family as fake

    tok_dir = str(tmp_path / "tok")
    tok_state, _ = loop.train_and_evaluate(fake.get_config(), tok_dir)
    config = load_config(ROOT / "configs" / "pixelcnn.py", "mnist,tiny,cond")
    config.data = fake.get_config().data
    config.first_stage.workdir = tok_dir
    config.train.num_steps = 60
    config.optimizer.learning_rate = 3e-3
    state, summary = loop.train_and_evaluate(config, str(tmp_path / "prior"))
    np.testing.assert_array_equal(state.frozen["levels"], tok_state.extra["levels"])
    rows = [r for r in read_metrics(str(tmp_path / "prior")) if r["split"] == "train"]
    uniform = np.log2(fake.K)  # bits per code of a prior that learned nothing
    assert rows[-1]["nll_bits"] < 0.8 * uniform, (rows[0]["nll_bits"], rows[-1]["nll_bits"])
    setup, restored = loop.restore_for_inference(str(tmp_path / "prior"))
    images, labels = sampling.generate(setup, restored, jax.random.PRNGKey(0), 6, {"label": 2})
    assert images.shape == (6, 16, 16, 1) and (labels == 2).all()
    levels = set(np.round(np.asarray(tok_state.extra["levels"]), 5))
    assert set(np.round(np.unique(images), 5)) <= levels  # decoded by the fake tokenizer


@pytest.mark.slow
def test_a_prior_refuses_a_run_that_is_not_a_tokenizer(tmp_path):
    loop.train_and_evaluate(_tiny("classifier"), str(tmp_path / "clf"))
    config = load_config(ROOT / "configs" / "pixelcnn.py", "mnist,tiny")
    config.first_stage.workdir = str(tmp_path / "clf")
    with pytest.raises(ConfigError, match=r"holds a 'classifier' run, which is not a tokenizer"):
        loop.make_setup(config, need_data=False)


@pytest.mark.cli
def test_two_families_keep_their_own_option_of_the_same_name(tmp_path):
    """``steps`` is the diffusion solver's (default 0: the config's) and the test family's
    (default 3 draws); each workdir's sample.py gets its own default and help."""
    defaults = {}
    for name in ("diffusion", TWO_PLAYER):
        (opt,) = [o for o in get_family(name).sample_options if o.name == "steps"]
        defaults[name] = (opt.default, opt.help)
    assert defaults["diffusion"][0] == 0 and defaults[TWO_PLAYER][0] == 3
    config = two_player_family.get_config()
    config.train.num_steps = 1
    workdir = str(tmp_path / "tp")
    loop.train_and_evaluate(config, workdir)
    setup, _ = loop.restore_for_inference(workdir)
    assert sampling.prepare(setup, {}, None) == {"steps": 3}
    result = subprocess.run(
        [sys.executable, "sample.py", f"--workdir={workdir}", "--helpfull"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Generator draws averaged per image." in result.stdout
    assert "(default: '3')" in result.stdout
    assert "Solver steps" not in result.stdout and "--guidance:" not in result.stdout
    result = subprocess.run(
        [sys.executable, "sample.py", f"--workdir={workdir}", "--guidance=cfg"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "--guidance is a sampling option of the diffusion family" in result.stderr


def test_engine_and_scripts_name_no_family():
    """The engine and the scripts ask a family what it can do; they never test its name."""
    scripts = [ROOT / "jaxgen" / "train.py", ROOT / "jaxgen" / "sample.py"]  # train.py wraps
    for full in [*scripts, *sorted((ROOT / "jaxgen" / "engine").glob("*.py"))]:
        text = full.read_text()
        for name in FAMILIES:
            assert f'"{name}"' not in text and f"'{name}'" not in text, (full, name)


def _prior_on_fake_tokenizer(tmp_path, name="pixelcnn"):
    import fake_tokenizer_family as fake

    tok_dir = str(tmp_path / "tok")
    if not os.path.exists(tok_dir):
        loop.train_and_evaluate(fake.get_config(), tok_dir)
    config = load_config(ROOT / "configs" / f"{name}.py", "mnist,tiny,cond")
    config.data = fake.get_config().data
    config.first_stage.workdir = tok_dir
    return config


@pytest.mark.parametrize(
    "family",
    ["diffusion", "classifier", "pixelcnn", "gan", "gan:wgan_gp", "vqgan", "gpt", "maskgit"],
)
@pytest.mark.slow
def test_stop_and_resume_is_bit_exact_and_eight_devices_equal_one(family, tmp_path):
    """For every family: a run stopped after one step and resumed equals an unbroken one bit
    for bit, and the same run on one device matches the 8-device run."""
    priors = ("pixelcnn", "gpt", "maskgit")
    make = (lambda: _prior_on_fake_tokenizer(tmp_path, family)) if family in priors else None
    make = make or (lambda: _tiny(family))
    config = make()
    config.train.num_steps, config.train.checkpoint_every = 3, 0
    straight, _ = loop.train_and_evaluate(config, str(tmp_path / "a"))
    loop.train_and_evaluate(make_steps(make, 3), str(tmp_path / "b"), stop_at_step=1)
    resumed, _ = loop.train_and_evaluate(make_steps(make, 3), str(tmp_path / "b"))
    for a, b in zip(leaves(straight), leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    single, _ = loop.train_and_evaluate(
        make_steps(make, 3), str(tmp_path / "c"), devices=jax.devices()[:1]
    )
    for a, b in zip(leaves(straight.players), leaves(single.players), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
    assert len(jax.tree.leaves(straight.players)[0].sharding.device_set) == 8


def make_steps(make, steps):
    config = make()
    config.train.num_steps, config.train.checkpoint_every = steps, 0
    return config
