"""The device mesh and the shardings of state and batches.

One mesh axis, ``data``: batches are split along their leading axis over it and the train state
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


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
    """Host-local numpy rows -> global ``jax.Array`` batch sharded over ``data``."""
    sharding = batch_sharding(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
        for k, v in local_batch.items()
    }
