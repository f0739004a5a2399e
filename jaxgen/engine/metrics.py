"""``metrics.jsonl``: one JSON object per line with ``step``, ``time`` (s since start), ``split``
and the metric values. Written by process 0 only.

Strict JSON: a NaN or infinite value is written as ``null`` and its name listed under
``nonfinite``, so every line parses with strict readers. A run resumed from step ``s`` first drops
the rows after ``s`` that a killed process had written, so no step appears twice.
"""

from __future__ import annotations

import json
import math
import os
import time

import jax
import numpy as np

from jaxgen.files import atomic_write


class MetricsWriter:
    def __init__(self, workdir: str, start_time: float | None = None):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.start = time.time() if start_time is None else start_time
        self._enabled = jax.process_index() == 0

    def write(self, step: int, split: str, metrics: dict) -> dict:
        """Append one row; returns it with the values as floats (NaN where not finite)."""
        row = {"step": int(step), "time": round(time.time() - self.start, 3), "split": split}
        row.update({k: float(np.asarray(v)) for k, v in metrics.items()})
        if self._enabled:
            bad = sorted(k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v))
            strict = {k: (None if k in bad else v) for k, v in row.items()}
            if bad:
                strict["nonfinite"] = bad
            with open(self.path, "a") as f:
                f.write(json.dumps(strict, allow_nan=False) + "\n")
        return row

    def drop_after(self, step: int) -> int:
        """Remove rows with a step after ``step`` (left by a run that died after its last
        checkpoint); returns how many were removed. Rewrites the file atomically."""
        if not self._enabled or not os.path.exists(self.path):
            return 0
        with open(self.path) as f:
            lines = [line for line in f if line.strip()]
        keep = [line for line in lines if _step_of(line) <= step]
        if len(keep) != len(lines):
            with atomic_write(self.path) as f:
                f.writelines(keep)
        return len(lines) - len(keep)


def _step_of(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf  # a torn last line from a killed writer


def read_metrics(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
