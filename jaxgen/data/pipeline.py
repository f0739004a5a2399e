"""Deterministic batching.

Which examples form global batch ``k`` is a pure function of ``(seed, k)``: position
``g = k * B + i`` of the endless stream is element ``g mod N`` of epoch ``g div N``'s
permutation, and each epoch's permutation is seeded by ``(seed, epoch)``. Process ``p`` of ``P``
takes rows ``[p * B / P, (p + 1) * B / P)`` of the global batch. So a run resumed at step ``k``
sees exactly the batches an uninterrupted run would, on any number of hosts.
"""

from __future__ import annotations

import functools

import numpy as np

from jaxgen.data.sources import Split


def _check_processes(global_batch_size: int, process_index: int, process_count: int) -> None:
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} is not in 0..{process_count - 1}")
    if global_batch_size % process_count:
        raise ValueError(
            f"global batch size {global_batch_size} is not divisible by {process_count} processes"
        )


@functools.lru_cache(maxsize=4)
def _epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


def batch_indices(
    seed: int,
    step: int,
    global_batch_size: int,
    num_examples: int,
    process_index: int = 0,
    process_count: int = 1,
) -> np.ndarray:
    """Example indices of this process's share of global batch ``step``."""
    _check_processes(global_batch_size, process_index, process_count)
    local = global_batch_size // process_count
    start = step * global_batch_size + process_index * local
    positions = np.arange(start, start + local, dtype=np.int64)
    epochs, offsets = np.divmod(positions, num_examples)
    out = np.empty(local, np.int64)
    for epoch in np.unique(epochs):
        sel = epochs == epoch
        out[sel] = _epoch_permutation(seed, int(epoch), num_examples)[offsets[sel]]
    return out


def train_batch(
    split: Split, seed: int, step: int, global_batch_size: int, process_index=0, process_count=1
) -> dict[str, np.ndarray]:
    """This process's rows of global training batch ``step``, with their example ``index``."""
    idx = batch_indices(
        seed, step, global_batch_size, split.num_examples, process_index, process_count
    )
    batch = split.get(idx)
    batch["index"] = idx.astype(np.int32)
    return batch


def step_batch(
    split: Split,
    seed: int,
    step: int,
    global_batch_size: int,
    batches_per_step: int = 1,
    process_index=0,
    process_count=1,
) -> dict[str, np.ndarray]:
    """What training step ``step`` consumes: batch ``step`` of the stream, or for ``k > 1``
    batches ``k * step .. k * step + k - 1`` stacked as ``[k, B_local, ...]``. A pure function of
    ``(seed, step)``, so resumed runs see the same data."""
    if batches_per_step == 1:
        return train_batch(split, seed, step, global_batch_size, process_index, process_count)
    parts = [
        train_batch(
            split,
            seed,
            batches_per_step * step + j,
            global_batch_size,
            process_index,
            process_count,
        )
        for j in range(batches_per_step)
    ]
    return {key: np.stack([p[key] for p in parts]) for key in parts[0]}


def eval_batches(
    split: Split, global_batch_size: int, num_examples: int = 0, process_index=0, process_count=1
):
    """This process's rows of sequential, unshuffled global batches over the first
    ``num_examples`` (0: all) examples: process ``p`` of ``P`` takes rows
    ``[p * B / P, (p + 1) * B / P)`` of each, as in training.

    The count is rounded down to a whole number of global batches so every batch has the same
    shape (one compiled eval step); ``num_eval_examples`` tells how many examples that keeps.
    """
    _check_processes(global_batch_size, process_index, process_count)
    total = split.num_examples if num_examples <= 0 else min(num_examples, split.num_examples)
    local = global_batch_size // process_count
    for b in range(total // global_batch_size):
        start = b * global_batch_size + process_index * local
        idx = np.arange(start, start + local)
        batch = split.get(idx)
        batch["index"] = idx.astype(np.int32)
        yield batch


def num_eval_examples(split: Split, global_batch_size: int, num_examples: int = 0) -> int:
    total = split.num_examples if num_examples <= 0 else min(num_examples, split.num_examples)
    return (total // global_batch_size) * global_batch_size
