"""Data sources and deterministic batching."""

import gzip
import os
import struct

import numpy as np
import pytest
from PIL import Image
from support import REQUIRE_DATA, ROOT, load_config, require_data

from jaxgen.data import DataError, batch_indices, eval_batches, load_splits, train_batch
from jaxgen.data.sources import read_idx

FASHION = "/usr/share/datasets/fashion-mnist"
MNIST_NPZ = ROOT.parent / "shared" / "data" / "mnist.npz"


def test_each_epoch_visits_every_example_once():
    n, b = 50, 8
    seen = np.concatenate([batch_indices(3, k, b, n) for k in range(n * 4 // b)])
    for epoch in range(3):  # the first three whole epochs of the stream
        chunk = seen[epoch * n : (epoch + 1) * n]
        np.testing.assert_array_equal(np.sort(chunk), np.arange(n))
    assert not np.array_equal(seen[:n], seen[n : 2 * n])  # reshuffled each epoch


def test_batches_are_a_pure_function_of_seed_and_step():
    a = batch_indices(0, 17, 16, 1000)
    np.testing.assert_array_equal(a, batch_indices(0, 17, 16, 1000))
    assert not np.array_equal(a, batch_indices(1, 17, 16, 1000))
    assert not np.array_equal(a, batch_indices(0, 18, 16, 1000))


def test_processes_split_the_global_batch():
    whole = batch_indices(5, 9, 24, 100)
    parts = [batch_indices(5, 9, 24, 100, p, 4) for p in range(4)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    with pytest.raises(ValueError, match="not divisible by 5 processes"):
        batch_indices(5, 9, 24, 100, 0, 5)


def _write_idx(path, array, compress):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    data = header + array.astype(np.uint8).tobytes()
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(data)


def _idx_folder(tmp_path, compress=True, n_train=10, n_test=4):
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 6, 6), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        suffix = ".gz" if compress else ""
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", images, compress)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress)
        arrays[prefix] = (images, labels)
    return arrays


def _data_config(source, path, shape=(6, 6, 1)):
    config = load_config(ROOT / "configs" / "vae.py", "mnist,tiny")
    config.data.source, config.data.path, config.data.image_shape = source, str(path), shape
    return config.data


@pytest.mark.parametrize("compress", [True, False])
def test_idx_source_round_trip(tmp_path, compress):
    arrays = _idx_folder(tmp_path, compress)
    train, test = load_splits(_data_config("idx", tmp_path))
    got = train.get(np.arange(10))
    np.testing.assert_array_equal(got["image"][..., 0], arrays["train"][0])
    np.testing.assert_array_equal(got["label"], arrays["train"][1])
    assert got["label"].dtype == np.int32 and got["image"].dtype == np.uint8
    assert test.num_examples == 4


def test_truncated_idx_file_names_the_file(tmp_path):
    _idx_folder(tmp_path, compress=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*truncated"):
        read_idx(str(path))


def test_missing_idx_files_say_what_is_expected(tmp_path):
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte"):
        (tmp_path / "x").mkdir()
        load_splits(_data_config("idx", tmp_path / "x"))
    with pytest.raises(DataError, match="is not a folder"):
        load_splits(_data_config("idx", tmp_path / "missing"))


def test_npz_source_and_its_errors(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (12, 6, 6), dtype=np.uint8)
    np.savez(
        tmp_path / "d.npz", x_train=x, y_train=np.arange(12), x_test=x[:3], y_test=np.arange(3)
    )
    train, test = load_splits(_data_config("npz", tmp_path / "d.npz"))
    np.testing.assert_array_equal(train.get(np.array([4]))["image"][0, ..., 0], x[4])
    np.savez(tmp_path / "bad.npz", x_train=x)
    with pytest.raises(DataError, match="expected 'x_train' and 'y_train'"):
        load_splits(_data_config("npz", tmp_path / "bad.npz"))


def test_wrong_image_shape_is_reported(tmp_path):
    _idx_folder(tmp_path)
    with pytest.raises(DataError, match=r"\(6, 6, 1\).*data.image_shape=\(28, 28, 1\)"):
        load_splits(_data_config("idx", tmp_path, (28, 28, 1)))


def test_image_folder_source(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                im = np.full((6, 6), 10 * i + (cls == "dog") * 100, np.uint8)
                Image.fromarray(im).save(tmp_path / split / cls / f"{i}.png")
    train, test = load_splits(_data_config("image_folder", tmp_path))
    batch = train.get(np.arange(train.num_examples))
    assert train.num_examples == 6 and test.num_examples == 4
    np.testing.assert_array_equal(batch["label"], [0, 0, 0, 1, 1, 1])
    assert batch["image"][4, 0, 0, 0] == 110


def test_tfds_source_without_prepared_data_fails_clearly(tmp_path):
    config = _data_config("tfds", tmp_path)
    config.name = "mnist"
    with pytest.raises(DataError, match="cannot open 'mnist'"):
        load_splits(config)


def test_train_batches_carry_indices_and_eval_batches_cover_the_split(tmp_path):
    _idx_folder(tmp_path, n_train=10, n_test=10)
    train, test = load_splits(_data_config("idx", tmp_path))
    batch = train_batch(train, 0, 3, 4)
    np.testing.assert_array_equal(batch["image"], train.get(batch["index"])["image"])
    evals = list(eval_batches(test, 4))
    assert len(evals) == 2  # 10 examples: two whole batches of 4
    np.testing.assert_array_equal(np.concatenate([b["index"] for b in evals]), np.arange(8))


@pytest.mark.skipif(
    not REQUIRE_DATA and not os.path.exists(FASHION), reason="dataset-fashion-mnist not installed"
)
def test_real_fashion_mnist():
    require_data(FASHION)
    config = load_config(ROOT / "configs" / "vae.py", "fashion_mnist")
    train, test = load_splits(config.data)
    assert (train.num_examples, test.num_examples) == (60_000, 10_000)
    batch = train.get(np.arange(1000))
    assert set(np.unique(batch["label"])) == set(range(10))
    assert batch["image"].shape == (1000, 28, 28, 1) and batch["image"].max() > 200


@pytest.mark.skipif(
    not REQUIRE_DATA and not MNIST_NPZ.exists(), reason="../shared/data/mnist.npz not present"
)
def test_real_mnist_npz():
    require_data(MNIST_NPZ)
    config = load_config(ROOT / "configs" / "vae.py", "mnist")
    train, test = load_splits(config.data)
    assert (train.num_examples, test.num_examples) == (60_000, 10_000)
    images = train.get(np.arange(60_000))["image"].astype(np.float64) / 255
    np.testing.assert_allclose(images.mean(), 0.1307, atol=1e-3)
