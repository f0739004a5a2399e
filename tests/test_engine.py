"""The engine: sharded steps, resume, preemption and checkpoints."""

import json
import os
import re
import shutil

import jax
import numpy as np
import pytest
from support import leaves, run_steps

from jaxgen.engine import loop
from jaxgen.engine.checkpoint import Checkpointer
from jaxgen.engine.metrics import read_metrics
from jaxgen.errors import CheckpointError


@pytest.mark.slow
def test_eight_device_step_equals_one_device_step(tiny_vae_config):
    assert jax.device_count() == 8
    config = tiny_vae_config
    config.model.kind = "conv"
    sharded, m8 = run_steps(config, jax.devices(), 3)
    single, m1 = run_steps(config, jax.devices()[:1], 3)
    # The batch really was split over eight devices.
    assert len(sharded.model.params["decoder"]["Conv_0"]["kernel"].sharding.device_set) == 8
    for a, b in zip(leaves(sharded), leaves(single), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5)


@pytest.mark.slow
def test_stopped_and_resumed_equals_uninterrupted_bit_for_bit(tiny_vae_config, tmp_path):
    config = tiny_vae_config
    config.train.num_steps = 6
    config.train.checkpoint_every = 0  # only the preemption checkpoint
    straight, _ = loop.train_and_evaluate(config, str(tmp_path / "a"))
    first, summary = loop.train_and_evaluate(config, str(tmp_path / "b"), stop_at_step=3)
    assert summary["stopped_early"] and int(first.step) == 3
    assert Checkpointer(str(tmp_path / "b")).all_steps() == [3]
    resumed, summary = loop.train_and_evaluate(config, str(tmp_path / "b"))
    assert not summary["stopped_early"] and int(resumed.step) == 6
    for a, b in zip(leaves(straight), leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    rows = read_metrics(str(tmp_path / "b"))
    assert [r["step"] for r in rows if r["split"] == "train"] == [2, 3, 4, 6]
    assert {"loss", "elbo", "kl", "examples_per_s", "time"} <= set(rows[0])
    assert any(r["split"] == "eval" and "nll_iwae" in r for r in rows)


def test_a_corrupt_checkpoint_gives_a_clear_error(tiny_vae_config, tmp_path):
    """Every kept step corrupt: one clear line (one corrupt step falls back to an earlier one:
    tests/test_checkpoint.py)."""
    config = tiny_vae_config
    workdir = str(tmp_path / "run")
    loop.train_and_evaluate(config, workdir)
    ckdir = os.path.join(workdir, "checkpoints")
    for step in Checkpointer(workdir).all_steps():
        for root, _, files in os.walk(os.path.join(ckdir, str(step))):
            for name in files:
                if "manifest" in name or name.endswith(".data") or "d" == root[-1:]:
                    with open(os.path.join(root, name), "wb") as f:
                        f.write(b"garbage")
    with pytest.raises(CheckpointError, match=rf"no usable checkpoint in {re.escape(ckdir)}"):
        loop.restore_for_inference(workdir)


@pytest.mark.slow
def test_an_unfinished_save_is_ignored_on_resume(tiny_vae_config, tmp_path):
    config = tiny_vae_config
    workdir = str(tmp_path / "run")
    loop.train_and_evaluate(config, workdir, stop_at_step=2)
    # A crash during a later save leaves only orbax's temporary folder behind.
    ckpts = os.path.join(workdir, "checkpoints")
    shutil.copytree(os.path.join(ckpts, "2"), os.path.join(ckpts, "3.orbax-checkpoint-tmp"))
    assert Checkpointer(workdir).latest_step() == 2
    state, _ = loop.train_and_evaluate(config, workdir)
    assert int(state.step) == config.train.num_steps


def test_sampling_without_a_checkpoint_is_a_clear_error(tiny_vae_config, tmp_path):
    with pytest.raises(CheckpointError, match="holds no jaxgen run"):
        loop.restore_for_inference(str(tmp_path))
    os.makedirs(tmp_path / "w")
    with open(tmp_path / "w" / "config.json", "w") as f:
        f.write(tiny_vae_config.to_json())
    with pytest.raises(CheckpointError, match="has no checkpoint"):
        loop.restore_for_inference(str(tmp_path / "w"))


@pytest.mark.slow
def test_eval_only_uses_the_run_and_new_eval_settings(tiny_vae_config, tmp_path):
    workdir = str(tmp_path / "run")
    loop.train_and_evaluate(tiny_vae_config, workdir)
    eval_config = tiny_vae_config.eval
    eval_config.iwae_k, eval_config.final_num_examples = 8, 48
    metrics = loop.evaluate(workdir, eval_config)
    assert metrics["examples"] == 48
    rows = [r for r in read_metrics(workdir) if r["split"] == "final_eval"]
    assert rows and rows[-1]["nll_iwae"] == pytest.approx(metrics["nll_iwae"])
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["family"] == "vae"


@pytest.mark.slow
def test_periodic_actions_run_on_their_schedules_and_a_stop_skips_evals_and_grids(
    tiny_vae_config, tmp_path
):
    """Train rows every log_every steps and at the end, evals and sample grids every so many
    steps before the last (then once as the final ones), checkpoints every checkpoint_every
    steps and at the end; a stop logs and checkpoints its step but runs no eval or grid."""
    config = tiny_vae_config
    config.train.update(num_steps=8, log_every=4, eval_every=2, sample_every=3, checkpoint_every=4)
    config.train.keep_checkpoints = 5

    def schedule(workdir):
        rows = read_metrics(workdir)
        folder = os.path.join(workdir, "samples")
        grids = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        splits = {s: [r["step"] for r in rows if r["split"] == s] for s in ("train", "eval")}
        return splits, grids, Checkpointer(workdir).all_steps()

    whole = str(tmp_path / "whole")
    _, summary = loop.train_and_evaluate(config, whole)
    assert schedule(whole) == (
        {"train": [4, 8], "eval": [2, 4, 6, 8]},
        ["step_0000003.png", "step_0000006.png", "step_0000008.png"],
        [4, 8],
    )
    assert summary["samples"].endswith("step_0000008.png") and "nll_iwae" in summary["eval"]

    stopped = str(tmp_path / "stopped")
    _, summary = loop.train_and_evaluate(config, stopped, stop_at_step=6)
    assert summary["stopped_early"] and "eval" not in summary and "samples" not in summary
    assert schedule(stopped) == ({"train": [4, 6], "eval": [2, 4]}, ["step_0000003.png"], [4, 6])
