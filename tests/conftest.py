"""Test setup: 8 fake CPU devices (set before JAX is imported) and shared helpers."""

import os

# --xla_backend_optimization_level=0: the suite's programs are tiny and run a few steps, so
# compiling dominates; without LLVM's optimisation passes XLA CPU compiles them several times
# faster (a jax.random.normal of 1,152 elements under JAX 0.10's partitionable threefry took 11 s
# to compile, 0.3 s without them) and the whole suite ran in 21 minutes instead of 34 on 2 cores.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _share_compilations() -> None:
    """One persistent XLA compilation cache for this test session: the pytest-xdist workers and
    the train.py / sample.py subprocesses inherit its folder, so a step the suite has compiled
    once (the same tiny config, jitted again by another test or process) loads instead of
    compiling again. Fresh per session, removed at the end."""
    import atexit
    import shutil
    import tempfile

    if "JAX_COMPILATION_CACHE_DIR" in os.environ:  # a worker: the controller made it
        return
    folder = tempfile.mkdtemp(prefix="jaxgen-tests-xla-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = folder
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    # No size limit (-1): with a limit, JAX takes a file lock and re-reads every entry's access
    # time on each write, which grew quadratically with the suite (46 min instead of 11 on 2
    # cores). Two workers writing one key at once write the same bytes; a torn read is reported
    # by JAX as a warning and compiled afresh.
    os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"] = "-1"
    atexit.register(shutil.rmtree, folder, ignore_errors=True)


_share_compilations()

import importlib.util  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.py") if p.stem not in ("__init__", "common"))


def config_module(path):
    """A config file as a module: ``get_config``, ``DATASETS`` and ``VARIANTS``."""
    spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_config(path, arg=None):
    """``get_config(arg)`` of a config file, as ``--config=path:arg`` would give it."""
    return config_module(path).get_config(arg)


# CI sets JAXGEN_REQUIRE_DATA=1 (.ci/run): there the real MNIST and Fashion-MNIST files must be
# read, and a test that would fall back to procedural data fails instead.
REQUIRE_DATA = os.environ.get("JAXGEN_REQUIRE_DATA") == "1"


def require_data(path) -> bool:
    """Whether ``path`` exists; under ``JAXGEN_REQUIRE_DATA=1`` a missing one fails the test."""
    if not os.path.exists(path) and REQUIRE_DATA:
        pytest.fail(f"{path} is missing but JAXGEN_REQUIRE_DATA=1: real data must be used here")
    return os.path.exists(path)


def offline_data(config):
    """Point a config at procedural data when its real data is not on this machine (an error
    under ``JAXGEN_REQUIRE_DATA=1`` for MNIST and Fashion-MNIST; CIFAR-10 through TFDS is not
    on these machines, so its configs always fall back)."""
    if config.data.source == "tfds" and not os.path.exists(config.data.path):
        config.data.source = "shapes"
    elif config.data.source in ("idx", "npz", "image_folder") and not require_data(
        config.data.path
    ):
        config.data.source = "shapes"
        config.data.num_train, config.data.num_test = 256, 64
    return config


@pytest.fixture
def tiny_vae_config():
    """The tiny VAE config on procedural 16x16 shapes: fast and needs no files."""
    config = load_config(ROOT / "configs" / "vae.py", "mnist,tiny")
    config.data.source = "shapes"
    config.data.image_shape = (16, 16, 1)
    config.data.num_train, config.data.num_test = 256, 64
    return config
