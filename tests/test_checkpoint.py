"""Checkpoint integrity: checksums sealed after each save and checked on restore, the fallback to
the newest good step, one-line errors, mismatched shapes, rotation of the checksum files and
storage errors while saving. (An unfinished save is covered in test_engine.py.)"""

import contextlib
import os
import resource
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from support import ROOT, load_config

from jaxgen.engine import loop
from jaxgen.engine.checkpoint import Checkpointer, CheckpointError, CheckpointMismatchError


def _tree(step, n=4096):
    """A small state whose values depend on the step (random, so the data file does not
    compress to nothing)."""
    rng = np.random.default_rng(step)
    return {
        "step": jnp.int32(step),
        "params": {"w": jnp.asarray(rng.normal(size=(n,)), jnp.float32)},
        "opt": {"mu": jnp.asarray(rng.normal(size=(n // 4, 4)), jnp.float32)},
    }


def _abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def _save_steps(workdir, steps, keep=3, **kw):
    checkpoints = Checkpointer(workdir, keep=keep, **kw)
    for step in steps:
        assert checkpoints.save(step, _tree(step))
    checkpoints.close()


def _flip_largest_file(step_dir, count=64):
    """Invert ``count`` bytes in the middle of the largest file of a step: same length."""
    files = [os.path.join(root, f) for root, _, names in os.walk(step_dir) for f in names]
    largest = max(files, key=os.path.getsize)
    with open(largest, "r+b") as f:
        data = bytearray(f.read())
        mid = len(data) // 2
        data[mid : mid + count] = bytes(b ^ 0xFF for b in data[mid : mid + count])
        f.seek(0)
        f.write(data)
    return largest


def _assert_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _one_line(message):
    assert "\n" not in message and len(message) < 400, message
    assert "tensorstore" not in message.lower() and "Traceback" not in message, message


def test_a_flipped_byte_falls_back_to_the_previous_step_in_one_line(tmp_path):
    workdir = str(tmp_path)
    _save_steps(workdir, [1, 2, 3])
    latest = os.path.join(workdir, "checkpoints", "3")
    flipped = _flip_largest_file(latest)
    assert os.sep + "d" + os.sep in flipped  # an OCDBT data file, not metadata

    notes = []
    checkpoints = Checkpointer(workdir, report=notes.append)
    state = checkpoints.restore(_abstract(_tree(3)))
    assert checkpoints.restored_step == 2 and checkpoints.notes == notes
    _assert_equal(state, _tree(2))
    assert len(notes) == 1, notes
    _one_line(notes[0])
    assert notes[0].startswith(f"checkpoint {latest} is corrupt: default/")
    assert "sha256" in notes[0] and notes[0].endswith("restored step 2 instead")

    # Training goes on: the next save of step 3 moves the bad folder aside first.
    assert checkpoints.save(3, _tree(30))
    checkpoints.close()
    assert os.path.isdir(latest + ".corrupt") and "moved the bad checkpoint" in notes[-1]
    again = Checkpointer(workdir, report=notes.append)
    _assert_equal(again.restore(_abstract(_tree(3))), _tree(30))
    assert again.restored_step == 3 and again.notes == []
    again.close()


def test_every_step_corrupt_is_one_line_error(tmp_path):
    workdir = str(tmp_path)
    _save_steps(workdir, [1, 2])
    for step in (1, 2):
        _flip_largest_file(os.path.join(workdir, "checkpoints", str(step)))
    checkpoints = Checkpointer(workdir)
    with pytest.raises(CheckpointError) as info:
        checkpoints.restore(_abstract(_tree(2)))
    message = str(info.value)
    _one_line(message)
    assert "no usable checkpoint in" in message and "step 2 is corrupt" in message
    assert "step 1 is corrupt" in message
    with pytest.raises(CheckpointError, match=r"checkpoint .*/1 is corrupt") as info:
        checkpoints.restore(_abstract(_tree(1)), step=1)  # an explicit step: no fallback
    _one_line(str(info.value))
    checkpoints.close()


def test_an_unsealed_step_is_used_when_finite_and_skipped_when_not(tmp_path):
    # The process died between orbax's commit and the seal: no checksum file.
    workdir = str(tmp_path)
    _save_steps(workdir, [1, 2])
    os.remove(os.path.join(workdir, "checkpoints", "checksums", "2.json"))
    checkpoints = Checkpointer(workdir, report=lambda line: None)
    _assert_equal(checkpoints.restore(_abstract(_tree(2))), _tree(2))
    assert checkpoints.restored_step == 2
    assert len(checkpoints.notes) == 1 and "has no checksum" in checkpoints.notes[0]
    assert "values are finite" in checkpoints.notes[0]
    checkpoints.close()

    nan = jax.tree.map(lambda x: x * jnp.nan if x.dtype == jnp.float32 else x, _tree(3))
    checkpoints = Checkpointer(workdir, report=lambda line: None)
    checkpoints.save(3, nan)
    checkpoints.close()
    os.remove(os.path.join(workdir, "checkpoints", "checksums", "3.json"))
    checkpoints = Checkpointer(workdir, report=lambda line: None)
    _assert_equal(checkpoints.restore(_abstract(_tree(3))), _tree(2))
    assert checkpoints.restored_step == 2
    assert "2 of 2 arrays hold NaN or Inf; restored step 2" in checkpoints.notes[0]
    checkpoints.close()


def test_mismatched_shapes_are_one_line_without_a_fallback(tmp_path):
    workdir = str(tmp_path)
    _save_steps(workdir, [1, 2])
    checkpoints = Checkpointer(workdir)
    wider = _abstract(_tree(2, n=8192))
    with pytest.raises(CheckpointMismatchError) as info:
        checkpoints.restore(wider)
    message = str(info.value)
    _one_line(message)
    assert "checkpoints/2 does not fit this model (2 arrays differ" in message
    assert "e.g. opt.mu: stored (1024, 4), expected (2048, 4))" in message
    assert "earlier" not in message and "fall" not in message and "orbax" not in message
    assert "params.w: stored (4096,), expected (8192,)" in info.value.differences

    other = _abstract(_tree(2))
    other["params"]["extra"] = jax.ShapeDtypeStruct((3,), jnp.float32)
    with pytest.raises(CheckpointMismatchError, match="params.extra is not in the checkpoint"):
        checkpoints.restore(other)
    checkpoints.close()


def test_checksum_files_follow_rotation(tmp_path):
    workdir = str(tmp_path)
    sums = os.path.join(workdir, "checkpoints", "checksums")
    _save_steps(workdir, [1, 2, 3, 4], keep=2)
    assert sorted(os.listdir(sums)) == ["3.json", "4.json"]
    assert Checkpointer(workdir).all_steps() == [3, 4]
    # A stale checksum (a step rotated out before its file was removed) is ignored, and a
    # new save of that step number replaces it.
    with open(os.path.join(sums, "5.json"), "w") as f:
        f.write('{"step": 5, "files": {"gone": {"size": 1, "sha256": "0"}}}')
    checkpoints = Checkpointer(workdir, keep=2)
    _assert_equal(checkpoints.restore(_abstract(_tree(4))), _tree(4))
    assert checkpoints.notes == []
    checkpoints.save(5, _tree(5))
    checkpoints.close()
    assert sorted(os.listdir(sums)) == ["4.json", "5.json"]
    checkpoints = Checkpointer(workdir)
    assert checkpoints.verify(5) is None and checkpoints.verify(4) is None
    checkpoints.close()


@contextlib.contextmanager
def _file_size_limit(limit):
    """Writes past ``limit`` bytes fail with EFBIG, as they would on a full disk."""
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


def test_a_storage_error_while_saving_is_one_line_and_keeps_the_saved_steps(tmp_path):
    workdir = str(tmp_path)
    checkpoints = Checkpointer(workdir, keep=1)
    checkpoints.save(1, _tree(1))
    checkpoints.wait()
    with _file_size_limit(64 << 10), pytest.raises(CheckpointError) as info:
        checkpoints.save(2, _tree(2, n=1 << 16))  # 256 KB of data: the write fails
        checkpoints.wait()
    message = str(info.value)
    _one_line(message)
    path = os.path.join(workdir, "checkpoints", "2")
    assert message.startswith(f"cannot write checkpoint {path}: File too large (EFBIG)")
    assert message.endswith("the steps already saved stay: [1]")
    checkpoints.close()
    checkpoints = Checkpointer(workdir)
    _assert_equal(checkpoints.restore(_abstract(_tree(1))), _tree(1))
    assert checkpoints.restored_step == 1 and checkpoints.notes == []
    checkpoints.close()


@pytest.mark.slow
def test_training_resumes_from_the_last_good_step_after_a_flipped_byte(tmp_path, capsys):
    config = load_config(ROOT / "configs" / "vae.py", "mnist,tiny")
    config.data.source = "shapes"
    config.data.image_shape = (16, 16, 1)
    config.data.num_train, config.data.num_test = 256, 64
    config.train.num_steps = 6
    workdir = str(tmp_path / "run")
    loop.train_and_evaluate(config, workdir, stop_at_step=4)  # checkpoints at steps 2 and 4
    setup = loop.make_setup(config)
    checkpoints = Checkpointer(workdir)
    assert checkpoints.all_steps() == [2, 4]
    saved_at_2 = checkpoints.restore(setup.abstract_with_shardings(), step=2)
    checkpoints.close()
    latest = os.path.join(workdir, "checkpoints", "4")
    _flip_largest_file(latest)

    notes = []
    checkpoints = Checkpointer(workdir, report=notes.append)
    _assert_equal(checkpoints.restore(setup.abstract_with_shardings()), saved_at_2)
    checkpoints.close()
    assert len(notes) == 1 and notes[0].startswith(f"checkpoint {latest} is corrupt")
    capsys.readouterr()

    state, summary = loop.train_and_evaluate(config, workdir)
    assert int(state.step) == 6 and not summary["stopped_early"]
    out = capsys.readouterr().out
    assert f"checkpoint {latest} is corrupt" in out and "restored step 2 instead" in out
    assert os.path.isdir(latest + ".corrupt")  # set aside, so step 4 was saved again
    checkpoints = Checkpointer(workdir)
    assert checkpoints.all_steps() == [2, 4, 6]
    assert all(checkpoints.verify(s) is None for s in (2, 4, 6))
    # Without its checksum (a crash before the seal) the sharded step 6 is checked for
    # finite values instead, and used.
    os.remove(checkpoints.checksum_path(6))
    _assert_equal(checkpoints.restore(setup.abstract_with_shardings()), state)
    assert checkpoints.restored_step == 6 and "values are finite" in checkpoints.notes[0]
    checkpoints.close()
