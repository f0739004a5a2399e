"""Helpers shared by the test files: config loading, offline data, state comparison and
running the command-line tools. Test files import from here, never from each other."""

from __future__ import annotations

import functools
import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.py") if p.stem not in ("__init__", "common"))

# CI sets JAXGEN_REQUIRE_DATA=1 (.ci/run): there the real MNIST and Fashion-MNIST files must be
# read, and a test that would fall back to procedural data fails instead.
REQUIRE_DATA = os.environ.get("JAXGEN_REQUIRE_DATA") == "1"


def config_module(path):
    """A config file as a module: ``get_config``, ``DATASETS`` and ``VARIANTS``."""
    spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_config(path, arg=None):
    """``get_config(arg)`` of a config file, as ``--config=path:arg`` would give it."""
    return config_module(path).get_config(arg)


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


def leaves(tree) -> list:
    """Every leaf of a pytree as a host numpy array, in tree order (for exact comparisons)."""
    import jax
    import numpy as np

    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


def trees_equal(a, b) -> bool:
    """Whether two pytrees have the same structure and bit-identical leaves."""
    import numpy as np

    la, lb = leaves(a), leaves(b)
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb, strict=True))


def run_steps(config, devices, num_steps):
    """``num_steps`` jitted, sharded train steps of ``config``'s family over ``devices`` on the
    deterministic data stream; returns the state and the last step's metrics."""
    import jax

    from jaxgen.data import load_splits, train_batch
    from jaxgen.engine import loop
    from jaxgen.engine.mesh import batch_sharding, global_batch, replicated

    setup = loop.make_setup(config, devices)
    state = setup.init_state()
    step_fn = jax.jit(
        functools.partial(setup.family.train_step, config),
        in_shardings=(setup.state_sharding, batch_sharding(setup.mesh)),
        out_shardings=(setup.state_sharding, replicated(setup.mesh)),
        donate_argnums=0,
    )
    train, _ = load_splits(config.data)
    for k in range(num_steps):
        batch = global_batch(
            train_batch(train, config.seed, k, config.train.batch_size), setup.mesh
        )
        state, metrics = step_fn(state, batch)
    return state, jax.device_get(metrics)


def run_script(script, *args, timeout=300) -> subprocess.CompletedProcess:
    """``python <script> args...`` from the repository root, as a user runs it."""
    return subprocess.run(
        [sys.executable, script, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def train_tiny(config_file, arg, workdir, **overrides) -> str:
    """Train ``configs/<config_file>:<arg>`` into ``workdir`` in this process, with
    ``section__key=value`` overrides; returns the workdir (a finished run to sample or read)."""
    from jaxgen.engine import loop

    config = load_config(ROOT / "configs" / config_file, arg)
    for key, value in overrides.items():
        section, name = key.split("__")
        config[section][name] = value
    config.train.progress = False
    loop.train_and_evaluate(config, str(workdir))
    return str(workdir)
