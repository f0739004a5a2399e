"""The device mesh and the shardings of state and batches.

One mesh axis, ``data``: batches are split along their batch axis over it (the leading axis, or
the second for a family that takes ``k`` batches a step as ``[k, B, ...]``) and the train state
is replicated. On several hosts each process feeds its own rows and
``jax.make_array_from_process_local_data`` assembles the global batch.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def maybe_initialize_distributed(config) -> None:
    """Join a multi-host run when the config or the environment asks for one.

    ``jax.distributed.initialize()`` reads the coordinator address, process count and id from
    the cluster environment (TPU pods, SLURM, Open MPI) or from the ``JAX_COORDINATOR_ADDRESS``
    / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID`` variables.
    """
    asked = config.get("distributed", False) or os.environ.get("JAXGEN_DISTRIBUTED") == "1"
    if asked and not jax.distributed.is_initialized():
        jax.distributed.initialize()


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all of them, on every host)."""
    devices = list(jax.devices() if devices is None else devices)
    return Mesh(np.array(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, batches_per_step: int = 1) -> NamedSharding:
    """Rows split over ``data``: axis 0 of ``[B, ...]``, or axis 1 of ``[k, B, ...]``."""
    if batches_per_step > 1:
        return NamedSharding(mesh, PartitionSpec(None, DATA_AXIS))
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def global_batch(local_batch: dict, mesh: Mesh, batches_per_step: int = 1) -> dict:
    """Host-local numpy rows -> global ``jax.Array`` batch sharded over ``data`` (along the
    batch axis: the second one of a ``[k, B, ...]`` stack)."""
    sharding = batch_sharding(mesh, batches_per_step)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
        for k, v in local_batch.items()
    }
