"""Test setup: 8 fake CPU devices (set before JAX is imported) and shared helpers."""

import os

# --xla_backend_optimization_level=0: the suite's programs are tiny and run a few steps, so
# compiling dominates; without LLVM's optimisation passes XLA CPU compiles them several times
# faster (docs/notes/cpu.md#threefry-compile-time).
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _cpu_flags_of_the_tools() -> None:
    """The XLA CPU flags train.py and sample.py run with (jaxgen.xla_cpu), so that the suite
    computes as its CLI subprocesses do. Loaded by path: the checkout is not on sys.path yet."""
    import importlib.util

    path = pathlib.Path(__file__).resolve().parents[1] / "jaxgen" / "xla_cpu.py"
    spec = importlib.util.spec_from_file_location("_jaxgen_xla_cpu", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.configure()


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


import pathlib  # noqa: E402

_cpu_flags_of_the_tools()
_share_compilations()
import sys  # noqa: E402

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# The repository root, so that `jaxgen` and `tests.two_player_family` import from this checkout.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from support import ROOT, load_config  # noqa: E402

# Hypothesis profiles, chosen by HYPOTHESIS_PROFILE: `dev` (the default, `make test`) tries a few
# examples per property; `ci` (`make test-all`, .ci/run) tries more. Tests set no max_examples.
settings.register_profile("dev", max_examples=8, deadline=None, database=None)
settings.register_profile("ci", max_examples=25, deadline=None, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# The tiers (markers registered in pyproject.toml). `make test` deselects all three.
TIERS = ("slow", "cli", "multihost")
SLOW_UNMARKED_S = 5.0
_durations: dict[str, float] = {}
_unmarked: set[str] = set()


def pytest_runtest_logreport(report):
    """Add up each test's setup, call and teardown time (reports reach the xdist controller)."""
    _durations[report.nodeid] = _durations.get(report.nodeid, 0.0) + report.duration
    if not any(tier in report.keywords for tier in TIERS):
        _unmarked.add(report.nodeid)


def pytest_terminal_summary(terminalreporter):
    """Name the unmarked tests that took longer than the fast tier allows: mark them `slow`."""
    late = sorted(
        ((t, n) for n, t in _durations.items() if n in _unmarked and t > SLOW_UNMARKED_S),
        reverse=True,
    )
    if late:
        terminalreporter.section(f"unmarked tests over {SLOW_UNMARKED_S:.0f} s: mark them slow")
        for seconds, nodeid in late:
            terminalreporter.line(f"{seconds:6.1f} s  {nodeid}")


@pytest.fixture
def tiny_vae_config():
    """The tiny VAE config on procedural 16x16 shapes: fast and needs no files."""
    config = load_config(ROOT / "configs" / "vae.py", "mnist,tiny")
    config.data.source = "shapes"
    config.data.image_shape = (16, 16, 1)
    config.data.num_train, config.data.num_test = 256, 64
    return config
