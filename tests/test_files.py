"""jaxgen.files: a write either lands whole or leaves the old file as it was, with no temporary
file behind."""

import os

import numpy as np
import pytest

from jaxgen import files


def test_a_write_that_raises_midway_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("old\n")
    with pytest.raises(RuntimeError, match="disk full"), files.atomic_write(str(path)) as f:
        f.write("new, half")
        f.flush()
        raise RuntimeError("disk full")
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["metrics.jsonl"]

    with pytest.raises(RuntimeError), files.atomic_path(str(path)) as tmp:
        with open(tmp, "w") as f:
            f.write("new, half")
        raise RuntimeError("the writer failed")
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["metrics.jsonl"]


def test_a_whole_write_replaces_the_file_and_creates_its_folder(tmp_path):
    path = tmp_path / "new" / "sub" / "arrays.npz"
    with files.atomic_write(str(path), "wb") as f:
        np.savez(f, x=np.arange(3))
    np.testing.assert_array_equal(np.load(path)["x"], np.arange(3))
    with files.atomic_write(str(path), "wb") as f:
        np.savez(f, x=np.arange(4))
    np.testing.assert_array_equal(np.load(path)["x"], np.arange(4))
    assert os.listdir(path.parent) == ["arrays.npz"]


def test_temporary_names_keep_the_extension_are_unique_and_map_back(tmp_path):
    path = str(tmp_path / "grid.png")
    with files.atomic_path(path) as a, files.atomic_path(path) as b:
        assert a != b  # two writers of one target never share a temporary file
        assert a.endswith(".png") and os.path.dirname(a) == str(tmp_path)
        assert files.target_of(a) == path == files.target_of(b)
        for tmp in (a, b):
            with open(tmp, "w") as f:
                f.write(tmp)
    assert files.target_of(path) == path
    assert os.listdir(tmp_path) == ["grid.png"]


def test_only_write_modes():
    with pytest.raises(ValueError, match="mode='a'"), files.atomic_write("x", "a"):
        pass
