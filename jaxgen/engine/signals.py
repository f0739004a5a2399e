"""SIGTERM and Ctrl-C as a request to stop cleanly, at every phase of a run.

``StopFlag`` installs handlers that set one process-wide event instead of killing the process;
the training loop checks it after every step (and saves), evaluations between batches, and the
start-up phases between their parts. Nested use is fine: the outermost one restores the
previous handlers.
"""

from __future__ import annotations

import signal
import threading

STOP = threading.Event()


class Interrupted(Exception):
    """Raised where a stop request ends work that cannot be saved halfway (an evaluation)."""


def requested() -> bool:
    return STOP.is_set()


def check() -> None:
    """Raise ``Interrupted`` if a stop was requested."""
    if STOP.is_set():
        raise Interrupted("stop requested (SIGTERM or Ctrl-C)")


class StopFlag:
    """Context manager: while inside, SIGTERM and SIGINT set ``STOP``."""

    _depth = 0

    def __init__(self):
        self._old = {}

    @property
    def requested(self) -> bool:
        return STOP.is_set()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, _handle)
        if StopFlag._depth == 0:
            STOP.clear()
        StopFlag._depth += 1
        return self

    def __exit__(self, *exc):
        StopFlag._depth -= 1
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        if StopFlag._depth == 0:
            STOP.clear()


def _handle(signum, frame):
    del signum, frame
    STOP.set()
