"""Checkpoints: the only module that talks to orbax-checkpoint.

Saves are asynchronous, keep the last ``keep`` steps and commit atomically (orbax writes to a
temporary folder and renames it when complete), so a crash never leaves a half-written step that
looks finished. The run's config is stored beside them as ``config.json``.

Integrity. orbax checks no data: a data file with flipped bytes restores silently as garbage
(orbax-checkpoint 0.12 has a crc32c only on the zarr3 shard index, not on the values, and the
default OCDBT layout has none). So every step is *sealed*: once orbax has finalised it (when the
next save starts, on ``wait()`` and on ``close()``), the sha256 and size of each file of the step
folder go to ``<workdir>/checkpoints/checksums/<step>.json`` (written atomically, outside orbax's
step folder; orbax ignores the folder). A step's checksum file is removed when orbax rotates the
step out (stale ones are ignored anyway).

``restore(abstract)`` restores the newest step that passes:

- a sealed step must match its checksum file exactly (every listed file present, same size, same
  sha256), else it is skipped;
- an unsealed step (no checksum file: the process died between orbax's commit and the seal, or
  the step predates checksums) is accepted if it restores and every floating-point value is
  finite. Losing it would throw away good work in the common case (a crash right after a save),
  and finiteness catches the usual symptom of garbage (NaN); it cannot catch every corruption,
  which is what the seal is for;
- a step that cannot be restored (a storage error) is skipped.

Each skipped step gives one line in ``notes`` (and to ``report``), naming its path, what failed
and which step was restored instead; ``restored_step`` says which step that was. When no step
passes, ``CheckpointError`` says so in one line. A checkpoint whose array shapes or tree do not
fit the requested state raises ``CheckpointMismatchError`` at once: earlier steps of the same run
do not fit either. Skipped steps stay on disk until this ``Checkpointer`` saves again; then they
are renamed ``<step>.corrupt`` (orbax would otherwise refuse to save a step number it already
has), so reading a workdir (sampling, evaluation) never changes it.

Storage errors while saving (a full disk, a read-only folder) become one ``CheckpointError`` line
naming the step's path and the OS error; the steps already written stay.

A save that was interrupted (``kill -9`` mid-write) leaves orbax's temporary folder
``<step>.orbax-checkpoint-tmp*``; it never looks finished. A writing ``Checkpointer`` removes
such folders when it opens the workdir and says so in one line (``report``). One opened with
``read_only=True`` (sampling, evaluation, a prior reading its tokenizer) creates, removes and
renames nothing, not even the ``checkpoints`` folder.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from contextlib import contextmanager

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp

from jaxgen.errors import CheckpointError
from jaxgen.files import atomic_write

CONFIG_FILE = "config.json"
CHECKSUM_DIR = "checksums"
_UNFINISHED = re.compile(r"(\d+)\.orbax-checkpoint-tmp.*")  # a save killed mid-write
_MAX_MESSAGE = 380  # characters of a one-line error
_log = logging.getLogger(__name__)


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's arrays do not fit the requested state (another model size or family).
    ``differences`` lists them (``name: stored (a, b), expected (c, d)``); earlier steps of the
    same run do not fit either."""

    def __init__(self, message: str, path: str, differences: list[str]):
        super().__init__(message)
        self.path = path
        self.differences = differences


def save_config(workdir: str, config) -> None:
    if jax.process_index() != 0:
        return
    with atomic_write(os.path.join(workdir, CONFIG_FILE)) as f:
        f.write(config.to_json(indent=2))


def load_config(workdir: str, key: str = "--workdir") -> ml_collections.ConfigDict:
    """The run's ``config.json``; ``key`` names where ``workdir`` came from in the messages."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise CheckpointError(
            f"{path} not found: {key}={workdir!r} holds no jaxgen run; train one with "
            "train.py --workdir=... first"
        )
    try:
        with open(path) as f:
            return ml_collections.ConfigDict(json.load(f))
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not a readable config: {e}") from e


class Checkpointer:
    """Thin wrapper over ``ocp.CheckpointManager`` under ``<workdir>/checkpoints``, with a
    checksum per step. ``report`` receives each note of ``restore`` (one line each); by default
    they are logged at WARNING."""

    def __init__(
        self,
        workdir: str,
        keep: int = 3,
        async_save: bool = True,
        report: Callable[[str], None] | None = None,
        read_only: bool = False,
    ):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        self.checksum_dir = os.path.join(self.directory, CHECKSUM_DIR)
        self.read_only = read_only
        self._report = report if report is not None else _log.warning
        if read_only:
            options = ocp.CheckpointManagerOptions(
                read_only=True, create=False, save_interval_steps=0, max_to_keep=None
            )
            with _quiet("absl"):  # "Given directory is read only": as asked
                # The handler named, so that metadata can be read before any restore.
                self._manager = ocp.CheckpointManager(
                    self.directory, options=options, item_handlers=ocp.StandardCheckpointHandler()
                )
        else:
            self._discard_unfinished_saves()
            options = ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True, enable_async_checkpointing=async_save
            )
            self._manager = ocp.CheckpointManager(
                self.directory, options=options, item_handlers=ocp.StandardCheckpointHandler()
            )
        self._unsealed: set[int] = set()  # saved by this process, not yet sealed
        self._skipped: list[int] = []  # steps the last restore found bad, newest first
        self._closed = False
        self.restored_step: int | None = None
        self.notes: list[str] = []

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def _discard_unfinished_saves(self) -> None:
        """Remove the temporary folders of saves that never completed, one line each (orbax
        would remove them at the next save of that step with a raw warning)."""
        if jax.process_index() != 0 or not os.path.isdir(self.directory):
            return
        for name in sorted(os.listdir(self.directory)):
            match = _UNFINISHED.fullmatch(name)
            if not match:
                continue
            path = os.path.join(self.directory, name)
            try:
                shutil.rmtree(path)
            except OSError as e:
                raise CheckpointError(
                    f"cannot remove the unfinished save {path}: {_describe_os_error(e)}; "
                    "delete it to go on training"
                ) from e
            self._report(
                f"the unfinished save of step {match.group(1)} (interrupted before it completed) "
                f"was discarded: {path}"
            )

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def step_path(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def checksum_path(self, step: int) -> str:
        return os.path.join(self.checksum_dir, f"{step}.json")

    # Saving ------------------------------------------------------------------------------

    def save(self, step: int, state, force: bool = False) -> bool:
        """Start an asynchronous save of ``step`` (as orbax would: skipped unless due or
        ``force``); seals the previous save first. Returns whether a save started."""
        self._set_aside_skipped()
        if not force and not self._manager.should_save(step):
            return False
        self._finish()  # orbax waits for the previous save here anyway; then seal it
        try:
            self._remove_checksum(step)  # a stale one from an earlier step of that number
            saved = self._manager.save(step, args=ocp.args.StandardSave(state), force=force)
        except Exception as e:
            reason = _os_error(e)
            if reason is None:
                raise
            raise CheckpointError(self._save_failed(step, reason)) from e
        if saved:
            self._unsealed.add(step)
        return saved

    def wait(self) -> None:
        """Block until the last save is on disk, and seal it."""
        self._finish()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._finish()
        finally:
            self._manager.close()

    def _finish(self) -> None:
        try:
            self._manager.wait_until_finished()
        except Exception as e:  # the background part of the last save failed
            failed = max(self._unsealed) if self._unsealed else None
            self._unsealed.clear()
            reason = _os_error(e) or _short(e)
            raise CheckpointError(self._save_failed(failed, reason)) from e
        self._seal()

    def _save_failed(self, step: int | None, reason: str) -> str:
        try:
            self._manager.reload()  # orbax forgets steps it meant to rotate out; disk has them
            kept = self.all_steps()
        except Exception:
            kept = "unknown"
        where = self.step_path(step) if step is not None else self.directory
        return f"cannot write checkpoint {where}: {reason}; the steps already saved stay: {kept}"

    def _seal(self) -> None:
        """Write the checksum file of every finalised step saved by this process, and drop the
        checksum files of steps orbax has rotated out."""
        steps, self._unsealed = sorted(self._unsealed), set()
        if jax.process_index() != 0 or self.read_only:
            return
        kept = set(self.all_steps())
        try:
            for step in steps:
                if step in kept and os.path.isdir(self.step_path(step)):
                    self._write_checksum(step)
            self._prune_checksums(kept)
        except OSError as e:
            raise CheckpointError(
                f"cannot write checksums in {self.checksum_dir}: {_describe_os_error(e)}"
            ) from e

    def _write_checksum(self, step: int) -> None:
        record = {"step": step, "algorithm": "sha256", "files": _file_digests(self.step_path(step))}
        with atomic_write(self.checksum_path(step)) as f:
            json.dump(record, f, indent=1, sort_keys=True)

    def _prune_checksums(self, kept: set[int]) -> None:
        if not os.path.isdir(self.checksum_dir):
            return
        for name in os.listdir(self.checksum_dir):
            match = re.fullmatch(r"(\d+)\.json", name)
            # ".tmp": left by a writer that was killed mid-write (jaxgen.files.atomic_path)
            if ".tmp" in name or (match and int(match.group(1)) not in kept):
                os.remove(os.path.join(self.checksum_dir, name))

    def _remove_checksum(self, step: int) -> None:
        path = self.checksum_path(step)
        if jax.process_index() == 0 and os.path.exists(path):
            os.remove(path)

    def _set_aside_skipped(self) -> None:
        """Rename the steps the last restore skipped to ``<step>.corrupt``, so that orbax saves
        those step numbers again instead of refusing (it saves no step <= its latest)."""
        skipped, self._skipped = self._skipped, []
        if not skipped:
            return
        if jax.process_index() == 0:
            for step in skipped:
                src = self.step_path(step)
                if not os.path.isdir(src):
                    continue
                dst, n = src + ".corrupt", 1
                while os.path.exists(dst):
                    dst, n = f"{src}.corrupt-{n}", n + 1
                try:
                    os.rename(src, dst)
                    self._remove_checksum(step)
                except OSError as e:
                    raise CheckpointError(
                        f"cannot move the bad checkpoint {src} aside: {_describe_os_error(e)}; "
                        "move or delete it to go on training"
                    ) from e
                self._report(f"moved the bad checkpoint {src} aside to {dst}")
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("jaxgen_checkpoint_set_aside")
        self._manager.reload()

    # Restoring ---------------------------------------------------------------------------

    def verify(self, step: int) -> str | None:
        """Compare ``step`` with its checksum file. ``None`` when it matches; otherwise one
        line: what is wrong, or that it has no (readable) checksum."""
        sealed, problem = self._check(step)
        return None if sealed and problem is None else problem

    def _check(self, step: int) -> tuple[bool, str | None]:
        """``(sealed, problem)``: sealed is whether a readable checksum file exists; problem is
        why the step fails it (or why it could not be read), ``None`` when it matches."""
        path, name = self.checksum_path(step), f"{CHECKSUM_DIR}/{step}.json"
        if not os.path.exists(path):
            return False, "has no checksum (the process ended before sealing it, or it is older)"
        try:
            with open(path) as f:
                record = json.load(f)
            files = {str(k): (int(v["size"]), str(v["sha256"])) for k, v in record["files"].items()}
            if int(record["step"]) != step:
                raise ValueError(f"it is for step {record['step']}")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            return False, f"has an unreadable checksum file {name} ({_short(e, 80)})"
        root = self.step_path(step)
        for rel, (size, digest) in sorted(files.items()):
            file = os.path.join(root, rel)
            if not os.path.isfile(file):
                return True, f"is corrupt: {rel} is missing"
            try:
                actual = os.path.getsize(file)
                if actual != size:
                    return True, f"is corrupt: {rel} has {actual} bytes, {size} when saved"
                if _sha256(file) != digest:
                    return True, f"is corrupt: {rel} does not match its sha256 ({name})"
            except OSError as e:
                return True, f"is corrupt: {rel} cannot be read ({_describe_os_error(e)})"
        return True, None

    def restore(self, abstract_state, step: int | None = None):
        """Restore into the shapes and shardings of ``abstract_state`` (a pytree of
        ``jax.ShapeDtypeStruct``): ``step``, or by default the newest step that passes its
        checks (see the module's docstring). Sets ``restored_step`` and ``notes``."""
        self._finish()  # a save of this Checkpointer still in flight: finish and seal it
        self.notes, self.restored_step, self._skipped = [], None, []
        if step is not None:
            if step not in self.all_steps():
                raise CheckpointError(
                    f"no checkpoint of step {step} in {self.directory} "
                    f"(kept: {self.all_steps() or 'none'})"
                )
            state, problem, note = self._try(step, abstract_state)
            if problem is not None:
                raise CheckpointError(_one_line(f"checkpoint {self.step_path(step)} {problem}"))
            self._finish_restore(step, note, [])
            return state
        steps = sorted(self.all_steps(), reverse=True)
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        failed: list[tuple[int, str]] = []
        for s in steps:
            state, problem, note = self._try(s, abstract_state)
            if problem is None:
                self._finish_restore(s, note, failed)
                return state
            failed.append((s, problem))
        head = f"no usable checkpoint in {self.directory}: "
        tail = "; move that folder aside or use a new --workdir to start over"
        reasons = "; ".join(f"step {s} {p}" for s, p in failed)
        reasons = _clip(reasons, _MAX_MESSAGE - len(head) - len(tail))
        raise CheckpointError(_one_line(head + reasons + tail))

    def _finish_restore(self, step: int, note: str | None, failed: list[tuple[int, str]]):
        self.restored_step = step
        self._skipped = [s for s, _ in failed]
        lines = []
        for s, p in failed:
            head, tail = f"checkpoint {self.step_path(s)} ", f"; restored step {step} instead"
            lines.append(_one_line(head + _clip(p, _MAX_MESSAGE - len(head) - len(tail)) + tail))
        if note:
            lines.append(_one_line(f"checkpoint {self.step_path(step)} {note}"))
        for line in lines:
            self.notes.append(line)
            self._report(line)

    def _try(self, step: int, abstract_state):
        """``(state, problem, note)``: problem is why the step is unusable (then state is
        ``None``); note is a remark on a usable step. Raises ``CheckpointMismatchError``."""
        sealed, problem = self._check(step)
        if sealed and problem is not None:
            return None, problem, None
        item, rebuild = self._stored_fields(step, abstract_state)
        try:
            state = rebuild(self._manager.restore(step, args=ocp.args.StandardRestore(item)))
        except Exception as e:  # orbax raises many types for unreadable data
            self._raise_if_mismatch(step, abstract_state)
            return None, f"cannot be restored ({_short(e)})", None
        if sealed:
            return state, None, None
        bad = _non_finite(state)
        if bad:
            return None, f"{problem} and {bad} hold NaN or Inf", None
        return state, None, f"{problem}; its values are finite, so it was restored"

    def _stored_fields(self, step: int, abstract_state):
        """``(item, rebuild)``: what to ask orbax for and how to turn it into the state. A
        dataclass state (``State``) whose checkpoint predates some of its fields, each ``None``
        in ``abstract_state`` (a field added later, such as ``constants``), is restored from
        the fields the checkpoint has; anything else as it is."""
        unchanged = (abstract_state, lambda restored: restored)
        if not dataclasses.is_dataclass(abstract_state):
            return unchanged
        try:
            stored = set(self._manager.item_metadata(step).keys())
        except Exception:  # unreadable metadata: let the restore itself say what is wrong
            return unchanged
        names = [f.name for f in dataclasses.fields(abstract_state)]
        absent = [n for n in names if n not in stored]
        if not absent or any(getattr(abstract_state, n) is not None for n in absent):
            return unchanged
        item = {n: getattr(abstract_state, n) for n in names if n in stored}
        return item, lambda restored: dataclasses.replace(abstract_state, **restored)

    def stored_arrays(self, step: int) -> dict[str, tuple | None]:
        """The arrays step ``step`` holds, by dotted name (``players.model.params...``), with
        their shapes; read from its metadata, no values."""
        return _shapes(self._manager.item_metadata(step))

    def _raise_if_mismatch(self, step: int, abstract_state) -> None:
        try:
            differences = _differences(self._manager.item_metadata(step), abstract_state)
        except Exception:  # unreadable metadata: a storage problem, not a mismatch
            return
        if not differences:
            return
        path = self.step_path(step)
        raise CheckpointMismatchError(
            _one_line(
                f"checkpoint {path} does not fit this model ({len(differences)} arrays differ, "
                f"e.g. {differences[0]})"
            ),
            path,
            differences,
        )


def abstract_like(tree, shardings):
    """``ShapeDtypeStruct`` pytree with the given shardings, for restoring."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )


# Helpers -------------------------------------------------------------------------------------


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _file_digests(root: str) -> dict[str, dict]:
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            out[rel] = {"size": os.path.getsize(path), "sha256": _sha256(path)}
    return out


@jax.jit
def _all_finite(leaves):
    return jnp.stack([jnp.isfinite(x).all() for x in leaves])


def _non_finite(state) -> str | None:
    """``None`` when every floating-point leaf is finite, else how many leaves are not."""
    leaves = [
        x
        for x in jax.tree.leaves(state)
        if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)
    ]
    if not leaves:
        return None
    bad = int((~jax.device_get(_all_finite(leaves))).sum())
    return f"{bad} of {len(leaves)} arrays" if bad else None


def _key_name(key) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _shapes(tree) -> dict[str, tuple | None]:
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        shape = getattr(leaf, "shape", None)
        out[".".join(_key_name(k) for k in path)] = None if shape is None else tuple(shape)
    return out


def _differences(stored_tree, abstract_state) -> list[str]:
    """Arrays whose shapes differ, arrays missing on either side; by name."""
    stored, wanted = _shapes(stored_tree), _shapes(abstract_state)
    out = []
    for name, shape in wanted.items():
        if name not in stored:
            out.append(f"{name} is not in the checkpoint")
        elif None not in (shape, stored[name]) and shape != stored[name]:
            out.append(f"{name}: stored {stored[name]}, expected {shape}")
    out += [f"{name} is in the checkpoint only" for name in stored if name not in wanted]
    return out


def _first_line(text: str, limit: int) -> str:
    line = (text.strip().splitlines() or [""])[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _short(e: BaseException, limit: int = 200) -> str:
    """The exception's type and at most ``limit`` characters of its first line."""
    text = _first_line(str(e), limit)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _clip(text: str, limit: int) -> str:
    limit = max(limit, 60)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(text: str) -> str:
    return _clip(" ".join(text.split()), _MAX_MESSAGE)


def _describe_os_error(e: OSError) -> str:
    if e.errno in errno.errorcode:
        return f"{os.strerror(e.errno)} ({errno.errorcode[e.errno]})"
    return _short(e, 120)


def _os_error(e: BaseException) -> str | None:
    """The OS error behind a storage exception, described in a few words: an ``OSError`` in
    the chain, or TensorStore's ``os_error_code='28'`` in the message."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno is not None:
            return _describe_os_error(e)
        match = re.search(r"os_error_code='?(\d+)", str(e))
        if match and int(match.group(1)) in errno.errorcode:
            code = int(match.group(1))
            return f"{os.strerror(code)} ({errno.errorcode[code]})"
        e = e.__cause__ or e.__context__
    return None


@contextmanager
def _quiet(logger_name: str):
    """Hide a logger's warnings for the duration (orbax's notes that repeat what we asked)."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
