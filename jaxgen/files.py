"""Atomic file writes: a reader sees the old file or the whole new one, never half of one.

The one helper for every layer (it imports nothing of jaxgen). A write goes to a temporary file
beside its target, is flushed to disk, and is then renamed onto the target (``os.replace`` is
atomic on POSIX and Windows); if anything fails first, the temporary file is removed and the
target is untouched. Temporary names are unique, so two processes writing one target at once
(test workers, hosts sharing a cache folder) never write into each other's file.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from typing import IO, Any


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary path beside ``path`` for a writer that takes a path (PIL, a ``with open``):
    renamed onto ``path`` when the block ends, removed if the block or the rename fails.

    It keeps ``path``'s extension (``grid.png.<random>.tmp.png``), for writers that choose the
    format by it. Creates the folder.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.{secrets.token_hex(4)}.tmp{os.path.splitext(path)[1]}"
    try:
        yield tmp
        with open(tmp, "rb") as f:  # the data reach the disk before the rename makes them live
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """``open(path, mode)``, atomically (:func:`atomic_path`): ``mode`` is ``"w"`` or ``"wb"``."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode={mode!r} is not 'w' or 'wb'")
    with atomic_path(path) as tmp, open(tmp, mode, **open_kwargs) as f:
        yield f


def target_of(path: str) -> str:
    """The target a temporary path of :func:`atomic_path` stands for (``path`` if it is none):
    for messages that should name the file the user asked for."""
    match = re.fullmatch(r"(.*)\.[0-9a-f]{8}\.tmp(\.[^./]*)?", path, flags=re.DOTALL)
    return match.group(1) if match else path


def unwritable_reason(path: str) -> str | None:
    """Why a file cannot be written at ``path`` (it is a folder, a folder on its way is a file,
    the folder it would go in is not writable), or ``None``. Creates nothing."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        return "is a folder, not a file path"
    folder = os.path.dirname(path)
    while not os.path.exists(folder):  # the nearest folder that exists is where mkdir starts
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        return f"cannot be created: {folder} is a file, not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"cannot be created: {folder} is not writable"
    return None
