"""Data: sources that read files offline, and deterministic per-process batching."""

from jaxgen.data.pipeline import (
    batch_indices,
    eval_batches,
    num_eval_examples,
    step_batch,
    train_batch,
)
from jaxgen.data.sources import DataError, Split, load_splits

__all__ = [
    "DataError",
    "Split",
    "batch_indices",
    "eval_batches",
    "load_splits",
    "num_eval_examples",
    "step_batch",
    "train_batch",
]
