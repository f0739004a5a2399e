"""XLA's CPU backend set up for jaxgen's models: which library runs the convolutions, and how the
compiled step's operations are scheduled. ``docs/notes/cpu.md`` says why, with the numbers.

``configure()`` adds jaxgen's flags to ``XLA_FLAGS``. It must run before JAX creates its CPU
backend (the first array or ``jax.devices()``): ``train.py``, ``sample.py`` and
``python -m jaxgen.eval`` call it first in their ``run()`` (through ``cli.prepare_process``), and
their imports make no array (``tests/test_xla_cpu.py`` checks); code that imports jaxgen as a
library calls it before its first array, or not at all. The flags only touch the CPU backend, so
on an accelerator they change nothing but the host-side work. A flag the user has set already
in ``XLA_FLAGS`` is kept as set; ``JAXGEN_XLA_CPU=0`` adds none.

The flags are XLA's own (``experimental`` in their names), and XLA aborts on a flag it does not
know, so they are added only for the jaxlib versions they were measured with.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

# jaxlib (major, minor) -> flags. Measured with jaxlib 0.10.2 on a 2-core AMD EPYC
# (bench/cpu_peer.py, bench/results/cpu_perf_notes.md).
FLAGS: dict[tuple[int, int], dict[str, str]] = {
    (0, 10): {
        # Convolutions through XNNPACK instead of YNNPACK, which runs the small convolutions of
        # these networks on one thread. (Dots through XNNPACK too made the GPT prior's step
        # 15-20% slower; without YNNPACK they are XLA's own.)
        "xla_cpu_experimental_ynn_fusion_type": "",
        "xla_cpu_experimental_xnn_fusion_type": "individual_convolution",
        # Independent operations (a backward convolution's two gradients, the two branches of
        # a residual block) may run at the same time on different cores.
        "xla_cpu_enable_concurrency_optimized_scheduler": "true",
    },
}

OPT_OUT = "JAXGEN_XLA_CPU"


def _jaxlib_version() -> tuple[int, int] | None:
    from importlib import metadata

    try:
        major, minor = metadata.version("jaxlib").split(".")[:2]
        return int(major), int(minor)
    except (metadata.PackageNotFoundError, ValueError):
        return None


def flags_for(version: tuple[int, int] | None) -> dict[str, str]:
    """jaxgen's CPU flags for a jaxlib ``(major, minor)``: none for a version not measured."""
    return dict(FLAGS.get(version, {})) if version else {}


def configure(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Add jaxgen's CPU flags to ``environ["XLA_FLAGS"]`` (default: ``os.environ``), except those
    already named there, and return the ``--name=value`` strings it added. Adds nothing when
    ``JAXGEN_XLA_CPU=0``. Call it again and it adds nothing more."""
    env = os.environ if environ is None else environ
    if env.get(OPT_OUT, "1").strip().lower() in ("0", "false", "no", "off"):
        return []
    current = env.get("XLA_FLAGS", "")
    named = {part.lstrip("-").split("=", 1)[0] for part in current.split()}
    added = [
        f"--{name}={value}"
        for name, value in flags_for(_jaxlib_version()).items()
        if name not in named
    ]
    if added:
        env["XLA_FLAGS"] = " ".join([current, *added]).strip()
    return added
