"""Multi-host, for real: two JAX processes on localhost (gloo CPU collectives, 2 fake CPU devices
each) train, checkpoint, resume, evaluate and sample through the engine, and agree with one
process of 4 devices on the same global batches.

The children run ``tests/multihost_child.py``; this process (8 fake devices, conftest) runs the
1-process reference on 4 of them.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import multihost_child as child
import numpy as np
import pytest
from support import ROOT

from jaxgen.data import batch_indices, load_splits
from jaxgen.engine import loop
from jaxgen.engine.checkpoint import Checkpointer
from jaxgen.engine.metrics import read_metrics

pytestmark = pytest.mark.multihost

TIMEOUT_S = 240  # both children together; a run takes ~25 s on 2 shared cores
TOL = {"rtol": 1e-5, "atol": 1e-6}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_env() -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"  # not conftest's 8
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("JAXGEN_DISTRIBUTED", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _start_children(tmp_path, fresh: str, resume: str) -> list:
    port = _free_port()
    script = str(ROOT / "tests" / "multihost_child.py")
    procs = []
    for i in range(2):
        out = str(tmp_path / f"child{i}.npz")
        cmd = [sys.executable, script, str(port), str(i), fresh, resume, out]
        with open(tmp_path / f"child{i}.log", "w") as log:
            procs.append(
                subprocess.Popen(
                    cmd, env=_child_env(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
                )
            )
    return procs


def _finish_children(tmp_path, procs) -> list[dict]:
    try:
        for p in procs:
            p.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    texts = [(tmp_path / f"child{i}.log").read_text() for i in range(2)]
    for i, p in enumerate(procs):
        assert p.returncode == 0, f"child {i} exit {p.returncode}:\n{texts[i][-4000:]}"
    return [dict(np.load(tmp_path / f"child{i}.npz")) for i in range(2)]


def _section(result: dict, name: str) -> dict:
    return {k.split("/", 1)[1]: v for k, v in result.items() if k.startswith(name + "/")}


def _assert_close(got: dict, want: dict, what: str) -> None:
    assert sorted(got) == sorted(want), what
    for key in want:
        np.testing.assert_allclose(got[key], want[key], err_msg=f"{what}: {key}", **TOL)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The 1-process references (4 devices of this process) and the 2-process children."""
    tmp = tmp_path_factory.mktemp("multihost")
    config = child.tiny_config()
    four = jax.devices()[:4]
    # A 1-process run preempted after step 2 (checkpoint at 2); the children finish it.
    resume = str(tmp / "resume")
    _, stopped = loop.train_and_evaluate(config, resume, devices=four, stop_at_step=2)
    assert stopped["stopped_early"] and stopped["step"] == 2
    fresh = str(tmp / "fresh")
    procs = _start_children(tmp, fresh, resume)
    try:  # the uninterrupted 1-process run, while the children start
        ref_state, _ = loop.train_and_evaluate(config, str(tmp / "reference"), devices=four)
    finally:
        children = _finish_children(tmp, procs)
    return {
        "config": config,
        "four": four,
        "reference": child.flat_leaves(ref_state),
        "children": children,
        "fresh": fresh,
        "resume": resume,
    }


def test_two_processes_train_like_one(runs):
    for i, r in enumerate(runs["children"]):
        assert int(r["process_index"]) == i
        assert (int(r["process_count"]), int(r["local_devices"]), int(r["devices"])) == (2, 2, 4)
    first, second = (_section(r, "fresh") for r in runs["children"])
    # Both processes hold the same (replicated) state, equal to 1 process of 4 devices.
    _assert_close(second, first, "process 1 vs process 0")
    _assert_close(first, runs["reference"], "2 processes vs 1 process")
    summary = json.loads(str(runs["children"][0]["fresh_summary"]))
    assert summary["step"] == child.NUM_STEPS and not summary["stopped_early"]
    assert np.isfinite(summary["eval"]["nll_iwae"]), summary  # the final eval ran, over 2 processes


def test_each_process_reads_only_its_rows(runs):
    config = runs["config"]
    train, test = load_splits(config.data)
    batch = config.train.batch_size
    for p, r in enumerate(runs["children"]):
        want = [
            batch_indices(config.seed, k, batch, train.num_examples, p, 2)
            for k in range(child.NUM_STEPS)
        ]
        np.testing.assert_array_equal(r["fresh_train_calls"], np.stack(want))
        resumed = [batch_indices(config.seed, k, batch, train.num_examples, p, 2) for k in (2, 3)]
        np.testing.assert_array_equal(r["resume_train_calls"], np.stack(resumed))
        # Final eval: batches of eval.batch_size over the first final_num_examples, in halves.
        eb, n = config.eval.batch_size, config.eval.final_num_examples
        want_eval = [
            np.arange(b * eb + p * eb // 2, b * eb + (p + 1) * eb // 2) for b in range(n // eb)
        ]
        np.testing.assert_array_equal(r["fresh_test_calls"], np.stack(want_eval))
    # Together the two processes read each global batch exactly once.
    both = np.concatenate([r["fresh_train_calls"] for r in runs["children"]], axis=1)
    for k in range(child.NUM_STEPS):
        np.testing.assert_array_equal(
            both[k], batch_indices(config.seed, k, batch, train.num_examples)
        )


def test_only_process_zero_writes_the_run_files(runs):
    fresh = runs["fresh"]
    rows = read_metrics(fresh)
    keys = [(row["step"], row["split"]) for row in rows]
    assert len(keys) == len(set(keys)), keys  # no row written twice
    assert ("4", "train") not in keys and (4, "train") in keys and (4, "eval") in keys
    assert json.load(open(os.path.join(fresh, "config.json")))["family"] == "vae"
    assert os.listdir(os.path.join(fresh, "samples")) == ["step_0000004.png"]
    assert not os.path.exists(os.path.join(fresh, ".lock"))  # released by process 0
    checkpoints = Checkpointer(fresh)
    try:
        assert checkpoints.all_steps() == [2, 4]
        for step in (2, 4):
            assert checkpoints.verify(step) is None  # sealed by process 0, matches
    finally:
        checkpoints.close()


def test_a_two_process_checkpoint_restores_in_one_process(runs):
    setup, state = loop.restore_for_inference(runs["fresh"], devices=runs["four"])
    restored = child.flat_leaves(state)
    _assert_close(restored, _section(runs["children"][0], "fresh"), "restored in 1 process")
    for r in runs["children"]:  # and each child restored the same values
        _assert_close(_section(r, "restored"), restored, "restored in 2 processes")
    # Sampling: both processes drew the same images, the ones one process draws.
    a, b = (r["images"] for r in runs["children"])
    np.testing.assert_array_equal(a, b)
    single = child.sample_images(setup, state)
    assert single.shape == (child.SAMPLE_NUM, 16, 16, 1)
    np.testing.assert_allclose(a, single, **TOL)


def test_a_one_process_checkpoint_resumes_in_two_processes(runs):
    for r in runs["children"]:
        summary = json.loads(str(r["resume_summary"]))
        assert summary["step"] == child.NUM_STEPS and not summary["stopped_early"]
        _assert_close(_section(r, "resumed"), runs["reference"], "resumed in 2 processes")
    steps = [row["step"] for row in read_metrics(runs["resume"]) if row["split"] == "train"]
    assert steps == [2, 4], steps  # one row per log, none from both processes
