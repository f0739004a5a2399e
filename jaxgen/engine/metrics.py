"""``metrics.jsonl``: one JSON object per line with ``step``, ``time`` (s since start), ``split``
and the metric values. Written by process 0 only."""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np


class MetricsWriter:
    def __init__(self, workdir: str, start_time: float | None = None):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.start = time.time() if start_time is None else start_time
        self._enabled = jax.process_index() == 0

    def write(self, step: int, split: str, metrics: dict) -> dict:
        row = {"step": int(step), "time": round(time.time() - self.start, 3), "split": split}
        row.update({k: float(np.asarray(v)) for k, v in metrics.items()})
        if self._enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")
        return row


def read_metrics(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
