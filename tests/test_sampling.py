"""jaxgen.engine.sampling and images in-process: chunked generation (one compile, folded keys,
labels split per chunk), refused non-finite option values and images, and safe writes."""

import dataclasses
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from support import ROOT, load_config

from jaxgen import files
from jaxgen.engine import images as images_lib
from jaxgen.engine import loop, sampling
from jaxgen.engine.config import validate
from jaxgen.errors import ConfigError


def _tiny(path, arg):
    config = load_config(ROOT / "configs" / path, arg)
    config.data.source = "shapes"
    config.data.image_shape = (16, 16, 1)
    config.data.num_train, config.data.num_test = 256, 64
    return config


@pytest.fixture(scope="module")
def vae():
    """A tiny VAE's setup and freshly initialised state (sampling needs no training)."""
    setup = loop.make_setup(_tiny("vae.py", "mnist,tiny"), need_data=False)
    return setup, setup.init_state()


@pytest.fixture(scope="module")
def cond_diffusion():
    """A tiny class-conditional diffusion model (10 classes), 2 solver steps."""
    setup = loop.make_setup(_tiny("diffusion.py", "mnist,tiny,cond"), need_data=False)
    return setup, setup.init_state(), sampling.prepare(setup, {"steps": 2}, None)


def _counting(setup):
    """``setup`` whose family's ``sample`` counts how often it is traced."""
    traces = []
    inner = setup.family.sample

    def sample(*args, **kwargs):
        traces.append(args[3])  # num
        return inner(*args, **kwargs)

    family = dataclasses.replace(setup.family, sample=sample)
    return dataclasses.replace(setup, family=family), traces


KEY = jax.random.PRNGKey(3)


@pytest.mark.slow
def test_chunks_are_calls_with_folded_keys_and_one_compile(vae):
    setup, state = vae
    counted, traces = _counting(setup)
    for num, batch in ((10, 4), (8, 4)):  # a partial last chunk, and none
        traces.clear()
        got = sampling.generate(counted, state, KEY, num, {}, batch=batch, progress=False)
        assert traces == [batch], traces  # one trace (one compile) for every chunk
        chunks = math.ceil(num / batch)
        calls = [
            sampling.generate(setup, state, jax.random.fold_in(KEY, i), batch, {}).images
            for i in range(chunks)
        ]
        assert got.images.shape == (num, 16, 16, 1) and got.labels is None
        np.testing.assert_array_equal(got.images, np.concatenate(calls)[:num])
    assert len({im.tobytes() for im in got.images}) == len(got.images)  # chunks differ


def test_one_chunk_is_bit_identical_to_the_unchunked_call(vae):
    setup, state = vae
    family, config = setup.family, setup.config
    # What generate did before chunking: the family's sample of all num images, key as given.
    reference = np.asarray(jax.jit(lambda s, k: family.sample(config, s, k, 10).images)(state, KEY))
    for batch in (None, 10, 256):
        got = sampling.generate(setup, state, KEY, 10, {"temperature": 0.8}, batch=batch)
        again = sampling.generate(setup, state, KEY, 10, {}, batch=batch)
        np.testing.assert_array_equal(again.images, reference)
        assert not np.array_equal(got.images, reference)  # options still reach the family
    chunked = sampling.generate(setup, state, KEY, 10, {}, batch=9, progress=False)
    assert not np.array_equal(chunked.images, reference)  # several chunks: folded keys


@pytest.mark.slow
def test_class_all_labels_are_split_across_chunks(cond_diffusion):
    setup, state, kwargs = cond_diffusion
    num, ncol, label = sampling.class_choice(setup, kwargs, "all", 20)
    assert (num, ncol) == (20, 2)
    counted, traces = _counting(setup)
    got = sampling.generate(
        counted, state, KEY, num, {**kwargs, "label": label}, batch=8, progress=False
    )
    assert traces == [8]
    np.testing.assert_array_equal(got.labels, np.repeat(np.arange(10), 2))
    # Chunk i is the call with its labels (the last one padded with its last label).
    padded = np.concatenate([label, np.full(4, label[-1])])
    calls = [
        sampling.generate(
            setup,
            state,
            jax.random.fold_in(KEY, i),
            8,
            {**kwargs, "label": padded[8 * i : 8 * i + 8]},
        ).images
        for i in range(3)
    ]
    np.testing.assert_array_equal(got.images, np.concatenate(calls)[:20])

    # Classes in turn (no label given): they restart in each chunk, and the labels returned
    # are the ones used.
    turn = sampling.generate(setup, state, KEY, 10, kwargs, batch=8, progress=False)
    np.testing.assert_array_equal(turn.labels, [0, 1, 2, 3, 4, 5, 6, 7, 0, 1])
    second = sampling.generate(setup, state, jax.random.fold_in(KEY, 1), 8, kwargs)
    np.testing.assert_array_equal(turn.images[8:], second.images[:2])
    np.testing.assert_array_equal(second.labels, np.arange(8))
    with pytest.raises(ConfigError, match="19 label rows were given for 20 images"):
        sampling.generate(setup, state, KEY, 20, {**kwargs, "label": label[:19]}, batch=8)


def test_bad_batch_is_refused(vae):
    setup, state = vae
    for batch in (0, -3):
        with pytest.raises(ConfigError, match=f"batch={batch} must be >= 1"):
            sampling.generate(setup, state, KEY, 4, {}, batch=batch)


def test_nonfinite_option_values_are_refused_before_anything_runs(vae, cond_diffusion):
    def restore(workdir):
        raise AssertionError("restored a workdir option before checking the float options")

    setup = cond_diffusion[0]
    for value in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ConfigError, match=rf"--scale={value} is not a finite number"):
            sampling.prepare(
                setup, {"guidance": "cfg", "scale": value, "classifier-workdir": "x"}, restore
            )
    with pytest.raises(ConfigError, match=r"--temperature=inf is not a finite number"):
        sampling.prepare(vae[0], {"temperature": float("inf")}, None)
    assert sampling.prepare(vae[0], {"temperature": 0.5}, None) == {"temperature": 0.5}


def test_nan_parameters_give_images_that_are_counted_as_nonfinite(vae):
    setup, state = vae

    def nan(x):
        return jnp.full_like(x, jnp.nan) if jnp.issubdtype(x.dtype, jnp.floating) else x

    broken = dataclasses.replace(state, players=jax.tree.map(nan, state.players))
    got = sampling.generate(setup, broken, KEY, 6, {}, batch=4, progress=False)
    assert sampling.count_nonfinite(got.images) == 6
    ok = sampling.generate(setup, state, KEY, 6, {}, batch=4, progress=False)
    assert sampling.count_nonfinite(ok.images) == 0
    one = np.array(ok.images)
    one[2, 3, 4, 0] = np.inf
    assert sampling.count_nonfinite(one) == 1


def test_writes_refuse_folders_and_leave_no_temporary_file(tmp_path):
    grid = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype(np.float32)
    folder = tmp_path / "folder"
    folder.mkdir()
    assert "is a folder" in files.unwritable_reason(str(folder))
    (tmp_path / "file").write_text("x")
    reason = files.unwritable_reason(str(tmp_path / "file" / "sub" / "a.png"))
    assert "is a file, not a folder" in reason
    assert files.unwritable_reason(str(tmp_path / "new" / "sub" / "a.png")) is None
    assert not (tmp_path / "new").exists()  # asking creates nothing

    with pytest.raises(IsADirectoryError):
        images_lib.save_grid(grid, str(folder))
    assert sorted(os.listdir(tmp_path)) == ["file", "folder"] and not os.listdir(folder)
    with pytest.raises(RuntimeError), files.atomic_path(str(tmp_path / "a.npz")) as t:
        open(t, "wb").close()
        raise RuntimeError("the write failed")
    assert sorted(os.listdir(tmp_path)) == ["file", "folder"]
    path = images_lib.save_grid(grid, str(tmp_path / "new" / "grid.png"))
    assert os.listdir(tmp_path / "new") == ["grid.png"] and path.endswith("grid.png")


def test_sample_defaults_fill_the_options_the_command_line_leaves_out(cond_diffusion):
    setup = cond_diffusion[0]
    assert setup.config.sample_defaults.to_dict() == {"guidance": "cfg", "scale": 2.0}
    got = sampling.prepare(setup, {}, None)
    assert (got["guidance"], got["scale"], got["steps"]) == ("cfg", 2.0, 0)
    got = sampling.prepare(setup, {"scale": 4.0}, None)
    assert (got["guidance"], got["scale"]) == ("cfg", 4.0)
    got = sampling.prepare(setup, {"guidance": "none"}, None)
    assert got["guidance"] == "none" and "scale" not in got
    plain = setup.config.copy_and_resolve_references()
    plain.sample_defaults = ml_collections.ConfigDict()
    got = sampling.prepare(dataclasses.replace(setup, config=plain), {}, None)
    assert got["guidance"] == "none" and "scale" not in got


def test_training_grids_draw_what_sample_py_draws_by_default(cond_diffusion, tmp_path):
    setup, state, _ = cond_diffusion
    grids = loop._SampleGrids(setup, str(tmp_path))
    num = setup.config.train.sample_num
    want = sampling.generate(setup, state, KEY, num, sampling.prepare(setup, {}, None))
    np.testing.assert_array_equal(np.asarray(grids.sample_fn(state, KEY)), want.images)


@pytest.mark.parametrize(
    "key, value, match",
    [
        (
            "temperature",
            1.0,
            r"sample_defaults.temperature is not a sampling option of the "
            r"'diffusion' family; its options are \['eta', 'guidance'",
        ),
        ("classifier_workdir", "runs/clf", r"sample_defaults.classifier_workdir is not a sampling"),
        ("steps", 2.5, r"sample_defaults.steps=2.5 is not of --steps's type \(int\)"),
        ("steps", -1, r"sample_defaults.steps=-1 must be >= 0"),
        ("guidance", "classifier", r"sample_defaults.guidance='classifier' must be 'none' or"),
        ("num_classes", 0, r"sample_defaults.guidance='cfg' needs a conditional model"),
    ],
)
def test_bad_sample_defaults_are_refused_by_name(key, value, match):
    config = _tiny("diffusion.py", "mnist,tiny,cond")
    if key == "num_classes":
        config.model.num_classes = value
    else:
        config.sample_defaults[key] = value
    with pytest.raises(ConfigError, match=match):
        validate(config, 1, need_data=False)


def test_every_guidance_scale_flag_reads_a_number():
    # --scale=2 read as the string "2" once broke GPT's and MaskGIT's guidance in sample.py and
    # jaxgen.eval, with a TypeError deep inside the sampler.
    from absl import flags

    from jaxgen.engine import cli
    from jaxgen.families import SampleOption, get_family

    for name in ("gpt", "maskgit", "diffusion"):
        opt = {o.name: o for o in get_family(name).sample_options}["scale"]
        values = flags.FlagValues()
        cli._DEFINE[opt.kind](opt.name, opt.default, opt.help, flag_values=values)
        values(["sample.py", "--scale=2"])
        assert isinstance(values["scale"].value, float) and values["scale"].value == 2.0, name
    with pytest.raises(TypeError, match="needs type"):
        SampleOption("strength", None, "an option whose flag type would be a guess")
