"""Runs that never lose good work: non-finite steps, bad data, eval settings checked up front,
one writer per workdir, the stored config on resume, stops at every phase, no duplicate rows."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from support import ROOT, load_config

from jaxgen.data import DataError, load_splits
from jaxgen.engine import evals, loop, signals
from jaxgen.engine.checkpoint import Checkpointer
from jaxgen.engine.metrics import read_metrics
from jaxgen.errors import ConfigError, TrainingError


def _vae(**train):
    config = load_config(ROOT / "configs" / "vae.py", "mnist,tiny")
    config.data.source = "shapes"
    config.data.image_shape = (16, 16, 1)
    config.data.num_train, config.data.num_test = 256, 64
    config.train.update(train)
    return config


def _finite(tree) -> bool:
    return all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(tree))


def _strict_rows(workdir):
    def refuse(token):
        raise ValueError(f"non-strict JSON token {token}")

    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line, parse_constant=refuse) for line in f]


@pytest.mark.slow
def test_a_diverging_run_stops_naming_the_step_and_keeps_the_last_finite_checkpoint(tmp_path):
    workdir = str(tmp_path / "run")
    config = _vae(num_steps=12, checkpoint_every=2, log_every=1, keep_checkpoints=2)
    loop.train_and_evaluate(config, workdir, stop_at_step=2)  # a good checkpoint at step 2
    config.optimizer.learning_rate = 1e6
    with pytest.raises(TrainingError, match=r"at step \d+ the train metric\(s\) .*NaN or Inf"):
        loop.train_and_evaluate(config, workdir, allow_config_change=True)
    checkpoints = Checkpointer(workdir)
    steps = checkpoints.all_steps()
    setup = loop.make_setup(config)
    for step in steps:  # every checkpoint kept is finite: none was written from a NaN state
        assert _finite(checkpoints.restore(setup.abstract_with_shardings(), step)), step
    checkpoints.close()
    _strict_rows(workdir)  # NaN metrics were written as null, listed under "nonfinite"
    assert any("nonfinite" in row for row in read_metrics(workdir))


@pytest.mark.slow
def test_skip_policy_skips_non_finite_updates_and_counts_them(tmp_path):
    config = _vae(num_steps=6, nonfinite="skip")
    config.optimizer.learning_rate = 1e6
    state, summary = loop.train_and_evaluate(config, str(tmp_path / "run"))
    assert summary["skipped_nonfinite"] > 0 and int(state.step) == 6
    assert _finite(state.players)
    rows = [r for r in _strict_rows(str(tmp_path / "run")) if r["split"] == "train"]
    assert sum(r["skipped_nonfinite"] for r in rows) == summary["skipped_nonfinite"]


def test_labels_outside_the_models_classes_are_refused(tmp_path):
    config = load_config(ROOT / "configs" / "classifier.py", "mnist,tiny")
    config.data.source, config.data.image_shape = "shapes", (16, 16, 1)
    config.model.num_classes = 2  # the shapes have labels 0, 1, 2
    with pytest.raises(ConfigError, match=r"labels go up to 2 but the model has 2 classes"):
        loop.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("bad", ["negative labels", "nan pixels"])
def test_bad_values_in_the_data_files_are_named(bad, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((20, 16, 16)).astype(np.float32)
    y = np.arange(20) % 3
    if bad == "nan pixels":
        x[3, 4, 5] = np.nan
    else:
        y[7] = -1
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    config = _vae()
    config.data.source, config.data.path = "npz", str(tmp_path / "d.npz")
    message = "1 labels are negative" if bad == "negative labels" else "1 pixel values are NaN"
    with pytest.raises(DataError, match=message):
        load_splits(config.data)


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("final_num_examples", 8, r"eval.final_num_examples=8 is fewer than one eval batch"),
        ("num_examples", 8, r"eval.num_examples=8 is fewer than one eval batch"),  # eval_every 2
        ("batch_size", 128, r"eval.batch_size=128 is larger than the test split \(64 examples\)"),
    ],
)
def test_eval_settings_are_checked_before_training(key, value, message, tmp_path):
    config = _vae(eval_every=2)  # periodic evals on: their eval.num_examples is checked too
    config.eval[key] = value
    with pytest.raises(ConfigError, match=message):
        loop.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_one_writer_per_workdir_and_stale_locks_are_taken_over(tmp_path, capsys):
    workdir = tmp_path / "run"
    workdir.mkdir()
    lock = workdir / ".lock"
    lock.write_text(json.dumps({"host": "another-host", "pid": os.getpid()}))
    with pytest.raises(ConfigError, match=r"is in use by pid \d+ on another-host"):
        loop.train_and_evaluate(_vae(), str(workdir))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid}))
    loop.train_and_evaluate(_vae(), str(workdir))
    assert "took over a stale lock" in capsys.readouterr().out
    assert not lock.exists()  # released at the end


@pytest.mark.slow
def test_resume_with_a_different_config_stops_and_lists_the_differences(tmp_path):
    workdir = str(tmp_path / "run")
    loop.train_and_evaluate(_vae(), workdir, stop_at_step=2)
    changed = _vae(num_steps=6)  # more steps: allowed
    changed.seed = 3
    changed.model.latent_dim = 8
    with pytest.raises(ConfigError, match=r"model.latent_dim: 4 -> 8; seed: 0 -> 3") as e:
        loop.train_and_evaluate(changed, workdir)
    assert "num_steps" not in str(e.value)
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["seed"] == 0  # not overwritten
    changed.model.latent_dim = 4
    state, _ = loop.train_and_evaluate(changed, workdir, allow_config_change=True)
    assert int(state.step) == 6


def test_a_workdir_that_is_a_file_is_one_clear_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match=r"is a file, not a folder"):
        loop.train_and_evaluate(_vae(), str(tmp_path / "f"))


@pytest.mark.slow
def test_rows_a_killed_run_wrote_after_its_checkpoint_are_dropped_on_resume(tmp_path):
    workdir = str(tmp_path / "run")
    config = _vae(num_steps=6, log_every=1, checkpoint_every=0)
    loop.train_and_evaluate(config, workdir, stop_at_step=2)
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:  # what kill -9 leaves
        f.write(json.dumps({"step": 3, "split": "train", "loss": 1.0}) + "\n")
        f.write('{"step": 4, "spl')
    loop.train_and_evaluate(config, workdir)
    steps = [r["step"] for r in read_metrics(workdir) if r["split"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_a_stop_during_start_up_or_the_final_eval_is_clean(tmp_path, monkeypatch):
    workdir = str(tmp_path / "run")
    real_load = loop.load_splits

    def load_then_stop(data):
        signals.STOP.set()  # SIGTERM arrives while the run is starting
        return real_load(data)

    monkeypatch.setattr(loop, "load_splits", load_then_stop)
    _, summary = loop.train_and_evaluate(_vae(), workdir)
    assert summary["stopped_early"] and Checkpointer(workdir).latest_step() is None
    monkeypatch.setattr(loop, "load_splits", real_load)

    real_batches = evals.eval_batches

    def batches_then_stop(*args, **kwargs):
        for i, batch in enumerate(real_batches(*args, **kwargs)):
            if i == 1:
                signals.STOP.set()  # SIGTERM arrives during the final eval
            yield batch

    monkeypatch.setattr(evals, "eval_batches", batches_then_stop)
    config = _vae()
    _, summary = loop.train_and_evaluate(config, workdir)
    assert summary["stopped_early"] and "eval" not in summary
    assert Checkpointer(workdir).latest_step() == config.train.num_steps
    monkeypatch.setattr(evals, "eval_batches", real_batches)
    _, summary = loop.train_and_evaluate(config, workdir)  # runs the final eval it missed
    assert not summary["stopped_early"] and summary["eval"]["examples"] > 0


@pytest.mark.slow
def test_prefetching_batches_changes_nothing(tmp_path):
    a, _ = loop.train_and_evaluate(_vae(prefetch=0), str(tmp_path / "a"))
    b, _ = loop.train_and_evaluate(_vae(prefetch=3), str(tmp_path / "b"))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.cli
def test_train_py_turns_bad_overrides_into_one_line(tmp_path):
    for override, message in [
        ("--config.train.nun_steps=3", "unknown config key in an override: 'nun_steps'"),
        ("--config.seed=-1", "seed=-1 must be an integer in [0, 4294967295]"),
    ]:
        result = subprocess.run(
            [sys.executable, "train.py", "--config=configs/vae.py:mnist,tiny"]
            + [f"--workdir={tmp_path / 'r'}", override, "--config.data.source=shapes"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
        assert len(result.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "r").exists()
