"""The device mesh and the shardings of state and batches.

The mesh has two axes, ``data`` and ``fsdp`` (``make_mesh``): ``fsdp`` devices hold one copy of
the train state between them (each large array is split over them, ``state_shardings``), and the
``data`` axis repeats that group. With ``fsdp = 1`` (the default) the state is replicated on
every device, the layout of a plain data-parallel run.

Batches are split along their batch axis (the leading axis, or the second for a family that
takes ``k`` batches a step as ``[k, B, ...]``) over every device, ``data`` x ``fsdp``. On several
hosts each process feeds its own rows and ``jax.make_array_from_process_local_data`` assembles
the global batch: the mesh orders devices by process, so process ``p`` of ``P`` owns rows
``[p * B / P, (p + 1) * B / P)``, the rows ``jaxgen.data.batch_indices`` gives it.

A jitted step that takes an ``fsdp``-sharded state calls ``gather_params`` first: the
parameters are all-gathered for the computation and only stored sharded (and that also steers
clear of a wrong result XLA's CPU backend gives for some sharded convolutions; see there).
"""

from __future__ import annotations

import math
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"


def maybe_initialize_distributed(config) -> None:
    """Join a multi-host run when the config or the environment asks for one.

    ``jax.distributed.initialize()`` reads the coordinator address, process count and id from
    the cluster environment (TPU pods, SLURM, Open MPI, GKE). On plain hosts JAX reads only
    ``JAX_COORDINATOR_ADDRESS``; docs/guides/distributed.md says what to set there.
    """
    asked = config.get("distributed", False) or os.environ.get("JAXGEN_DISTRIBUTED") == "1"
    if asked and not jax.distributed.is_initialized():
        jax.distributed.initialize()


def make_mesh(devices=None, fsdp: int = 1) -> Mesh:
    """A ``(data, fsdp)`` mesh over ``devices`` (default: all of them, on every host), with
    ``fsdp`` devices on the second axis and the rest on ``data``.

    Devices are ordered by process, then id, so that each process's devices form one block of
    the row-major order: batch rows split over ``(data, fsdp)`` then belong to processes in
    order, which is what ``global_batch`` and the data pipeline assume. The ``fsdp`` groups are
    consecutive devices, so they stay within a host when the host's device count allows.
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("make_mesh: no devices")
    if not isinstance(fsdp, int) or isinstance(fsdp, bool) or fsdp < 1:
        raise ValueError(f"make_mesh: fsdp={fsdp!r} must be a positive integer")
    if len(devices) % fsdp:
        raise ValueError(
            f"make_mesh: fsdp={fsdp} does not divide the {len(devices)} devices; use a divisor "
            f"of {len(devices)}"
        )
    devices.sort(key=lambda d: (d.process_index, d.id))
    grid = np.array(devices, dtype=object).reshape(len(devices) // fsdp, fsdp)
    return Mesh(grid, (DATA_AXIS, FSDP_AXIS))


def fsdp_size(mesh: Mesh) -> int:
    """Devices on the ``fsdp`` axis (1 for a mesh without one)."""
    return int(dict(mesh.shape).get(FSDP_AXIS, 1))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
    """The mesh axes a batch is split over: every device. ``("data",)`` when ``fsdp`` has one
    device (the same layout, and the same ``PartitionSpec("data")`` as a 1-D mesh's)."""
    names = tuple(mesh.axis_names)
    if FSDP_AXIS in names and fsdp_size(mesh) == 1:
        names = tuple(n for n in names if n != FSDP_AXIS)
    return names


def batch_sharding(mesh: Mesh, batches_per_step: int = 1) -> NamedSharding:
    """Rows split over ``data`` x ``fsdp``: axis 0 of ``[B, ...]``, or axis 1 of
    ``[k, B, ...]``."""
    axes = batch_axes(mesh)
    if batches_per_step > 1:
        return NamedSharding(mesh, PartitionSpec(None, axes))
    return NamedSharding(mesh, PartitionSpec(axes))


def global_batch(local_batch: dict, mesh: Mesh, batches_per_step: int = 1) -> dict:
    """Host-local numpy rows -> global ``jax.Array`` batch split over every device (along the
    batch axis: the second one of a ``[k, B, ...]`` stack)."""
    sharding = batch_sharding(mesh, batches_per_step)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
        for k, v in local_batch.items()
    }


def shard_spec(shape, dtype, fsdp: int, min_size: int) -> PartitionSpec:
    """Where one array of the state goes: split over ``fsdp`` along its largest dimension that
    ``fsdp`` divides (the last of equal ones) when it has at least ``min_size`` elements, else
    replicated. PRNG key arrays, scalars and arrays with no such dimension are replicated."""
    shape = tuple(shape)
    if fsdp <= 1 or not shape or math.prod(shape) < min_size:
        return PartitionSpec()
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return PartitionSpec()
    candidates = [i for i, n in enumerate(shape) if n % fsdp == 0 and n >= fsdp]
    if not candidates:
        return PartitionSpec()
    axis = max(candidates, key=lambda i: (shape[i], i))
    return PartitionSpec(*([None] * axis), FSDP_AXIS)


def state_shardings(abstract_state, mesh: Mesh, min_size: int = 2**16):
    """A ``NamedSharding`` for every leaf of ``abstract_state`` (arrays or
    ``jax.ShapeDtypeStruct``): arrays of at least ``min_size`` elements are split over the
    mesh's ``fsdp`` axis along their largest dimension it divides (``shard_spec``); the rest
    (the step, RNG keys, biases, scalars of the optimiser) are replicated. Every ``data`` row of
    the mesh holds a whole copy. With ``fsdp = 1`` everything is replicated."""
    fsdp = fsdp_size(mesh)

    def one(leaf):
        shape = getattr(leaf, "shape", ())
        dtype = getattr(leaf, "dtype", None)
        return NamedSharding(mesh, shard_spec(shape, dtype, fsdp, min_size))

    return jax.tree.map(one, abstract_state)


OPTIMIZER_KEY = "opt_state"  # the field of ``TrainState`` that ``gather_params`` leaves sharded


def gather_params(state, mesh: Mesh):
    """Inside a jitted step: ``state`` with every array except the optimiser's (anything under
    an ``opt_state`` field) constrained to be replicated, so the parameters are all-gathered
    once at the start and each layer computes with whole weights on its rows of the batch
    (FSDP, "ZeRO-3"). The optimiser state stays sharded, so the update runs on each device's
    slice, and the step's ``out_shardings`` shard the new parameters again.

    Without it XLA is free to partition a layer along a parameter's sharded axis, which is
    slower and, on XLA's CPU backend in jax 0.10, wrong: a convolution whose input comes from
    a dense layer with its output axis split over ``fsdp = 2`` on a mesh with ``data > 1``
    gives wrong values (both partitioners; ``fsdp = 4`` is right). See
    ``tests/test_fsdp.py::test_gathered_parameters_avoid_a_wrong_sharded_convolution`` and
    docs/notes/cpu.md#sharded-convolutions-gather-the-parameters.
    A no-op when ``fsdp = 1``.
    """
    if fsdp_size(mesh) == 1:
        return state
    whole = NamedSharding(mesh, PartitionSpec())

    def one(path, x):
        if any(_key_name(k) == OPTIMIZER_KEY for k in path):
            return x
        return jax.lax.with_sharding_constraint(x, whole)

    return jax.tree_util.tree_map_with_path(one, state)


def _key_name(key) -> str:
    for attr in ("name", "key"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)
