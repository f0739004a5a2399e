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

from jaxgen.data import eval_batches, load_splits, num_eval_examples, train_batch
from jaxgen.engine import checkpoint as ckpt_lib
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
from jaxgen.errors import ConfigError
from jaxgen.families import get_family


def example_batch(config, num: int) -> dict[str, np.ndarray]:
    """A zero batch with the data's shapes and dtypes: enough to trace ``init``."""
    return {
        "image": np.zeros((num, *config.data.image_shape), np.uint8),
        "label": np.zeros((num,), np.int32),
        "index": np.zeros((num,), np.int32),
    }


@dataclass
class Setup:
    """What every entry point needs: the family, the mesh, and the state's shardings."""

    config: Any
    family: Any
    mesh: Any
    abstract_state: Any
    state_sharding: Any

    def init_state(self):
        batch = global_batch(example_batch(self.config, self._local_rows()), self.mesh)
        init = jax.jit(
            functools.partial(self.family.init, self.config), out_shardings=self.state_sharding
        )
        return init(jax.random.PRNGKey(self.config.seed), batch)

    def _local_rows(self) -> int:
        return self.mesh.devices.size // jax.process_count() or 1

    def abstract_with_shardings(self):
        return ckpt_lib.abstract_like(self.abstract_state, self.state_sharding)


def resolve_first_stage(config) -> None:
    """Two-stage families name their first stage in ``first_stage.workdir``; copy that run's
    ``config.json`` into ``first_stage.config`` (once: a restored run's config already has it)."""
    if "first_stage" not in config or "family" in config.first_stage.config:
        return
    workdir = config.first_stage.workdir
    if not workdir or not os.path.exists(os.path.join(workdir, ckpt_lib.CONFIG_FILE)):
        raise ConfigError(
            f"first_stage.workdir={workdir!r} is not a trained run (no "
            f"{ckpt_lib.CONFIG_FILE} there); train the first stage first, e.g. python train.py "
            "--config=configs/vqvae_mnist.py --workdir=runs/vqvae_mnist, and pass "
            "--config.first_stage.workdir=runs/vqvae_mnist"
        )
    config.first_stage.config = ckpt_lib.load_config(workdir)


def make_setup(config, devices=None, need_data: bool = True) -> Setup:
    maybe_initialize_distributed(config)
    mesh = make_mesh(devices)
    resolve_first_stage(config)
    validate(config, mesh.devices.size, jax.process_count(), need_data=need_data)
    family = get_family(config.family)
    rows = mesh.devices.size
    abstract = jax.eval_shape(
        functools.partial(family.init, config),
        jax.ShapeDtypeStruct((2,), jnp.uint32),
        {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in example_batch(config, rows).items()},
    )
    state_sharding = jax.tree.map(lambda _: replicated(mesh), abstract)
    return Setup(config, family, mesh, abstract, state_sharding)


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


def _compile_eval(setup: Setup):
    batch_sh = batch_sharding(setup.mesh)
    return jax.jit(
        functools.partial(setup.family.eval_step, setup.config),
        in_shardings=(setup.state_sharding, batch_sh),
        out_shardings=replicated(setup.mesh),
    )


def run_eval(setup: Setup, eval_fn, state, split, num_examples: int) -> dict[str, float]:
    """Mean of the family's eval metrics over the first ``num_examples`` test examples.

    A metric that is an array rather than a scalar is a histogram (a VQ model's code counts,
    ``codes``): it is summed over the pass and reported as ``<name>_used``, the fraction of its
    bins that were hit, and ``<name>_perplexity``, the exponentiated entropy of the pass's
    distribution (unlike a batch perplexity, it does not depend on the batch size)."""
    cfg = setup.config
    batches = eval_batches(
        split, cfg.eval.batch_size, num_examples, jax.process_index(), jax.process_count()
    )
    totals, count = None, 0
    for batch in batches:
        metrics = eval_fn(state, global_batch(batch, setup.mesh))
        totals = metrics if totals is None else jax.tree.map(jnp.add, totals, metrics)
        count += 1
    if count == 0:
        raise ValueError(
            f"eval: the test split has {split.num_examples} examples, fewer than one eval batch "
            f"of eval.batch_size={cfg.eval.batch_size}"
        )
    out = {}
    for k, v in jax.device_get(totals).items():
        v = np.asarray(v)
        if v.ndim == 0:
            out[k] = float(v) / count
        else:  # a histogram (e.g. of codes): summed over the pass, not averaged
            out[f"{k}_used"] = float(np.mean(v > 0))
            p = v / max(float(v.sum()), 1e-12)
            out[f"{k}_perplexity"] = float(np.exp(-np.sum(p * np.log(np.maximum(p, 1e-12)))))
    out["examples"] = float(num_eval_examples(split, cfg.eval.batch_size, num_examples))
    return out


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
    cfg, family, mesh = config, setup.family, setup.mesh
    is_main = jax.process_index() == 0
    pidx, pcount = jax.process_index(), jax.process_count()
    train_split, test_split = load_splits(cfg.data)

    os.makedirs(workdir, exist_ok=True)
    checkpoints = ckpt_lib.Checkpointer(workdir, keep=cfg.train.keep_checkpoints)
    if checkpoints.latest_step() is not None:
        state = checkpoints.restore(setup.abstract_with_shardings())
        resumed_from = int(state.step)
    else:
        state, resumed_from = setup.init_state(), None
        if hasattr(family, "attach_first_stage"):  # frozen weights of a trained first stage
            _, first = restore_for_inference(cfg.first_stage.workdir, devices)
            state = family.attach_first_stage(cfg, state, first)
            state = jax.device_put(state, setup.state_sharding)
    ckpt_lib.save_config(workdir, cfg)

    batch_sh = {k: batch_sharding(mesh) for k in ("image", "label", "index")}
    step_fn = jax.jit(
        functools.partial(family.train_step, cfg),
        in_shardings=(setup.state_sharding, batch_sh),
        out_shardings=(setup.state_sharding, replicated(mesh)),
        donate_argnums=0,
    )
    eval_fn = _compile_eval(setup)
    sample_fn = None  # families that do not generate (classifiers) have no ``sample``
    if hasattr(family, "sample"):
        sample_fn = jax.jit(
            lambda s, r: family.sample(cfg, s, r, cfg.train.sample_num),
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
            batch = global_batch(
                train_batch(train_split, cfg.seed, step, cfg.train.batch_size, pidx, pcount), mesh
            )
            state, metrics = step_fn(state, batch)
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
                bar.set_postfix(
                    loss=f"{last_train['loss']:.4g}", ex_s=f"{metrics['examples_per_s']:.0f}"
                )
            if cfg.train.eval_every and done % cfg.train.eval_every == 0 and done < num_steps:
                row = writer.write(
                    done, "eval", run_eval(setup, eval_fn, state, test_split, cfg.eval.num_examples)
                )
                bar.write(_format("eval", row))
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
        summary["eval"] = writer.write(
            final_step,
            "eval",
            run_eval(setup, eval_fn, state, test_split, cfg.eval.final_num_examples),
        )
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
    metrics = run_eval(
        setup, _compile_eval(setup), state, test_split, config.eval.final_num_examples
    )
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
