"""Pieces the throughput benchmarks share: loading a config file, random batches of its shape,
timing a family's jitted train step, and running one case in its own subprocess (so that its
peak resident memory is its own).

Not a benchmark itself; ``bench/*_throughput.py`` import it in their child processes.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(path: str, arg: str | None):
    """``get_config(arg)`` of the config file ``path`` (relative to the repository root), e.g.
    ``load_config("configs/vae.py", "mnist,tiny")``. Config files import
    ``jaxgen.configs.common``, so the repository root goes on ``sys.path`` first."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    spec = importlib.util.spec_from_file_location("bench_config", os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def batch_maker(config, seed: int = 0, num_classes: int = 10):
    """``batch(n)``: random uint8 images of the config's shape, labels and example indices."""
    import numpy as np

    rng = np.random.default_rng(seed)

    def batch(n: int = config.train.batch_size) -> dict:
        return {
            "image": rng.integers(0, 256, (n, *config.data.image_shape), dtype=np.uint8),
            "label": rng.integers(0, num_classes, (n,), dtype=np.int32),
            "index": np.arange(n, dtype=np.int32),
        }

    return batch


def time_train_step(config, seconds: float):
    """Compile the family's train step, run 3 warm-up steps, then as many as fit in
    ``seconds`` on 8 pre-made batches. Returns ``(state, figures)``; data loading is not timed."""
    import jax

    from jaxgen.families import get_family

    family = get_family(config.family)
    batch = batch_maker(config)
    b = config.train.batch_size
    state = family.init(config, jax.random.PRNGKey(0), batch())
    step = jax.jit(functools.partial(family.train_step, config), donate_argnums=0)
    t0 = time.perf_counter()
    state, metrics = step(state, batch())
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - t0
    for _ in range(3):
        state, metrics = step(state, batch())
    jax.block_until_ready(metrics)
    batches = [batch() for _ in range(8)]
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        state, metrics = step(state, batches[n % 8])
        n += 1
        if n % 8 == 0:
            jax.block_until_ready(metrics)
    jax.block_until_ready(metrics)
    dt = time.perf_counter() - t0
    return state, {
        "steps": n,
        "seconds": dt,
        "examples_per_s": n * b / dt,
        "batch": b,
        "compile_s": compile_s,
    }


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(code: str, *args: str) -> dict:
    """Run ``code`` in a fresh CPU-only Python (with ``bench/`` importable) and return the JSON
    object its last output line holds."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.path.join(ROOT, "bench"), ROOT, env.get("PYTHONPATH", "")) if p
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])
