"""Checkpoints: the only module that talks to orbax-checkpoint.

Saves are asynchronous, keep the last ``keep`` steps and commit atomically (orbax writes to a
temporary folder and renames it when complete), so a crash never leaves a half-written step that
looks finished. The run's config is stored beside them as ``config.json``.
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections
import orbax.checkpoint as ocp

from jaxgen.errors import CheckpointError

CONFIG_FILE = "config.json"


def save_config(workdir: str, config) -> None:
    if jax.process_index() != 0:
        return
    os.makedirs(workdir, exist_ok=True)
    tmp = os.path.join(workdir, CONFIG_FILE + ".tmp")
    with open(tmp, "w") as f:
        f.write(config.to_json(indent=2))
    os.replace(tmp, os.path.join(workdir, CONFIG_FILE))


def load_config(workdir: str) -> ml_collections.ConfigDict:
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise CheckpointError(
            f"{path} not found: --workdir={workdir!r} holds no jaxgen run; train one with "
            "train.py --workdir=... first"
        )
    try:
        with open(path) as f:
            return ml_collections.ConfigDict(json.load(f))
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not a readable config: {e}") from e


class Checkpointer:
    """Thin wrapper over ``ocp.CheckpointManager`` under ``<workdir>/checkpoints``."""

    def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state, force: bool = False) -> bool:
        return self._manager.save(step, args=ocp.args.StandardSave(state), force=force)

    def restore(self, abstract_state, step: int | None = None):
        """Restore ``step`` (default: latest) into the shapes and shardings of
        ``abstract_state`` (a pytree of ``jax.ShapeDtypeStruct``)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        try:
            return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
        except Exception as e:  # orbax raises many types for unreadable data
            path = os.path.join(self.directory, str(step))
            others = [s for s in self.all_steps() if s != step]
            raise CheckpointError(
                f"checkpoint {path} cannot be restored ({type(e).__name__}: {e}). It is corrupt "
                f"or from a different config. Move that folder aside to resume from an earlier "
                f"step ({others or 'none kept'}), or use a new --workdir."
            ) from e

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def abstract_like(tree, shardings):
    """``ShapeDtypeStruct`` pytree with the given shardings, for restoring."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )
