"""The training loop: build the mesh, initialise or restore state into its sharding, then jit the
family's step once and run it. After each step the periodic actions (train log, evaluations,
sample grid, checkpoint) each decide in ``maybe_run(step, state)`` whether it is their turn.

Preemption: SIGTERM or Ctrl-C (SIGINT) sets a flag (``signals``); the loop finishes the step it
is in, writes a checkpoint and returns; during start-up or an evaluation it stops there. Starting
again with the same workdir resumes from the checkpoint, and because batch ``k`` and the RNG of
step ``k`` are pure functions of ``(seed, k)`` the resumed run is identical to one that never
stopped.

Good work is never lost to a bad step: every step reports whether its metrics are finite; a
NaN or Inf stops the run (or skips that update, ``train.nonfinite='skip'``), and a state that
is not finite is never saved, so the newest finite checkpoint stays the latest. One process at a
time trains in a workdir (a lock file), and a resumed run must have the stored config.
"""

from __future__ import annotations

import functools
import math
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxgen.data import captions, load_splits, step_batch
from jaxgen.engine import checkpoint as ckpt_lib
from jaxgen.engine import evals as evals_lib
from jaxgen.engine import first_stage, sampling, signals
from jaxgen.engine import workdir as workdir_lib
from jaxgen.engine.config import FSDP_MIN_SIZE, differences, resumable, validate
from jaxgen.engine.images import save_grid
from jaxgen.engine.mesh import (
    batch_sharding,
    gather_params,
    global_batch,
    make_mesh,
    maybe_initialize_distributed,
    replicated,
    state_shardings,
)
from jaxgen.engine.metrics import MetricsWriter
from jaxgen.errors import ConfigError, TrainingError
from jaxgen.families import Capabilities, Family, get_family


def example_batch(config, num: int, batches_per_step: int = 1) -> dict[str, np.ndarray]:
    """A zero batch with the data's shapes and dtypes (``[k, num, ...]`` for ``k > 1``
    batches per step): enough to trace ``init``."""
    lead = (batches_per_step, num) if batches_per_step > 1 else (num,)
    batch = {
        "image": np.zeros((*lead, *config.data.image_shape), np.uint8),
        "label": np.zeros(lead, np.int32),
        "index": np.zeros(lead, np.int32),
    }
    if config.data.get("captions", ""):  # caption tokens (jaxgen.data.derived)
        batch["text"] = np.zeros((*lead, config.data.caption_len), np.int32)
    return batch


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

    def restore(self, checkpoints):
        """The newest good step of ``checkpoints`` (a ``Checkpointer``) as this setup's state.

        A checkpoint holds the state less ``State.constants`` (``saved``); they are rebuilt by
        ``Family.constants(config)`` and placed in their shardings. A checkpoint written before
        ``constants`` existed (2026-12-04) held them in ``frozen``; it restores too."""
        abstract, shardings = self.abstract_state, self.state_sharding
        if getattr(abstract, "constants", None) is None:
            return checkpoints.restore(self.abstract_with_shardings())
        if self.family.constants is None:
            raise TypeError(
                f"family {self.family.name!r}: init fills State.constants but the family has "
                "no constants(config) to rebuild them for a restored state"
            )
        current = [t.replace(constants=None) for t in (abstract, shardings)]
        try:
            state = checkpoints.restore(ckpt_lib.abstract_like(*current))
        except ckpt_lib.CheckpointMismatchError as mismatch:
            if abstract.frozen is not None:
                raise
            legacy = [t.replace(frozen=t.constants, constants=None) for t in (abstract, shardings)]
            try:
                state = checkpoints.restore(ckpt_lib.abstract_like(*legacy)).replace(frozen=None)
            except ckpt_lib.CheckpointMismatchError:
                raise mismatch from None  # the current layout's differences, not the old one's
        values = self.family.constants(self.config)
        return state.replace(constants=_place(values, abstract.constants, shardings.constants))


def saved(state):
    """What a checkpoint holds of ``state``: all of it but ``State.constants``."""
    if getattr(state, "constants", None) is None:
        return state
    return state.replace(constants=None)


def _place(host_tree, abstract, shardings):
    """Host arrays as global arrays of ``abstract``'s dtypes in ``shardings`` (each process
    gives the same values)."""

    def one(value, like, sharding):
        value = np.asarray(value, dtype=like.dtype)
        if value.shape != like.shape:
            raise ValueError(f"constants: an array of shape {value.shape}, init made {like.shape}")
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    return jax.tree.map(one, host_tree, abstract, shardings)


def make_setup(config, devices=None, need_data: bool = True, fit_fsdp: bool | None = None) -> Setup:
    """The family, the ``(data, fsdp)`` mesh over ``devices`` (default: all) and the state's
    shardings: arrays of at least ``mesh.fsdp_min_size`` elements split over ``mesh.fsdp``
    devices, the rest replicated. ``fit_fsdp`` (default: ``not need_data``, inference) lets a
    restored run use fewer devices than it trained on: the state is then split over as many
    as divide the count instead of failing on ``mesh.fsdp``."""
    maybe_initialize_distributed(config)
    devices = list(jax.devices() if devices is None else devices)
    family = get_family(config.family)
    caps = family.capabilities(config)
    if caps.first_stage:
        first_stage.resolve(config)
    fsdp = config.mesh.get("fsdp", 1)
    fit = (not need_data) if fit_fsdp is None else fit_fsdp
    if fit and isinstance(fsdp, int) and not isinstance(fsdp, bool) and fsdp > 1:
        fsdp = math.gcd(fsdp, len(devices))  # the layout is not part of the model
    validate(config, len(devices), jax.process_count(), need_data=need_data, fsdp=fsdp)
    # After the family's own checks, which name the config key behind a bad derived value
    # (gan.n_critic=0, not batches_per_step=0).
    family.check(caps)
    if caps.first_stage:
        first_stage.check(config)
    mesh = make_mesh(devices, fsdp=fsdp)
    rows = mesh.devices.size
    example = example_batch(config, rows, caps.batches_per_step)
    abstract = jax.eval_shape(
        functools.partial(family.init, config),
        jax.ShapeDtypeStruct((2,), jnp.uint32),
        {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in example.items()},
    )
    min_size = config.mesh.get("fsdp_min_size", FSDP_MIN_SIZE)
    state_sharding = state_shardings(abstract, mesh, min_size)
    return Setup(config, family, caps, mesh, abstract, state_sharding)


def _batch_shardings(setup: Setup) -> dict:
    k = setup.caps.batches_per_step
    return {key: batch_sharding(setup.mesh, k) for key in example_batch(setup.config, 1)}


def train_batch_for_step(setup: Setup, split, step: int) -> dict:
    """Global batch of training step ``step`` (``[k, B, ...]`` for ``k`` batches a step)."""
    cfg, k = setup.config, setup.caps.batches_per_step
    local = step_batch(
        split, cfg.seed, step, cfg.train.batch_size, k, jax.process_index(), jax.process_count()
    )
    return global_batch(local, setup.mesh, k)


def check_labels(setup: Setup, *splits) -> None:
    """Labels a family trains on must be classes of its model (checked before training)."""
    k = setup.caps.label_classes
    for split in splits:
        if k and split.max_label is not None and split.max_label >= k:
            raise ConfigError(
                f"the data's labels go up to {split.max_label} but the model has {k} classes "
                f"(model.num_classes={k}); give data with labels 0..{k - 1} or more classes"
            )


def compile_train_step(setup: Setup):
    """The family's ``train_step`` jitted once, as the loop runs it: state in its shardings
    (replicated, or large arrays split over ``fsdp``) and donated, batch split along its batch
    axis over every device (``data`` x ``fsdp``). Returns ``(state, metrics, finite)``:
    ``finite`` has one flag per metric (sorted by name) saying whether it is finite. With
    ``train.nonfinite = 'skip'`` a step whose metrics are not all finite keeps the old state
    (its step count still advances, so the next step sees the next batch)."""
    skip = setup.config.train.get("nonfinite", "stop") == "skip"
    family, config = setup.family, setup.config

    def step(state, batch):
        new, metrics = family.train_step(config, gather_params(state, setup.mesh), batch)
        finite = jnp.stack([jnp.all(jnp.isfinite(metrics[k])) for k in sorted(metrics)])
        if skip:
            ok = jnp.all(finite)
            kept = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, state)
            new = kept.replace(step=new.step)
        return new, metrics, finite

    rep = replicated(setup.mesh)
    return jax.jit(
        step,
        in_shardings=(setup.state_sharding, _batch_shardings(setup)),
        out_shardings=(setup.state_sharding, rep, rep),
        donate_argnums=0,
    )


@jax.jit
def _all_finite(tree) -> jax.Array:
    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(x.dtype, jnp.floating)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


class _Prefetcher:
    """Global batches for steps ``start .. end - 1``, assembled ``depth`` ahead on a
    background thread while the device computes. Batch ``k`` is still a pure function of
    ``(seed, k)``, so resumed runs see the same data; ``depth = 0`` assembles in line."""

    def __init__(self, setup: Setup, split, start: int, end: int, depth: int):
        self._make = functools.partial(train_batch_for_step, setup, split)
        self._next, self._end = start, end
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._done = threading.Event()
        self._thread = None
        if depth > 0:
            self._thread = threading.Thread(target=self._fill, daemon=True)
            self._thread.start()

    def _fill(self):
        step = self._next
        while step < self._end and not self._done.is_set():
            try:
                item = (step, self._make(step))
            except Exception as e:  # noqa: BLE001 (handed to the consumer, raised there)
                item = (step, e)
            while not self._done.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            step += 1

    def get(self, step: int):
        if self._thread is None:
            return self._make(step)
        got, batch = self._queue.get()
        if isinstance(batch, Exception):
            raise batch
        assert got == step, (got, step)
        return batch

    def close(self):
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _sample_grid(setup: Setup, sample_fn, state, step: int, workdir: str) -> str | None:
    images = np.asarray(jax.device_get(sample_fn(state, jax.random.PRNGKey(step))))
    if jax.process_index() != 0:
        return None
    return save_grid(images, os.path.join(workdir, "samples", f"step_{step:07d}.png"))


class _Finiteness:
    """Collects each step's finite-metric flags and reads them only when needed (at logs and
    before checkpoints), so checking costs no device sync per step."""

    def __init__(self, policy: str):
        self.policy = policy
        self.names: list[str] | None = None  # the metrics' names, known after the first step
        self.pending: list[tuple[int, jax.Array]] = []
        self.skipped = 0
        self.error: str | None = None

    def add(self, step: int, metrics: dict, finite) -> None:
        """``finite``: one flag per metric of ``metrics``, by sorted name."""
        if self.names is None:
            self.names = sorted(metrics)
        self.pending.append((step, finite))

    def settle(self, newest_finite: int | None, raise_now: bool = True) -> int:
        """Read the pending flags; returns how many of them were non-finite steps. With the
        ``stop`` policy the first non-finite step is an error: raised now, or with
        ``raise_now=False`` kept for ``raise_pending`` (so its metrics can be logged first)."""
        if self.pending:
            flags = np.asarray(jax.device_get(jnp.stack([f for _, f in self.pending])))
            steps = [s for s, _ in self.pending]
            self.pending = []
            bad = np.flatnonzero(~flags.all(axis=1))
            if len(bad) and self.policy == "stop" and self.error is None:
                row = bad[0]
                names = [n for n, ok in zip(self.names, flags[row], strict=True) if not ok]
                kept = (
                    f"the newest finite checkpoint, step {newest_finite}, stays the latest"
                    if newest_finite is not None
                    else "no checkpoint was written"
                )
                self.error = (
                    f"training diverged: at step {steps[row]} the train metric(s) "
                    f"{', '.join(names)} became NaN or Inf; {kept}. Lower "
                    "optimizer.learning_rate (or set optimizer.grad_clip), or set "
                    "train.nonfinite='skip' to skip such steps"
                )
            self.skipped += len(bad)
            count = len(bad)
        else:
            count = 0
        if raise_now:
            self.raise_pending()
        return count

    def raise_pending(self) -> None:
        if self.error is not None:
            raise TrainingError(self.error)


def train_and_evaluate(
    config,
    workdir: str,
    devices=None,
    stop_at_step: int | None = None,
    allow_config_change: bool = False,
):
    """Train ``config`` in ``workdir``, resuming from its latest checkpoint if there is one.

    ``stop_at_step`` behaves like a preemption signal arriving after that step (for tests).
    ``allow_config_change``: resume although the config differs from the run's ``config.json``
    in keys that change the model, data or optimisation (the differences are printed).
    Returns ``(state, summary)``.
    """
    with signals.StopFlag() as stop:
        return _train(
            config,
            workdir,
            devices=devices,
            stop_at_step=stop_at_step,
            allow_config_change=allow_config_change,
            stop=stop,
        )


def _train(config, workdir: str, *, devices, stop_at_step, allow_config_change: bool, stop):
    t_start = time.time()
    is_main = jax.process_index() == 0
    setup = make_setup(config, devices)
    cfg, caps = config, setup.caps
    train_split, test_split = load_splits(cfg.data)
    check_labels(setup, train_split, test_split)
    evaluators = evals_lib.build(setup, test_split)  # checks eval settings against the data
    first = None
    if caps.first_stage and not (os.path.isdir(workdir) and has_checkpoint(workdir)):
        # A new prior: its tokenizer's weights, read before anything is written in its run.
        _, first = restore_for_inference(cfg.first_stage.workdir, devices, "first_stage.workdir")
    workdir_lib.prepare(workdir)
    say = (lambda text: print(text, flush=True)) if is_main else (lambda text: None)
    summary: dict[str, Any] = {"step": 0, "stopped_early": True}
    with workdir_lib.Lock(workdir) as lock:
        for note in lock.notes:
            say(note)
        checkpoints = ckpt_lib.Checkpointer(workdir, keep=cfg.train.keep_checkpoints, report=say)
        try:
            resumed_from = checkpoints.latest_step()
            if resumed_from is not None:
                _check_resume_config(cfg, workdir, allow_config_change, say)
                state = _restore_naming_differences(checkpoints, setup, workdir)
                resumed_from = int(state.step)
                MetricsWriter(workdir).drop_after(resumed_from)
            else:
                state = setup.init_state()
                if caps.first_stage:  # frozen weights of a trained first stage
                    if first is None:
                        key = "first_stage.workdir"
                        _, first = restore_for_inference(cfg.first_stage.workdir, devices, key)
                    state = first_stage.attach(cfg, state, first)
                    state = jax.device_put(state, setup.state_sharding)
            ckpt_lib.save_config(workdir, cfg)
            if is_main:
                _save_vocabulary(cfg, workdir)
            state, summary = _loop(
                setup,
                state,
                workdir=workdir,
                checkpoints=checkpoints,
                evaluators=evaluators,
                train_split=train_split,
                test_split=test_split,
                resumed_from=resumed_from,
                stop_at_step=stop_at_step,
                stop=stop,
                say=say,
            )
        finally:
            checkpoints.close()
    summary.update(
        wall_s=round(time.time() - t_start, 2),
        workdir=workdir,
        contents=sorted(os.listdir(workdir)),
    )
    say(_summary_line(summary))
    return state, summary


def _save_vocabulary(config, workdir: str) -> None:
    """A captioned run's vocabulary in ``workdir`` (once: a resumed run keeps its own), where
    sampling reads it to tokenize prompts."""
    name = config.data.get("captions", "")
    if name and not os.path.exists(os.path.join(workdir, captions.VOCAB_FILE)):
        captions.caption_set(name).vocabulary().save(workdir, name)


def _restore_naming_differences(checkpoints, setup: Setup, workdir: str):
    """Restore the newest good checkpoint; a checkpoint that does not fit the model is reported
    with the config keys that differ from the run's stored ``config.json``."""
    try:
        return setup.restore(checkpoints)
    except ckpt_lib.CheckpointMismatchError as e:
        stored = os.path.join(workdir, ckpt_lib.CONFIG_FILE)
        diffs = []
        if os.path.exists(stored):
            diffs = differences(ckpt_lib.load_config(workdir), setup.config)
        raise ckpt_lib.CheckpointMismatchError(
            f"{e}; config keys that differ from {stored} (stored -> given): "
            f"{'; '.join(diffs) or 'none'}",
            e.path,
            e.differences,
        ) from None


def _check_resume_config(cfg, workdir, allow: bool, say) -> None:
    stored_path = os.path.join(workdir, ckpt_lib.CONFIG_FILE)
    if not os.path.exists(stored_path):
        return
    diffs = differences(ckpt_lib.load_config(workdir), cfg)
    blocking = [d for d in diffs if not resumable(d)]
    if blocking and not allow:
        raise ConfigError(
            f"--workdir={workdir!r} holds a run with a different config; resuming would mix "
            f"two runs. Differences (stored -> given): {'; '.join(blocking)}. Use another "
            "--workdir, or pass --allow_config_change to resume with the new values"
        )
    if diffs:
        say("resuming with config changes (stored -> given): " + "; ".join(diffs))


class _CheckpointSaves:
    """Saves every ``train.checkpoint_every`` steps and, in ``flush``, at the step training ended
    on; only a state whose metrics and arrays are all finite is saved."""

    def __init__(self, checkpoints, *, every: int, finiteness: _Finiteness, last_saved):
        self.checkpoints, self.every, self.finiteness = checkpoints, every, finiteness
        self.last_saved: int | None = last_saved  # newest step on disk (None: none yet)

    def maybe_run(self, step: int, state, *, stopping: bool) -> None:
        if self.every and step % self.every == 0:
            self.save(step, state)

    def save(self, step: int, state, force: bool = False) -> None:
        self.finiteness.settle(self.last_saved)
        if not bool(_all_finite(state)):
            raise TrainingError(
                f"the state at step {step} holds NaN or Inf values; it was not saved (the "
                f"newest finite checkpoint, step {self.last_saved}, stays the latest)"
            )
        self.checkpoints.save(step, saved(state), force=force)
        self.last_saved = step

    def flush(self, state) -> int:
        """Save the final state unless it is saved already, and wait for the writes; returns
        its step."""
        step = int(state.step)
        if self.last_saved != step:
            self.save(step, state, force=True)
        self.checkpoints.wait()
        return step


class _TrainLog:
    """A row of train metrics in ``metrics.jsonl`` and the progress bar every ``train.log_every``
    steps, at the last step and when stopping, with the examples per second since the previous
    row. A divergence (``train.nonfinite='stop'``) is raised after its row is written."""

    def __init__(self, *, writer, bar, finiteness, saves: _CheckpointSaves, config, caps):
        self.writer, self.bar, self.finiteness = writer, bar, finiteness
        self.saves, self.caps = saves, caps
        self.every, self.num_steps = config.train.log_every, config.train.num_steps
        self.batch_size = config.train.batch_size
        self.metrics: dict | None = None  # the newest step's, still on device
        self.last: dict[str, float] = {}  # the newest row written
        self.t_last, self.steps_since = time.time(), 0

    def observe(self, step: int, metrics: dict, finite) -> None:
        """Every step: its metrics and their finite flags."""
        self.finiteness.add(step, metrics, finite)
        self.metrics = metrics
        self.steps_since += 1

    def maybe_run(self, step: int, state, *, stopping: bool) -> None:
        if not (step % self.every == 0 or step == self.num_steps or stopping):
            return
        skipped = self.finiteness.settle(self.saves.last_saved, raise_now=False)
        metrics = jax.device_get(self.metrics)
        now = time.time()
        metrics["examples_per_s"] = (
            self.steps_since * self.batch_size / max(now - self.t_last, 1e-9)
        )
        if self.finiteness.policy == "skip":
            metrics["skipped_nonfinite"] = float(skipped)
        self.t_last, self.steps_since = now, 0
        self.last = self.writer.write(step, "train", metrics)
        shown = {"ex_s": f"{metrics['examples_per_s']:.0f}"}
        if self.caps.progress_metric in self.last:
            value = self.last[self.caps.progress_metric]
            shown = {self.caps.progress_metric: f"{value:.4g}", **shown}
        self.bar.set_postfix(shown)
        self.finiteness.raise_pending()  # after the row with the NaN is logged


class _Evals:
    """The configured evaluations: each every ``ev.every`` steps before the last (not when
    stopping), and all of them in ``final``."""

    def __init__(self, evaluators, *, writer, bar, num_steps: int):
        self.evaluators, self.writer, self.bar, self.num_steps = evaluators, writer, bar, num_steps

    def maybe_run(self, step: int, state, *, stopping: bool) -> None:
        for ev in self.evaluators:
            if ev.every and step % ev.every == 0 and step < self.num_steps and not stopping:
                row = self.writer.write(step, ev.split, ev.run(state, False))
                self.bar.write(_format(ev.split, row))

    def final(self, step: int, state) -> dict[str, float]:
        """Every evaluation in its final form; their values, merged."""
        rows = {}
        for ev in self.evaluators:
            row = self.writer.write(step, ev.split, ev.run(state, True))
            rows.update({k: v for k, v in row.items() if k not in ("step", "time", "split")})
        return rows


class _SampleGrids:
    """A grid of ``train.sample_num`` samples in ``samples/`` every ``train.sample_every`` steps
    before the last (not when stopping), and one in ``final``; nothing for a family that does
    not generate. A text model draws the captions of the first test examples."""

    def __init__(self, setup: Setup, workdir: str, test_split=None):
        cfg, mesh, family = setup.config, setup.mesh, setup.family
        self.setup, self.workdir = setup, workdir
        self.every, self.num_steps = cfg.train.sample_every, cfg.train.num_steps
        self.sample_fn = None
        if setup.caps.generates:
            # What sample.py draws when given no flags (the config's sample_defaults).
            kwargs = sampling.prepare(setup, {}, restore=None)
            num = cfg.train.sample_num
            if setup.caps.text and test_split is not None:
                rows = np.arange(num) % test_split.num_examples
                kwargs["text"] = jnp.asarray(test_split.get(rows)["text"])
            self.sample_fn = jax.jit(
                lambda s, r: family.sample(cfg, gather_params(s, mesh), r, num, **kwargs).images,
                out_shardings=replicated(mesh),
            )

    def maybe_run(self, step: int, state, *, stopping: bool) -> None:
        if self.sample_fn is None or not self.every or stopping:
            return
        if step % self.every == 0 and step < self.num_steps:
            self.final(step, state)

    def final(self, step: int, state) -> str | None:
        """The grid's path (on process 0; else, or without a sampler, None)."""
        if self.sample_fn is None:
            return None
        return _sample_grid(self.setup, self.sample_fn, state, step, self.workdir)


def _loop(
    setup: Setup,
    state,
    *,
    workdir: str,
    checkpoints,
    evaluators,
    train_split,
    test_split=None,
    resumed_from: int | None,
    stop_at_step: int | None,
    stop,
    say,
):
    """Run the steps from ``state.step`` to ``train.num_steps``, each followed by the periodic
    actions (train log, evaluations, sample grid, checkpoint, in that order), until the end or a
    stop; then the final checkpoint and, unless stopped, the final evaluations and grid.
    Returns ``(state, summary)``."""
    cfg = setup.config
    is_main = jax.process_index() == 0
    start_step, num_steps = int(state.step), cfg.train.num_steps
    if stop.requested:  # a stop during start-up: nothing trained, nothing to save
        say("stopped before the first step (SIGTERM or Ctrl-C); nothing new was saved")
        return state, {"step": start_step, "stopped_early": True}
    step_fn = compile_train_step(setup)
    bar = tqdm(
        total=num_steps,
        initial=start_step,
        disable=not (cfg.train.progress and is_main),
        dynamic_ncols=True,
        desc="train",
    )
    if resumed_from is not None and is_main:
        bar.write(f"resumed from checkpoint at step {resumed_from} in {workdir}")
    writer = MetricsWriter(workdir)
    finiteness = _Finiteness(cfg.train.get("nonfinite", "stop"))
    saves = _CheckpointSaves(
        checkpoints,
        every=cfg.train.checkpoint_every,
        finiteness=finiteness,
        last_saved=resumed_from,
    )
    log = _TrainLog(
        writer=writer,
        bar=bar,
        finiteness=finiteness,
        saves=saves,
        config=cfg,
        caps=setup.caps,
    )
    evals = _Evals(evaluators, writer=writer, bar=bar, num_steps=num_steps)
    grids = _SampleGrids(setup, workdir, test_split)
    actions = (log, evals, grids, saves)

    prefetch = _Prefetcher(setup, train_split, start_step, num_steps, cfg.train.get("prefetch", 0))
    stopped_early = False
    try:
        for step in range(start_step, num_steps):
            state, metrics, finite = step_fn(state, prefetch.get(step))
            done = step + 1
            log.observe(done, metrics, finite)
            bar.update(1)
            stopping = stop.requested or (stop_at_step is not None and done >= stop_at_step)
            for action in actions:
                action.maybe_run(done, state, stopping=stopping)
            if stopping:
                stopped_early = done < num_steps
                break
    except signals.Interrupted:  # a stop during a periodic eval: save where training is
        stopped_early = True
    finally:
        prefetch.close()
        bar.close()
    final_step = saves.flush(state)
    summary = {"step": final_step, "stopped_early": stopped_early, "train": log.last}
    if finiteness.names is not None and finiteness.policy == "skip":
        summary["skipped_nonfinite"] = finiteness.skipped
    if stopped_early:
        return state, summary
    try:
        final_rows = evals.final(final_step, state)
        if evaluators:
            summary["eval"] = final_rows
        if grids.sample_fn is not None:
            summary["samples"] = grids.final(final_step, state)
    except signals.Interrupted:
        summary["stopped_early"] = True
        say("stopped during the final evaluation; the last checkpoint is saved, run again to "
            "evaluate it")  # fmt: skip
    return state, summary


def evaluate(workdir: str, eval_config=None, devices=None) -> dict[str, float]:
    """Restore the latest checkpoint of ``workdir`` and evaluate it on the first
    ``eval.final_num_examples`` test examples; ``eval_config`` replaces the run's ``eval``
    section when given."""
    config = ckpt_lib.load_config(workdir)
    if eval_config is not None:
        config.eval = eval_config
    setup = make_setup(config, devices, fit_fsdp=True)
    state = restore_state(setup, workdir)
    _, test_split = load_splits(config.data)
    metrics = {}
    for ev in evals_lib.build(setup, test_split):
        metrics.update(ev.run(state, True))
    MetricsWriter(workdir).write(int(state.step), "final_eval", metrics)
    return metrics


def restore_state(setup: Setup, workdir: str, key: str = "--workdir"):
    """The latest good checkpoint of ``workdir``, read without changing anything there;
    ``key`` names where ``workdir`` came from in the messages."""
    checkpoints = ckpt_lib.Checkpointer(
        workdir,
        report=lambda line: print(line, file=sys.stderr, flush=True),
        read_only=True,
    )
    try:
        if checkpoints.latest_step() is None:
            raise ckpt_lib.CheckpointError(
                f"{key}={workdir!r} has no checkpoint in {checkpoints.directory}; train it first "
                "(train.py --workdir=...) or point at a finished run"
            )
        return setup.restore(checkpoints)
    finally:
        checkpoints.close()


def restore_for_inference(workdir: str, devices=None, key: str = "--workdir"):
    """``(setup, state)`` from the latest checkpoint and ``config.json`` of ``workdir``, which
    is only read. ``key``: the flag or config key that named ``workdir``, for the messages."""
    config = ckpt_lib.load_config(workdir, key)
    setup = make_setup(config, devices, need_data=False)
    return setup, restore_state(setup, workdir, key)


def has_checkpoint(workdir: str) -> bool:
    """Whether ``workdir`` holds a checkpoint (read only: creates nothing)."""
    checkpoints = ckpt_lib.Checkpointer(workdir, read_only=True)
    try:
        return checkpoints.latest_step() is not None
    finally:
        checkpoints.close()


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
