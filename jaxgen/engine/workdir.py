"""The run's folder: checked before anything is written, and held by one writer at a time.

``prepare`` creates ``--workdir`` or explains in one line why it cannot (a file is in the way,
the folder is read-only). ``Lock`` is a lock file, ``<workdir>/.lock``, holding the owner's host
and process id: a second ``train.py`` on the same workdir stops with a message naming the owner;
a lock left by a process that is gone (``kill -9``, a crash) is taken over, with a message.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time

import jax

from jaxgen.errors import ConfigError

LOCK_FILE = ".lock"


def prepare(workdir: str) -> None:
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ConfigError(f"--workdir={workdir!r} is a file, not a folder; give a folder path")
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--workdir={workdir!r} cannot be created: {e.strerror}") from e
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise ConfigError(f"--workdir={workdir!r} is not writable; give a folder you can write")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lock:
    """``with Lock(workdir):`` one training process per workdir (process 0 of a multi-host run
    holds it for all). ``notes`` collects what a caller may want to print (a stale lock taken)."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, LOCK_FILE)
        self.notes: list[str] = []
        self._held = False

    def __enter__(self):
        """Process 0 takes the lock; in a multi-process run every process then learns whether
        it did, so that all of them stop with the same error instead of the others going on
        into the first collective and failing there without a message."""
        error = None
        if jax.process_index() == 0:
            try:
                self._take()
            except (ConfigError, OSError) as e:
                error = e
        if jax.process_count() > 1:
            import numpy as np
            from jax.experimental import multihost_utils

            failed = multihost_utils.broadcast_one_to_all(np.int32(error is not None))
            if int(failed) and error is None:
                raise ConfigError(
                    f"process 0 could not take the lock {self.path} of "
                    f"--workdir={os.path.dirname(self.path)!r}; its output says why"
                )
        if error is not None:
            raise error
        return self

    def _take(self) -> None:
        me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is None or (owner.get("host") == me["host"] and not _alive(owner["pid"])):
                    who = "unreadable" if owner is None else f"pid {owner['pid']}, gone"
                    self.notes.append(f"took over a stale lock in {self.path} ({who})")
                    try:
                        os.remove(self.path)
                    except FileNotFoundError:
                        pass
                    continue
                raise ConfigError(
                    f"--workdir={os.path.dirname(self.path)!r} is in use by pid {owner['pid']} "
                    f"on {owner['host']} (lock file {self.path}); wait for it, stop it, or use "
                    "another --workdir"
                ) from None
            except OSError as e:
                if e.errno in (errno.EROFS, errno.EACCES):
                    message = f"cannot write the lock file {self.path}: {e.strerror}"
                    raise ConfigError(message) from e
                raise
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self._held = True
            return
        raise ConfigError(f"could not take the lock {self.path}; another process keeps taking it")

    def _owner(self):
        try:
            with open(self.path) as f:
                owner = json.load(f)
            return owner if isinstance(owner.get("pid"), int) else None
        except (OSError, ValueError, AttributeError):
            return None

    def __exit__(self, *exc):
        if self._held:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
            self._held = False
