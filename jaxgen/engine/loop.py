"""The training loop: build the mesh, initialise or restore state into its sharding, then jit the
family's step once and run it, with logging, evaluation, sample grids and checkpoints.

Preemption: SIGTERM or Ctrl-C (SIGINT) sets a flag; the loop finishes the step it is in,
writes a checkpoint and returns. Starting again with the same workdir resumes from it, and
because batch ``k`` and the RNG of step ``k`` are pure functions of ``(seed, k)`` the resumed
run is identical to one that never stopped.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxgen.data import load_splits, step_batch
from jaxgen.engine import checkpoint as ckpt_lib
from jaxgen.engine import evals as evals_lib
from jaxgen.engine import first_stage
from jaxgen.engine.config import validate
from jaxgen.engine.images import save_grid
from jaxgen.engine.mesh import (
    batch_sharding,
    global_batch,
    make_mesh,
    maybe_initialize_distributed,
    replicated,
)
from jaxgen.engine.metrics import MetricsWriter
from jaxgen.families import Capabilities, Family, get_family

# Kept importable from here: tests and benchmarks call them by these names.
run_eval = evals_lib.run_held_out
_compile_eval = evals_lib.compile_eval_step


def example_batch(config, num: int, batches_per_step: int = 1) -> dict[str, np.ndarray]:
    """A zero batch with the data's shapes and dtypes (``[k, num, ...]`` for ``k > 1``
    batches per step): enough to trace ``init``."""
    lead = (batches_per_step, num) if batches_per_step > 1 else (num,)
    return {
        "image": np.zeros((*lead, *config.data.image_shape), np.uint8),
        "label": np.zeros(lead, np.int32),
        "index": np.zeros(lead, np.int32),
    }


@dataclass
class Setup:
    """What every entry point needs: the family and what it can do, the mesh, and the state's
    shardings."""

    config: Any
    family: Family
    caps: Capabilities
    mesh: Any
    abstract_state: Any
    state_sharding: Any

    def init_state(self):
        k = self.caps.batches_per_step
        batch = global_batch(example_batch(self.config, self._local_rows(), k), self.mesh, k)
        init = jax.jit(
            functools.partial(self.family.init, self.config), out_shardings=self.state_sharding
        )
        return init(jax.random.PRNGKey(self.config.seed), batch)

    def _local_rows(self) -> int:
        return self.mesh.devices.size // jax.process_count() or 1

    def abstract_with_shardings(self):
        return ckpt_lib.abstract_like(self.abstract_state, self.state_sharding)


def make_setup(config, devices=None, need_data: bool = True) -> Setup:
    maybe_initialize_distributed(config)
    mesh = make_mesh(devices)
    family = get_family(config.family)
    caps = family.capabilities(config)
    family.check(caps)
    if caps.first_stage:
        first_stage.resolve(config)
    validate(config, mesh.devices.size, jax.process_count(), need_data=need_data)
    if caps.first_stage:
        first_stage.check(config)
    rows = mesh.devices.size
    example = example_batch(config, rows, caps.batches_per_step)
    abstract = jax.eval_shape(
        functools.partial(family.init, config),
        jax.ShapeDtypeStruct((2,), jnp.uint32),
        {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in example.items()},
    )
    state_sharding = jax.tree.map(lambda _: replicated(mesh), abstract)
    return Setup(config, family, caps, mesh, abstract, state_sharding)


def compile_train_step(setup: Setup):
    """The family's ``train_step`` jitted once: state replicated and donated, batch split
    along its batch axis over ``data``."""
    k = setup.caps.batches_per_step
    batch_sh = {key: batch_sharding(setup.mesh, k) for key in ("image", "label", "index")}
    return jax.jit(
        functools.partial(setup.family.train_step, setup.config),
        in_shardings=(setup.state_sharding, batch_sh),
        out_shardings=(setup.state_sharding, replicated(setup.mesh)),
        donate_argnums=0,
    )


def train_batch_for_step(setup: Setup, split, step: int) -> dict:
    """Global batch of training step ``step`` (``[k, B, ...]`` for ``k`` batches a step)."""
    cfg, k = setup.config, setup.caps.batches_per_step
    local = step_batch(
        split, cfg.seed, step, cfg.train.batch_size, k, jax.process_index(), jax.process_count()
    )
    return global_batch(local, setup.mesh, k)


class _StopFlag:
    """Set by SIGTERM / SIGINT while training; the loop checks it after every step."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def _sample_grid(setup: Setup, sample_fn, state, step: int, workdir: str) -> str | None:
    images = np.asarray(jax.device_get(sample_fn(state, jax.random.PRNGKey(step))))
    if jax.process_index() != 0:
        return None
    return save_grid(images, os.path.join(workdir, "samples", f"step_{step:07d}.png"))


def train_and_evaluate(config, workdir: str, devices=None, stop_at_step: int | None = None):
    """Train ``config`` in ``workdir``, resuming from its latest checkpoint if there is one.

    ``stop_at_step`` behaves like a preemption signal arriving after that step (for tests).
    Returns ``(state, summary)``.
    """
    setup = make_setup(config, devices)
    cfg, family, mesh, caps = config, setup.family, setup.mesh, setup.caps
    is_main = jax.process_index() == 0
    train_split, test_split = load_splits(cfg.data)

    os.makedirs(workdir, exist_ok=True)
    checkpoints = ckpt_lib.Checkpointer(workdir, keep=cfg.train.keep_checkpoints)
    if checkpoints.latest_step() is not None:
        state = checkpoints.restore(setup.abstract_with_shardings())
        resumed_from = int(state.step)
    else:
        state, resumed_from = setup.init_state(), None
        if caps.first_stage:  # frozen weights of a trained first stage
            _, first = restore_for_inference(cfg.first_stage.workdir, devices)
            state = first_stage.attach(cfg, state, first)
            state = jax.device_put(state, setup.state_sharding)
    ckpt_lib.save_config(workdir, cfg)

    step_fn = compile_train_step(setup)
    evaluators = evals_lib.build(setup, test_split)
    sample_fn = None
    if caps.generates:
        sample_fn = jax.jit(
            lambda s, r: family.sample(cfg, s, r, cfg.train.sample_num).images,
            out_shardings=replicated(mesh),
        )
    writer = MetricsWriter(workdir)
    start_step = int(state.step)
    num_steps = cfg.train.num_steps
    t_start = time.time()
    last_train: dict[str, float] = {}
    stopped_early = False
    last_saved = resumed_from
    bar = tqdm(
        total=num_steps,
        initial=start_step,
        disable=not (cfg.train.progress and is_main),
        dynamic_ncols=True,
        desc="train",
    )
    if resumed_from is not None and is_main:
        bar.write(f"resumed from checkpoint at step {resumed_from} in {workdir}")
    t_log, n_log = time.time(), 0
    with _StopFlag() as stop:
        for step in range(start_step, num_steps):
            state, metrics = step_fn(state, train_batch_for_step(setup, train_split, step))
            done = step + 1
            n_log += 1
            bar.update(1)
            stopping = stop.requested or (stop_at_step is not None and done >= stop_at_step)
            if done % cfg.train.log_every == 0 or done == num_steps or stopping:
                metrics = jax.device_get(metrics)
                now = time.time()
                metrics["examples_per_s"] = n_log * cfg.train.batch_size / max(now - t_log, 1e-9)
                t_log, n_log = now, 0
                last_train = writer.write(done, "train", metrics)
                shown = {"ex_s": f"{metrics['examples_per_s']:.0f}"}
                if caps.progress_metric in last_train:
                    shown = {
                        caps.progress_metric: f"{last_train[caps.progress_metric]:.4g}",
                        **shown,
                    }
                bar.set_postfix(shown)
            for ev in evaluators:
                if ev.every and done % ev.every == 0 and done < num_steps:
                    row = writer.write(done, ev.split, ev.run(state, False))
                    bar.write(_format(ev.split, row))
            sample_now = sample_fn is not None and cfg.train.sample_every
            if sample_now and done % cfg.train.sample_every == 0 and done < num_steps:
                _sample_grid(setup, sample_fn, state, done, workdir)
            if cfg.train.checkpoint_every and done % cfg.train.checkpoint_every == 0:
                checkpoints.save(done, state)
                last_saved = done
            if stopping:
                stopped_early = done < num_steps
                break
    bar.close()
    final_step = int(state.step)
    if last_saved != final_step:
        checkpoints.save(final_step, state, force=True)
    summary: dict[str, Any] = {"step": final_step, "stopped_early": stopped_early}
    if not stopped_early:
        final_rows = {}
        for ev in evaluators:
            row = writer.write(final_step, ev.split, ev.run(state, True))
            final_rows.update({k: v for k, v in row.items() if k not in ("step", "time", "split")})
        if evaluators:
            summary["eval"] = final_rows
        if sample_fn is not None:
            summary["samples"] = _sample_grid(setup, sample_fn, state, final_step, workdir)
    checkpoints.close()
    summary.update(
        wall_s=round(time.time() - t_start, 2),
        train=last_train,
        workdir=workdir,
        contents=sorted(os.listdir(workdir)),
    )
    if is_main:
        print(_summary_line(summary), flush=True)
    return state, summary


def evaluate(workdir: str, eval_config=None, devices=None) -> dict[str, float]:
    """Restore the latest checkpoint of ``workdir`` and evaluate it on the first
    ``eval.final_num_examples`` test examples; ``eval_config`` replaces the run's ``eval``
    section when given."""
    config = ckpt_lib.load_config(workdir)
    if eval_config is not None:
        config.eval = eval_config
    setup = make_setup(config, devices)
    state = restore_state(setup, workdir)
    _, test_split = load_splits(config.data)
    metrics = {}
    for ev in evals_lib.build(setup, test_split):
        metrics.update(ev.run(state, True))
    MetricsWriter(workdir).write(int(state.step), "final_eval", metrics)
    return metrics


def restore_state(setup: Setup, workdir: str):
    checkpoints = ckpt_lib.Checkpointer(workdir, keep=setup.config.train.keep_checkpoints)
    try:
        if checkpoints.latest_step() is None:
            raise ckpt_lib.CheckpointError(
                f"--workdir={workdir!r} has no checkpoint in {checkpoints.directory}; train first "
                "(train.py --workdir=...) or point at a finished run"
            )
        return checkpoints.restore(setup.abstract_with_shardings())
    finally:
        checkpoints.close()


def restore_for_inference(workdir: str, devices=None):
    """``(setup, state)`` from the latest checkpoint and ``config.json`` of ``workdir``."""
    config = ckpt_lib.load_config(workdir)
    setup = make_setup(config, devices, need_data=False)
    return setup, restore_state(setup, workdir)


def _format(split: str, row: dict) -> str:
    skip = {"step", "time", "split"}
    body = " ".join(f"{k}={v:.4g}" for k, v in row.items() if k not in skip)
    return f"[{split} step {row['step']}] {body}"


def _summary_line(summary: dict) -> str:
    train = {k: v for k, v in summary.get("train", {}).items() if k not in ("step", "split")}
    parts = [
        f"steps={summary['step']}",
        f"wall={summary['wall_s']:.1f}s",
        "stopped early (checkpoint saved; run again to resume)"
        if summary["stopped_early"]
        else "finished",
        "last train: " + " ".join(f"{k}={v:.4g}" for k, v in train.items()),
    ]
    if "eval" in summary:
        ev = {k: v for k, v in summary["eval"].items() if k not in ("step", "time", "split")}
        parts.append("final eval: " + " ".join(f"{k}={v:.4g}" for k, v in ev.items()))
    parts.append(f"workdir {summary['workdir']}: {', '.join(summary['contents'])}")
    return "summary | " + " | ".join(parts)
