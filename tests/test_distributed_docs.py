"""docs/guides/distributed.md against the code: when the engine joins a multi-host run, which
environment variables exist, and what JAX's cluster detection makes of the SLURM, Open MPI and
GKE TPU variables the guide's table lists. Nothing connects or compiles.

The table was read from JAX 0.10's ``jax/_src/clusters``; the detection tests use that private
module and skip on another JAX minor version (update the guide, then the version here).
"""

from __future__ import annotations

import re
from pathlib import Path

import jax
import ml_collections
import pytest
from support import ROOT

from jaxgen.engine import mesh
from jaxgen.engine.config import base_config

GUIDE = ROOT / "docs" / "guides" / "distributed.md"
JAX_MINOR = tuple(int(p) for p in jax.__version__.split(".")[:2])
needs_jax_0_10 = pytest.mark.skipif(
    JAX_MINOR != (0, 10), reason="the guide's table is read from JAX 0.10's cluster detection"
)
ENV_NAME = re.compile(r"\b[A-Z][A-Z0-9]*_[A-Za-z0-9_]*[A-Za-z0-9]\b")
# Every variable a cluster environment reads: cleared so that only the ones a test sets count.
CLUSTER_VARS = (
    "OMPI_MCA_orte_hnp_uri",
    "OMPI_COMM_WORLD_SIZE",
    "OMPI_COMM_WORLD_RANK",
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "SLURM_JOB_ID",
    "SLURM_STEP_NODELIST",
    "SLURM_NTASKS",
    "SLURM_PROCID",
    "SLURM_LOCALID",
    "TPU_WORKER_HOSTNAMES",
    "TPU_PROCESS_ADDRESSES",
    "TPU_WORKER_ID",
    "MEGASCALE_COORDINATOR_ADDRESS",
    "MEGASCALE_NUM_SLICES",
    "MEGASCALE_SLICE_ID",
    "KUBERNETES_SERVICE_HOST",
    "JAX_COORDINATOR_ADDRESS",
    "JAX_COORDINATOR_PORT",
    "JAX_LOCAL_DEVICE_IDS",
)


@pytest.fixture
def no_cluster(monkeypatch):
    for name in CLUSTER_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _detect():
    """What ``jax.distributed.initialize()`` fills in by itself: ``(coordinator, num_processes,
    process_id, local_device_ids)``."""
    from jax._src import clusters

    return clusters.ClusterEnv.auto_detect_unset_distributed_params(None, None, None, None, None, 1)


@pytest.mark.parametrize(
    "distributed, env, joins",
    [
        (False, None, False),
        (True, None, True),
        (False, "1", True),
        (False, "0", False),
        (False, "true", False),  # only "1" asks
    ],
)
def test_the_engine_joins_a_multihost_run_exactly_when_asked(monkeypatch, distributed, env, joins):
    calls = []
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append((a, k)))
    if env is None:
        monkeypatch.delenv("JAXGEN_DISTRIBUTED", raising=False)
    else:
        monkeypatch.setenv("JAXGEN_DISTRIBUTED", env)
    config = ml_collections.ConfigDict({"distributed": distributed})
    mesh.maybe_initialize_distributed(config)
    # With no arguments: JAX finds the coordinator, the count and the id, as the guide says.
    assert calls == ([((), {})] if joins else [])


def test_an_initialised_process_is_left_alone(monkeypatch):
    calls = []
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append(1))
    mesh.maybe_initialize_distributed(ml_collections.ConfigDict({"distributed": True}))
    assert calls == []  # the guide's "call jax.distributed.initialize yourself first" path


def test_the_guides_switches_are_the_codes():
    text = GUIDE.read_text()
    assert "--config.distributed=True" in text and "JAXGEN_DISTRIBUTED=1" in text
    assert base_config().distributed is False  # the key the override sets, off by default
    assert "JAXGEN_DISTRIBUTED" in Path(mesh.__file__).read_text()


def _sources_that_read_the_environment() -> str:
    import jax._src.distributed as jax_distributed

    jax_src = Path(jax_distributed.__file__).parent
    paths = [jax_src / "distributed.py", *sorted((jax_src / "clusters").glob("*.py"))]
    paths += [*sorted((ROOT / "jaxgen").rglob("*.py")), ROOT / "tests" / "conftest.py"]
    return "\n".join(p.read_text() for p in paths)


@needs_jax_0_10
def test_every_variable_the_guide_names_is_one_that_jax_or_jaxgen_reads():
    sources = _sources_that_read_the_environment()
    named = set(ENV_NAME.findall(GUIDE.read_text()))
    assert {
        "SLURM_PROCID",
        "OMPI_COMM_WORLD_RANK",
        "TPU_WORKER_ID",
        "JOB_COMPLETION_INDEX",
    } <= named
    quoted = {n for n in named if f"'{n}'" in sources or f'"{n}"' in sources}
    assert named == quoted, f"named in the guide but read by nothing: {sorted(named - quoted)}"


@needs_jax_0_10
def test_slurm_gives_the_documented_coordinator_count_and_id(no_cluster):
    env = {
        "SLURM_JOB_ID": "1234",
        "SLURM_STEP_NODELIST": "node[003-004],gpu7",
        "SLURM_NTASKS": "16",
        "SLURM_PROCID": "5",
        "SLURM_LOCALID": "1",
    }
    for k, v in env.items():
        no_cluster.setenv(k, v)
    # The first host of SLURM_STEP_NODELIST, port 61440 + SLURM_JOB_ID % 4096; one GPU a task.
    assert _detect() == (f"node003:{61440 + 1234 % 4096}", 16, 5, [1])
    no_cluster.setenv("JAX_COORDINATOR_PORT", "9999")
    assert _detect()[0] == "node003:9999"
    no_cluster.delenv("SLURM_STEP_NODELIST")  # not inside an srun step: nothing is detected
    assert _detect() == (None, None, None, None)


@needs_jax_0_10
def test_open_mpi_gives_the_documented_coordinator_count_and_id(no_cluster):
    no_cluster.setenv("OMPI_MCA_orte_hnp_uri", "1531576320.0;tcp://10.96.0.1,10.148.0.1:34911")
    no_cluster.setenv("OMPI_COMM_WORLD_SIZE", "4")
    no_cluster.setenv("OMPI_COMM_WORLD_RANK", "2")
    no_cluster.setenv("OMPI_COMM_WORLD_LOCAL_RANK", "0")
    coordinator, count, process_id, local = _detect()
    assert coordinator.startswith("10.96.0.1:") and (count, process_id, local) == (4, 2, [0])


@needs_jax_0_10
def test_gke_tpu_gives_the_documented_coordinator_count_and_id(no_cluster):
    from jax._src.clusters import cloud_tpu_cluster

    no_cluster.setattr(cloud_tpu_cluster, "running_in_cloud_tpu_vm", True)
    no_cluster.setenv("TPU_WORKER_HOSTNAMES", "localhost,host-b,host-c,host-d")
    no_cluster.setenv("TPU_WORKER_ID", "2")
    no_cluster.setenv("MEGASCALE_COORDINATOR_ADDRESS", "")  # set, empty: no metadata query
    no_cluster.setenv("MEGASCALE_NUM_SLICES", "2")
    no_cluster.setenv("MEGASCALE_SLICE_ID", "1")
    tpu = cloud_tpu_cluster.GkeTpuCluster
    assert tpu.is_env_present()
    # The first of TPU_WORKER_HOSTNAMES, port 8482; hosts times slices; TPU_WORKER_ID + slice.
    assert tpu.get_coordinator_address(timeout_secs=5, override_coordinator_port=None) == (
        "localhost:8482"
    )
    assert (tpu.get_process_count(), tpu.get_process_id()) == (8, 2 + 1 * 4)


@needs_jax_0_10
def test_plain_hosts_get_no_process_count_from_the_environment(no_cluster):
    """The guide's "not detected" case: JAX reads the coordinator's address but no count or id,
    so a bare ``jax.distributed.initialize()`` stops before connecting."""
    from jax._src.distributed import State

    no_cluster.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    no_cluster.setenv("JAX_NUM_PROCESSES", "2")  # not a variable JAX 0.10 reads
    no_cluster.setenv("JAX_PROCESS_ID", "0")
    assert _detect() == (None, None, None, None)
    with pytest.raises(ValueError, match="Number of processes must be defined"):
        State().initialize()  # a fresh state object: the process's own is untouched
