"""What the background prefetcher buys: steps/s of ``loop.train_and_evaluate`` with
``train.prefetch = 0`` (each batch assembled in line, between steps) against ``2`` (assembled two
ahead on a background thread), for models cheap enough that assembling the batch matters.

    python bench/input_pipeline.py [--repeats 3] [--steps 400] [--devices 1] [--quick]

One process runs every case, alternating the two settings (0, 2, then 2, 0, ...) so that drift in
the machine's load hits both alike. Each run trains from scratch in a fresh workdir; its steps/s
comes from the ``time`` of the ``train`` rows in ``metrics.jsonl`` after the first row (so the
compile, the final eval, sampling and checkpoint are not in it). Results go to
``bench/results/input_pipeline_cpu.md`` (and ``.json``; ``--quick``: the first case, one repeat of
20 steps, elsewhere): compare the ratio within a row, not absolute numbers
across machines or runs.

Cases:
- ``two_player``: the test-only two-player family (``tests/two_player_family.py``): an affine
  generator and a linear critic on 8x8 images, three data batches a step;
- ``vae_mlp_tiny``: the tiny MLP VAE (4 latents, 32-wide layers) on 16x16 procedural shapes with
  a large batch.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time

import harness


def _cases():
    from tests import two_player_family

    def two_player(batch: int):
        c = two_player_family.get_config()
        c.data.num_train, c.data.num_test = 8192, 64
        c.train.batch_size = batch
        c.eval.batch_size = 8
        return c

    def vae_mlp_tiny(batch: int):
        c = harness.load_config("vae", "mnist,tiny")
        c.data.source = "shapes"
        c.data.image_shape = (16, 16, 1)
        c.data.num_train, c.data.num_test = 8192, 64
        c.model.kind = "mlp"
        c.train.batch_size = batch
        c.eval.final_num_examples = 16
        c.train.sample_num = 4
        return c

    return [
        ("two_player", "batch 256 x 3 a step, 8x8", two_player(256)),
        ("two_player", "batch 1024 x 3 a step, 8x8", two_player(1024)),
        ("vae_mlp_tiny", "batch 1024, 16x16", vae_mlp_tiny(1024)),
        ("vae_mlp_tiny", "batch 4096, 16x16", vae_mlp_tiny(4096)),
    ]


def steps_per_s(workdir: str) -> float:
    """Steps/s between the first and the last ``train`` row of the run's metrics."""
    from jaxgen.engine.metrics import read_metrics

    rows = [r for r in read_metrics(workdir) if r["split"] == "train"]
    first, last = rows[0], rows[-1]
    return (last["step"] - first["step"]) / (last["time"] - first["time"])


def assembly_ms(config, num: int = 50) -> float:
    """Milliseconds to assemble one step's global batch in line (``train_batch_for_step``:
    indices, rows from the split, the device arrays), on its own, with nothing else running."""
    import jax

    from jaxgen.data import load_splits
    from jaxgen.engine import loop

    setup = loop.make_setup(config)
    train, _ = load_splits(config.data)
    jax.block_until_ready(loop.train_batch_for_step(setup, train, 0))
    t0 = time.perf_counter()
    for step in range(1, num + 1):
        jax.block_until_ready(loop.train_batch_for_step(setup, train, step))
    return 1000 * (time.perf_counter() - t0) / num


def run_once(config, prefetch: int, steps: int, log_every: int) -> float:
    from jaxgen.engine import loop

    config = config.copy_and_resolve_references()
    config.train.prefetch = prefetch
    config.train.num_steps = steps
    config.train.log_every = log_every
    config.train.eval_every = config.train.sample_every = 0
    config.train.checkpoint_every = 0  # only the final one, after the timed rows
    config.train.progress = False
    workdir = tempfile.mkdtemp(prefix="jaxgen-bench-input-")
    try:
        loop.train_and_evaluate(config, workdir)
        return steps_per_s(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv=None) -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--log_every", type=int, default=50)
    parser.add_argument("--devices", type=int, default=1, help="fake CPU devices")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.steps, args.log_every = 1, 20, 5
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={args.devices}"
    ).strip()
    import jax

    load_before = os.getloadavg()
    t0 = time.time()
    results = []
    for name, what, config in _cases()[:1] if args.quick else _cases():
        runs = {0: [], 2: []}
        for r in range(args.repeats):
            for prefetch in (0, 2) if r % 2 == 0 else (2, 0):
                value = run_once(config, prefetch, args.steps, args.log_every)
                runs[prefetch].append(value)
                print(f"{name} ({what}) prefetch={prefetch}: {value:.1f} steps/s", flush=True)
        ratios = [b / a for a, b in zip(runs[0], runs[2], strict=True)]
        results.append((name, what, runs, ratios, assembly_ms(config)))
    load_after = os.getloadavg()

    lines = [
        "# Input pipeline: the background prefetcher on CPU",
        "",
        f"- {jax.device_count()} CPU device(s); {time.time() - t0:.0f} s",
        f"- load average (1, 5, 15 min) before: {', '.join(f'{x:.1f}' for x in load_before)}; "
        f"after: {', '.join(f'{x:.1f}' for x in load_after)}",
        "- steps/s of `loop.train_and_evaluate` from the `train` rows of `metrics.jsonl` after "
        f"the first (steps {args.log_every}..{args.steps}: no compile, eval or checkpoint); "
        "the two settings alternate within each case; median of the repeats, all of them in "
        "brackets; ratio: median of the per-repeat ratios prefetch 2 / prefetch 0",
        "",
        "- assembly ms: one step's batch assembled on its own (`loop.train_batch_for_step`, "
        "50 steps, in line); ms/step: 1000 / the prefetch-0 median",
        "",
        "| case | what | prefetch 0 steps/s | prefetch 2 steps/s | ratio 2/0 | assembly ms "
        "| ms/step |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, what, runs, ratios, assembly in results:

        def cell(values):
            inner = ", ".join(f"{v:.0f}" for v in values)
            return f"{statistics.median(values):.0f} ({inner})"

        lines.append(
            f"| {name} | {what} | {cell(runs[0])} | {cell(runs[2])} | "
            f"{statistics.median(ratios):.2f} | {assembly:.2f} | "
            f"{1000 / statistics.median(runs[0]):.2f} |"
        )
    out = harness.out_path(args, "input_pipeline_cpu")
    figures = [
        {
            "case": n,
            "what": w,
            "prefetch_0": r[0],
            "prefetch_2": r[2],
            "ratios": q,
            "assembly_ms": a,
        }
        for n, w, r, q, a in results
    ]
    harness.write_results(out, "\n".join(lines), {"rows": figures, "load_avg_after": load_after})
    print("\n".join(lines))
    print("wrote", out)


if __name__ == "__main__":
    main()
