"""Parameter sharding: the ``(data, fsdp)`` mesh and ``state_shardings``.

The sharded step is built the way ``loop.compile_train_step`` builds it (``jax.jit`` with the
state's shardings in and out, the state donated, the batch split over every device), with the
state's shardings from ``mesh.state_shardings``; it must equal the replicated 1-device step.
"""

import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxgen.data import load_splits, step_batch
from jaxgen.engine import loop, sampling
from jaxgen.engine.checkpoint import Checkpointer, abstract_like
from jaxgen.engine.config import base_config, differences, resumable, validate
from jaxgen.engine.mesh import (
    batch_sharding,
    fsdp_size,
    gather_params,
    global_batch,
    make_mesh,
    replicated,
    shard_spec,
    state_shardings,
)
from jaxgen.errors import ConfigError
from jaxgen.families import get_family

MIN_SIZE = 512  # the tiny conv VAE's larger kernels (1,024 to 4,096 elements) get sharded


# ------------------------------------------------------------------------------ the mesh
def test_make_mesh_puts_fsdp_devices_on_the_second_axis():
    assert jax.device_count() == 8
    mesh = make_mesh(fsdp=4)
    assert mesh.axis_names == ("data", "fsdp") and dict(mesh.shape) == {"data": 2, "fsdp": 4}
    assert fsdp_size(mesh) == 4
    # Consecutive devices form an fsdp group; rows of a batch go to devices in order.
    assert [d.id for d in mesh.devices[0]] == [0, 1, 2, 3]
    flat = make_mesh(jax.devices()[::-1])  # any order given: by process, then id
    assert dict(flat.shape) == {"data": 8, "fsdp": 1}
    assert [d.id for d in flat.devices.ravel()] == sorted(d.id for d in jax.devices())
    assert make_mesh(jax.devices()[:1]).devices.shape == (1, 1)


@pytest.mark.parametrize("fsdp", [0, 3, -1, 16])
def test_make_mesh_rejects_an_fsdp_size_that_does_not_divide(fsdp):
    with pytest.raises(ValueError, match="fsdp"):
        make_mesh(fsdp=fsdp)


def test_batches_are_split_over_data_and_fsdp():
    mesh = make_mesh(fsdp=4)
    assert batch_sharding(mesh).spec == P(("data", "fsdp"))
    assert batch_sharding(mesh, 3).spec == P(None, ("data", "fsdp"))
    # fsdp = 1: the old data-parallel spec, P("data").
    assert batch_sharding(make_mesh()).spec == P("data")
    assert batch_sharding(make_mesh(), 3).spec == P(None, "data")
    images = np.arange(3 * 16 * 2, dtype=np.float32).reshape(3, 16, 2)
    stacked = global_batch({"image": images}, mesh, batches_per_step=3)["image"]
    single = global_batch({"image": images[0]}, mesh)["image"]
    assert len(stacked.sharding.device_set) == 8
    for shard in stacked.addressable_shards:
        assert shard.data.shape == (3, 2, 2)  # 16 rows over 8 devices, along axis 1
        np.testing.assert_array_equal(shard.data, images[shard.index])
    for shard in single.addressable_shards:
        assert shard.data.shape == (2, 2)
    np.testing.assert_array_equal(np.asarray(stacked), images)


# ------------------------------------------------------------------------ state_shardings
def test_shard_spec_picks_the_largest_dimension_fsdp_divides():
    assert shard_spec((3, 3, 8, 32), jnp.float32, 4, 512) == P(None, None, None, "fsdp")
    assert shard_spec((128, 32), jnp.float32, 4, 512) == P("fsdp")
    assert shard_spec((8, 8), jnp.float32, 4, 64) == P(None, "fsdp")  # a tie: the last one
    assert shard_spec((6, 512), jnp.float32, 4, 512) == P(None, "fsdp")
    assert shard_spec((510, 6), jnp.float32, 4, 512) == P()  # no dimension 4 divides
    assert shard_spec((3, 3, 8, 1), jnp.float32, 4, 512) == P()  # too small
    assert shard_spec((1024,), jnp.float32, 4, 1024) == P("fsdp")  # min_size is inclusive
    assert shard_spec((), jnp.int32, 4, 0) == P()  # scalars: the step, Adam's count
    assert shard_spec((4096, 4), jnp.float32, 1, 0) == P()  # fsdp = 1: all replicated
    key = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), 1024))
    assert shard_spec(key.shape, key.dtype, 4, 0) == P()  # PRNG keys stay whole


def test_state_shardings_shard_big_arrays_and_replicate_the_rest():
    mesh = make_mesh(fsdp=4)
    f32 = jnp.float32
    abstract = {
        "step": jax.ShapeDtypeStruct((), jnp.int32),
        "rng": jax.ShapeDtypeStruct((2,), jnp.uint32),
        "params": {
            "kernel": jax.ShapeDtypeStruct((128, 32), f32),
            "bias": jax.ShapeDtypeStruct((32,), f32),
            "odd": jax.ShapeDtypeStruct((513, 3), f32),
        },
        "opt": ({"mu": jax.ShapeDtypeStruct((128, 32), f32)}, None),
    }
    shardings = state_shardings(abstract, mesh, min_size=MIN_SIZE)
    specs = jax.tree.map(lambda s: s.spec, shardings)
    assert specs == {
        "step": P(),
        "rng": P(),
        "params": {"kernel": P("fsdp"), "bias": P(), "odd": P()},
        "opt": ({"mu": P("fsdp")}, None),
    }
    assert all(s.mesh is mesh for s in jax.tree.leaves(shardings))
    # Pure: the same input gives the same answer, and nothing is sharded with fsdp = 1.
    assert jax.tree.map(lambda s: s.spec, state_shardings(abstract, mesh, MIN_SIZE)) == specs
    flat = state_shardings(abstract, make_mesh(), min_size=0)
    assert all(s.spec == P() for s in jax.tree.leaves(flat))


# ---------------------------------------------------------------- a sharded training step
def _conv_config(tiny_vae_config):
    config = tiny_vae_config
    config.model.kind = "conv"
    return config


def _build(config, devices, fsdp, min_size):
    """``(state, step_fn, mesh, shardings)`` as ``loop.make_setup`` + ``compile_train_step``
    would build them, with the state's shardings from ``state_shardings`` and the parameters
    gathered for the step (``gather_params``)."""
    family = get_family(config.family)
    k = family.capabilities(config).batches_per_step
    mesh = make_mesh(devices, fsdp=fsdp)
    example = loop.example_batch(config, mesh.devices.size, k)
    init = functools.partial(family.init, config)
    abstract = jax.eval_shape(
        init,
        jax.ShapeDtypeStruct((2,), jnp.uint32),
        {key: jax.ShapeDtypeStruct(v.shape, v.dtype) for key, v in example.items()},
    )
    shardings = state_shardings(abstract, mesh, min_size)
    state = jax.jit(init, out_shardings=shardings)(
        jax.random.PRNGKey(config.seed), global_batch(example, mesh, k)
    )
    batch_shardings = {key: batch_sharding(mesh, k) for key in ("image", "label", "index")}
    step_fn = jax.jit(
        lambda state, batch: family.train_step(config, gather_params(state, mesh), batch),
        in_shardings=(shardings, batch_shardings),
        out_shardings=(shardings, replicated(mesh)),
        donate_argnums=0,
    )
    return state, step_fn, mesh, shardings


def _train(config, devices, fsdp, min_size, num_steps=3):
    state, step_fn, mesh, shardings = _build(config, devices, fsdp, min_size)
    train, _ = load_splits(config.data)
    for k in range(num_steps):
        local = step_batch(train, config.seed, k, config.train.batch_size)
        state, metrics = step_fn(state, global_batch(local, mesh))
    return state, jax.device_get(metrics), shardings


def _named_leaves(tree) -> dict:
    return {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.mark.slow
def test_fsdp_step_equals_the_replicated_one_device_step(tiny_vae_config):
    config = _conv_config(tiny_vae_config)
    assert jax.device_count() == 8 and config.train.batch_size % 8 == 0
    sharded, m8, shardings = _train(config, jax.devices(), fsdp=4, min_size=MIN_SIZE)
    single, m1, _ = _train(config, jax.devices()[:1], fsdp=1, min_size=MIN_SIZE)

    got, want = _named_leaves(sharded), _named_leaves(single)
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_allclose(
            np.asarray(got[name]), np.asarray(want[name]), rtol=1e-5, atol=1e-6, err_msg=name
        )
    for name in m1:
        np.testing.assert_allclose(m8[name], m1[name], rtol=1e-5, err_msg=name)

    # The arrays really are sharded as asked: each device holds a quarter of a big kernel
    # (and of its Adam moments), and the small ones whole.
    specs = {name: s.spec for name, s in _named_leaves(shardings).items()}
    kernel = ".players['model'].params['decoder']['Conv_0']['kernel']"
    big = [name for name, spec in specs.items() if spec != P()]
    assert kernel in big and kernel.replace("params", "opt_state[0].mu") in big
    assert len(big) == 15, big  # 5 kernels of >= 512 elements, in params, mu and nu
    for name, x in got.items():
        assert x.sharding.spec == specs[name], name
        assert len(x.sharding.device_set) == 8
        shard = x.addressable_shards[0].data
        if name in big:
            assert shard.size * 4 == x.size, (name, shard.shape, x.shape)
            axis = list(specs[name]).index("fsdp")
            assert shard.shape[axis] * 4 == x.shape[axis]
        else:
            assert shard.shape == x.shape, name
    assert got[kernel].addressable_shards[0].data.shape == (3, 3, 8, 8)
    assert int(sharded.step) == 3


@pytest.mark.slow
def test_a_checkpoint_moves_between_sharded_and_replicated_layouts(tiny_vae_config, tmp_path):
    config = _conv_config(tiny_vae_config)
    sharded, _, fsdp_shardings = _train(config, jax.devices(), 4, MIN_SIZE, num_steps=1)
    one_shardings = state_shardings(sharded, make_mesh(jax.devices()[:1]), MIN_SIZE)
    checkpoints = Checkpointer(str(tmp_path / "a"))
    try:
        checkpoints.save(1, sharded, force=True)
        checkpoints.wait()
        restored = checkpoints.restore(abstract_like(sharded, one_shardings))
    finally:
        checkpoints.close()
    for name, x in _named_leaves(restored).items():
        assert x.sharding.spec == P() and len(x.sharding.device_set) == 1
        np.testing.assert_array_equal(np.asarray(x), np.asarray(_named_leaves(sharded)[name]))
    # ... and back: a replicated checkpoint restores straight into the fsdp layout.
    checkpoints = Checkpointer(str(tmp_path / "b"))
    try:
        checkpoints.save(1, restored, force=True)
        checkpoints.wait()
        again = checkpoints.restore(abstract_like(restored, fsdp_shardings))
    finally:
        checkpoints.close()
    for name, x in _named_leaves(again).items():
        assert x.sharding == _named_leaves(fsdp_shardings)[name], name
        np.testing.assert_array_equal(np.asarray(x), np.asarray(_named_leaves(restored)[name]))


def _dense_then_conv(params, z):
    """A decoder's start: a dense layer, reshaped to a 4x4x8 map, then a 3x3 convolution."""
    h = (z @ params["w"]).reshape(z.shape[0], 4, 4, 8)
    dims = ("NHWC", "HWIO", "NHWC")
    return jax.lax.conv_general_dilated(h, params["k"], (1, 1), "SAME", dimension_numbers=dims)


@pytest.mark.slow
def test_gathered_parameters_avoid_a_wrong_sharded_convolution(tiny_vae_config):
    """With ``fsdp = 2`` and ``data > 1``, XLA's CPU backend (jax 0.10, GSPMD and Shardy alike)
    computes a convolution fed by a dense layer whose output axis is split over ``fsdp`` wrongly
    when it partitions the layers along the parameters' sharding (the VAE's IWAE estimate was
    off by 1 to 4 nats; here the convolution comes out summed over the ``data`` axis, 2x).
    ``gather_params`` all-gathers the parameters first: right answers."""
    devices = 4  # data = 2 x fsdp = 2
    rng = np.random.default_rng(0)
    params = {
        "w": rng.normal(size=(4, 128)).astype(np.float32),
        "k": rng.normal(size=(3, 3, 8, 32)).astype(np.float32),
    }
    z = rng.normal(size=(32, 4)).astype(np.float32)
    want = np.asarray(jax.jit(_dense_then_conv)(params, z))
    mesh = make_mesh(jax.devices()[:devices], fsdp=2)
    shardings = state_shardings(params, mesh, min_size=MIN_SIZE)
    assert shardings["w"].spec == P(None, "fsdp") and shardings["k"].spec[-1] == "fsdp"
    got = jax.jit(
        lambda p, z: _dense_then_conv(gather_params(p, mesh), z),
        in_shardings=(shardings, replicated(mesh)),
        out_shardings=replicated(mesh),
    )(params, z)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-4)

    # The family's eval step (IWAE, lax.map over chunks of samples) on the same layout.
    config = _conv_config(tiny_vae_config)
    family = get_family(config.family)
    state, _, _, state_sh = _build(config, jax.devices()[:devices], 2, MIN_SIZE)
    _, test = load_splits(config.data)
    local = {"image": test.get(np.arange(16))["image"], "label": np.zeros(16, np.int32)}
    local["index"] = np.arange(16, dtype=np.int32)
    eval_fn = jax.jit(
        lambda s, b: family.eval_step(config, gather_params(s, mesh), b),
        in_shardings=(state_sh, batch_sharding(mesh)),
        out_shardings=replicated(mesh),
    )
    got = jax.device_get(eval_fn(state, global_batch(local, mesh)))
    whole = jax.device_get(state)
    want = jax.device_get(jax.jit(functools.partial(family.eval_step, config))(whole, local))
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, err_msg=name)


# ------------------------------------------------------------- through the training loop
# These need the ``mesh.fsdp`` config keys in jaxgen/engine/config.py and loop.make_setup
# building its mesh and shardings with them; until then they are skipped.
needs_fsdp_keys = pytest.mark.skipif(
    "fsdp" not in base_config().mesh, reason="config.mesh.fsdp is not wired into the engine yet"
)


@needs_fsdp_keys
@pytest.mark.slow
def test_the_loop_trains_evaluates_and_restores_with_fsdp(tiny_vae_config, tmp_path):
    config = _conv_config(tiny_vae_config)
    config.train.num_steps = 2
    # fsdp = 2 on 8 devices: the layout XLA's CPU backend gets wrong without gather_params.
    config.mesh.fsdp, config.mesh.fsdp_min_size = 2, MIN_SIZE
    workdir = str(tmp_path / "run")
    state, summary = loop.train_and_evaluate(config, workdir)
    assert summary["step"] == 2 and np.isfinite(summary["eval"]["nll_iwae"]), summary
    assert summary["samples"] and os.path.exists(summary["samples"])
    kernel = state.model.params["decoder"]["Conv_0"]["kernel"]
    assert kernel.sharding.spec == P(None, None, None, "fsdp")
    assert kernel.addressable_shards[0].data.shape == (3, 3, 8, 16)
    single, _, _ = _train(config, jax.devices()[:1], 1, MIN_SIZE, num_steps=2)
    want = _named_leaves(single)
    for name, x in _named_leaves(state).items():
        np.testing.assert_allclose(np.asarray(x), np.asarray(want[name]), rtol=1e-5, atol=1e-6)
    # Restored on all 8 devices: sharded as trained; on 1 device (fsdp=2 does not divide it):
    # replicated there, same values.
    setup, restored = loop.restore_for_inference(workdir)
    assert fsdp_size(setup.mesh) == 2
    restored_kernel = restored.model.params["decoder"]["Conv_0"]["kernel"]
    assert restored_kernel.sharding.spec == kernel.sharding.spec
    setup1, restored1 = loop.restore_for_inference(workdir, jax.devices()[:1])
    assert fsdp_size(setup1.mesh) == 1
    for name, x in _named_leaves(restored1).items():
        np.testing.assert_array_equal(np.asarray(x), np.asarray(_named_leaves(state)[name]))
    # The final eval and sampling on the fsdp layout equal the same on one device.
    one = loop.evaluate(workdir, devices=jax.devices()[:1])
    for name, value in one.items():
        np.testing.assert_allclose(summary["eval"][name], value, rtol=1e-5, err_msg=name)
    kwargs = sampling.prepare(setup, {}, loop.restore_for_inference)
    key = jax.random.PRNGKey(3)
    images = sampling.generate(setup, restored, key, 8, kwargs, progress=False).images
    images1 = sampling.generate(setup1, restored1, key, 8, kwargs, progress=False).images
    np.testing.assert_allclose(images, images1, rtol=1e-5, atol=1e-6)


@needs_fsdp_keys
@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("fsdp", 3, r"mesh.fsdp=3 does not divide the 8 devices; use one of \[1, 2, 4, 8\]"),
        ("fsdp", 0, r"mesh.fsdp=0 must be a positive integer"),
        ("fsdp", True, r"mesh.fsdp=True must be a positive integer"),
        ("fsdp_min_size", -1, r"mesh.fsdp_min_size=-1 must be an integer >= 0"),
        ("data", 8, r"mesh.data=8 must be -1 \(all devices\) or the device count over mesh.fsdp"),
    ],
)
def test_bad_fsdp_settings_name_the_key(tiny_vae_config, key, value, message):
    config = tiny_vae_config
    if key == "data":
        config.mesh.fsdp = 4
    config.mesh[key] = value
    with pytest.raises(ConfigError, match=message):
        validate(config, num_devices=8)


@needs_fsdp_keys
def test_fsdp_settings_are_valid_and_resumable(tiny_vae_config):
    config = tiny_vae_config
    before = ml_collections.ConfigDict(config.to_dict())
    config.mesh.fsdp, config.mesh.data, config.mesh.fsdp_min_size = 4, 2, 0
    validate(config, num_devices=8)
    config.mesh.data = -1
    validate(config, num_devices=1, fsdp=1)  # inference on one device (make_setup's fsdp)
    diffs = differences(before, config)
    assert len(diffs) == 2 and all(resumable(d) for d in diffs), diffs
