"""Data sources. Every source yields ``uint8 [N, H, W, C]`` images and ``int32 [N]`` labels.

Sources (``config.data.source``):
- ``idx``: a folder with MNIST-layout IDX files (``train-images-idx3-ubyte[.gz]``,
  ``train-labels-idx1-ubyte[.gz]``, ``t10k-...``), e.g. Debian's Fashion-MNIST.
- ``npz``: one ``.npz`` with ``x_train, y_train, x_test, y_test``.
- ``image_folder``: ``<path>/<split>/<class>/*.png`` (``split`` in train/test).
- ``tfds``: a TFDS data set already prepared in ``data_dir``, read with
  ``tfds.data_source`` (random access, no TensorFlow, no download).
- ``shapes`` / ``gaussian_mixture``: procedural data for tests and smoke runs.

On top of any source, ``data.compose`` and ``data.captions`` derive two-image canvases and
captions (``jaxgen.data.derived``).

Nothing here downloads. A missing or malformed source raises ``DataError`` naming the path and
what was expected.
"""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SOURCES = ("idx", "npz", "image_folder", "tfds", "shapes", "gaussian_mixture")


class DataError(ValueError):
    """A data source is missing or malformed."""


@dataclass(frozen=True)
class Split:
    """One split of a data set, with random access by example index.

    ``get(indices)`` returns ``{"image": uint8 [n, H, W, C], "label": int32 [n]}``.
    """

    num_examples: int
    image_shape: tuple[int, int, int]
    get: Callable[[np.ndarray], dict[str, np.ndarray]]
    max_label: int | None = None  # the largest label, where known without reading everything

    @classmethod
    def from_arrays(cls, images: np.ndarray, labels: np.ndarray, where: str = "") -> Split:
        images = np.ascontiguousarray(images)
        labels = np.asarray(labels, np.int32)
        if len(labels) != len(images):
            raise DataError(f"{where}: {len(images)} images but {len(labels)} labels")
        if len(labels) and labels.min() < 0:
            raise DataError(
                f"{where}: {int(np.sum(labels < 0))} labels are negative (e.g. "
                f"{int(labels.min())}); labels must be class indices 0, 1, ..."
            )

        def get(indices):
            return {"image": images[indices], "label": labels[indices]}

        top = int(labels.max()) if len(labels) else None
        return cls(len(images), tuple(images.shape[1:]), get, top)


def _as_nhwc_uint8(images: np.ndarray, where: str) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise DataError(
            f"{where}: images have shape {images.shape}; expected [N, H, W] or [N, H, W, C] "
            "with C in (1, 3)"
        )
    if images.dtype != np.uint8:
        if np.issubdtype(images.dtype, np.floating) and not np.all(np.isfinite(images)):
            raise DataError(
                f"{where}: {int(np.sum(~np.isfinite(images)))} pixel values are NaN or infinite"
            )
        if np.issubdtype(images.dtype, np.floating) and images.min() >= 0 and images.max() <= 1:
            images = np.round(images * 255)
        images = np.clip(images, 0, 255).astype(np.uint8)
    return images


# How to get each named data set onto a machine without internet at run time: the missing-data
# error quotes it (``jaxgen.engine.config.validate``).
HOW_TO_GET = {
    "mnist": "MNIST as one .npz with x_train, y_train, x_test, y_test (the layout of the mnist.npz "
    "that Keras distributes, and of ../shared/data/mnist.npz beside this project's checkout); "
    "put it anywhere and set JAXGEN_MNIST=/path/to/mnist.npz, or pass "
    "--config.data.path=/path/to/mnist.npz",
    "mnist_pairs": "the MNIST .npz its pairs are composed from: set JAXGEN_MNIST=/path/to/"
    "mnist.npz or pass --config.data.path=/path/to/mnist.npz",
    "fashion_mnist": "Fashion-MNIST's four IDX files: apt-get install dataset-fashion-mnist "
    "(Debian and Ubuntu) puts them in /usr/share/datasets/fashion-mnist, the default; elsewhere "
    "pass --config.data.path=<the folder that holds them>",
}


# ----------------------------------------------------------------------------------- IDX files
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str) -> np.ndarray:
    """Read one IDX file (gzipped or not) into a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read IDX file {path}: {e}") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {data[:4]!r})")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    body = data[4 + 4 * ndim :]
    if len(body) != expected:
        raise DataError(
            f"{path}: header says shape {dims} ({expected} bytes) but the file holds "
            f"{len(body)} bytes; the file is truncated or corrupt"
        )
    return np.frombuffer(body, dtype).reshape(dims)


def _find_idx(folder: str, stem: str) -> str:
    for name in (stem, stem + ".gz"):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            return path
    raise DataError(
        f"IDX source {folder!r}: missing {stem} (or {stem}.gz); the folder must hold "
        "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
        "t10k-labels-idx1-ubyte (MNIST layout). For Fashion-MNIST on Debian: "
        "apt-get install dataset-fashion-mnist (files in /usr/share/datasets/fashion-mnist)"
    )


def _load_idx(path: str, split: str) -> Split:
    if not os.path.isdir(path):
        raise DataError(
            f"IDX source: data.path={path!r} is not a folder; expected a folder with the four "
            "MNIST-layout IDX files (e.g. /usr/share/datasets/fashion-mnist from Debian's "
            "dataset-fashion-mnist package)"
        )
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(_find_idx(path, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find_idx(path, f"{prefix}-labels-idx1-ubyte"))
    if len(images) != len(labels):
        raise DataError(f"{path}: {len(images)} {prefix} images but {len(labels)} labels")
    return Split.from_arrays(_as_nhwc_uint8(images, path), labels, path)


# ----------------------------------------------------------------------------------- npz
def _load_npz(path: str, split: str) -> Split:
    if not os.path.isfile(path):
        raise DataError(
            f"npz source: data.path={path!r} does not exist; expected a .npz file with arrays "
            "x_train, y_train, x_test, y_test (e.g. ../shared/data/mnist.npz)"
        )
    try:
        with np.load(path) as f:
            keys = set(f.files)
            xk, yk = f"x_{split}", f"y_{split}"
            if xk not in keys or yk not in keys:
                raise DataError(f"{path}: has arrays {sorted(keys)}; expected {xk!r} and {yk!r}")
            images, labels = f[xk], f[yk]
    except (OSError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"cannot read npz file {path}: {e}") from e
    if len(images) != len(labels):
        raise DataError(f"{path}: {len(images)} {split} images but {len(labels)} labels")
    return Split.from_arrays(_as_nhwc_uint8(images, path), labels, path)


# ----------------------------------------------------------------------------------- folders
_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def _load_image_folder(path: str, split: str, channels: int) -> Split:
    from PIL import Image

    root = os.path.join(path, split)
    if not os.path.isdir(root):
        raise DataError(
            f"image_folder source: {root!r} is not a folder; expected "
            f"{path}/{{train,test}}/<class name>/<images>"
        )
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not classes:
        raise DataError(f"image_folder source: {root!r} has no class subfolders")
    images, labels, shape = [], [], None
    mode = "L" if channels == 1 else "RGB"
    for label, cls in enumerate(classes):
        for name in sorted(os.listdir(os.path.join(root, cls))):
            if not name.lower().endswith(_IMAGE_EXTS):
                continue
            file = os.path.join(root, cls, name)
            try:
                with Image.open(file) as im:
                    arr = np.asarray(im.convert(mode))
            except OSError as e:
                raise DataError(f"cannot read image {file}: {e}") from e
            if shape is None:
                shape = arr.shape
            elif arr.shape != shape:
                raise DataError(
                    f"{file}: shape {arr.shape}; every image must match the first one, {shape}"
                )
            images.append(arr)
            labels.append(label)
    if not images:
        raise DataError(f"image_folder source: no images ({', '.join(_IMAGE_EXTS)}) in {root!r}")
    return Split.from_arrays(_as_nhwc_uint8(np.stack(images), root), np.array(labels), root)


# ----------------------------------------------------------------------------------- tfds
def _load_tfds(name: str, data_dir: str, split: str) -> Split:
    if not name:
        raise DataError("tfds source: data.name is empty; expected a TFDS name such as 'mnist'")
    if not data_dir or not os.path.isdir(data_dir):
        raise DataError(
            f"tfds source: data.path={data_dir!r} is not a folder; expected a TFDS data dir in "
            f"which {name!r} is already prepared (nothing is downloaded at run time)"
        )
    import tensorflow_datasets as tfds

    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as e:  # tfds raises several types for "not prepared"
        raise DataError(
            f"tfds source: cannot open {name!r} split {split!r} in {data_dir!r}: {e}"
        ) from e
    first = np.asarray(source[0]["image"])
    shape = tuple(first.shape if first.ndim == 3 else (*first.shape, 1))

    def get(indices):
        records = source.__getitems__(list(map(int, indices)))
        images = np.stack([np.asarray(r["image"]).reshape(shape) for r in records])
        labels = np.array([int(r.get("label", 0)) for r in records], np.int32)
        return {"image": images.astype(np.uint8), "label": labels}

    return Split(len(source), shape, get)


# ----------------------------------------------------------------------------------- procedural
def make_shapes(num: int, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Grey squares (label 0), discs (1) and crosses (2) at random places and sizes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = np.zeros((num, size, size, 1), np.uint8)
    labels = rng.integers(0, 3, num).astype(np.int32)
    for i in range(num):
        r = rng.integers(size // 6, size // 3 + 1)
        cy, cx = rng.integers(r, size - r, 2)
        if labels[i] == 0:
            mask = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
        elif labels[i] == 1:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        else:
            mask = ((abs(yy - cy) <= r // 3) & (abs(xx - cx) <= r)) | (
                (abs(xx - cx) <= r // 3) & (abs(yy - cy) <= r)
            )
        images[i, ..., 0] = np.where(mask, rng.integers(160, 256), 0)
    return images, labels


def make_gaussian_mixture(
    num: int, modes: int = 8, radius: float = 2.0, std: float = 0.05, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """2-D points from ``modes`` Gaussians on a circle, as float32 ``[N, 2]`` with mode labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, modes, num).astype(np.int32)
    angles = 2 * np.pi * labels / modes
    centres = radius * np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    return (centres + std * rng.standard_normal((num, 2))).astype(np.float32), labels


def _load_procedural(source: str, split: str, size: int, num: int, seed: int) -> Split:
    # Train and test come from different seeds so the test split is held out.
    split_seed = seed * 2 + (split != "train")
    if source == "shapes":
        images, labels = make_shapes(num, size, split_seed)
        return Split.from_arrays(images, labels)
    points, labels = make_gaussian_mixture(num, seed=split_seed)
    # Stored as a 1x1 "image" with two channels would break the uint8 contract, so the points
    # are mapped to [0, 255] over [-3, 3].
    as_uint8 = np.clip(np.round((points + 3.0) / 6.0 * 255.0), 0, 255).astype(np.uint8)
    return Split(num, (1, 1, 2), Split.from_arrays(as_uint8, labels).get)


# ----------------------------------------------------------------------------------- entry
def load_split(data_config, split: str) -> Split:
    """Load ``split`` ('train' or 'test') of the source ``data_config`` describes."""
    source = data_config.source
    if source == "idx":
        result = _load_idx(data_config.path, split)
    elif source == "npz":
        result = _load_npz(data_config.path, split)
    elif source == "image_folder":
        result = _load_image_folder(data_config.path, split, data_config.image_shape[-1])
    elif source == "tfds":
        tfds_split = data_config.train_split if split == "train" else data_config.test_split
        result = _load_tfds(data_config.name, data_config.path, tfds_split)
    elif source in ("shapes", "gaussian_mixture"):
        num = data_config.num_train if split == "train" else data_config.num_test
        result = _load_procedural(source, split, data_config.image_shape[0], num, 0)
    else:
        raise DataError(f"data.source={source!r} is not one of {SOURCES}")
    from jaxgen.data import derived

    compose = data_config.get("compose", "")  # .get: configs saved before the key existed
    if compose:
        if compose not in derived.COMPOSE:
            raise DataError(f"data.compose={compose!r} is not one of {derived.COMPOSE}")
        num = data_config.num_train if split == "train" else data_config.num_test
        held_out = data_config.get("held_out", True)
        result = derived.pairs(result, num, data_config.get("seed", 0), split, held_out)
    expected = tuple(data_config.image_shape)
    if result.image_shape != expected:
        raise DataError(
            f"data source {source!r} at {data_config.get('path', '')!r} gives images of shape "
            f"{result.image_shape} (H, W, C) but data.image_shape={expected}; set "
            f"--config.data.image_shape to the data's shape or use data of shape {expected}"
        )
    if result.num_examples == 0:
        raise DataError(f"data source {source!r}: the {split} split is empty")
    if data_config.get("captions", ""):
        result = derived.captioned(
            result,
            data_config.captions,
            data_config.caption_len,
            data_config.get("seed", 0),
            split,
        )
    return result


def load_splits(data_config) -> tuple[Split, Split]:
    """``(train, test)`` splits."""
    return load_split(data_config, "train"), load_split(data_config, "test")
