"""Diffusion throughput: UNet training (img/s) and the cost of a whole sampler against its bare
model calls, with peak memory next to each figure.

    python bench/diffusion_throughput.py [--seconds 20] [--peer] [--cases gpu|cpu] [--quick]

Cases (``--cases``, by default ``gpu`` on an accelerator and ``cpu`` otherwise):
- ``gpu``: the DDPM CIFAR-10 UNet (35.7M parameters, ``configs/diffusion.py:cifar10``),
  training at batch 128 with bfloat16 compute, sampling at batch 256 in bfloat16;
- ``cpu``: the same UNet training at batch 8 and sampling at batch 2, in float32 (bfloat16 is
  emulated on CPUs), and the README's 28x28 UNet (``configs/diffusion.py:fashion_mnist,cpu``)
  at batch 32, sampling at batch 64.

Each figure runs in its own subprocess (``harness.run_in_child``), so that its peak memory is its
own: the device's ``peak_bytes_in_use`` on an accelerator, the process's peak resident memory on
a CPU. Every time is the median of repeats of ``harness.time_calls`` after a compiling call.

- Training: the family's jitted ``train_step`` (parameters donated), 3 warm-up steps, then
  repeats of 4 steps for at least ``--seconds`` on a fixed random batch. FLOPs per image come
  from XLA's cost analysis of the compiled step; "of matmul rate" divides the achieved FLOP/s by
  a large matmul measured in the same process (bf16 8192^3 on an accelerator, f32 2048^3 on a CPU).
- Sampling: DPM-Solver++ 2M, 20 steps (20 model calls), the whole solver in one jitted
  ``lax.scan``; against it, the same 20 UNet calls alone, in a ``lax.scan`` that feeds each
  output back as the next input (so none can be skipped), and the same 20 calls as a Python
  loop of one jitted call each (what a framework without a compiled loop does).
- ``--peer`` (GPU only) also runs ``../shared/bench/peer_torch_ddpm.py`` (diffusers +
  torch.compile) in this run and reports our figures as ratios of its.

``--quick`` runs the ``tiny`` UNet only. Results go to ``bench/results/diffusion_<platform>.md``
(and ``.json``). Compare ratios within one table; absolute times from different runs or machines
are not comparable.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import harness

PEER = os.path.join(harness.ROOT, "..", "shared", "bench", "peer_torch_ddpm.py")

CASES = {
    "gpu": [
        # (label, config argument (data set, variants), train batch, sample batch, bf16)
        ("DDPM CIFAR-10 UNet, 35.7M", "cifar10", 128, 256, True),
    ],
    "cpu": [
        ("DDPM CIFAR-10 UNet, 35.7M", "cifar10", 8, 2, False),
        ("28x28 UNet (:cpu), 0.69M", "fashion_mnist,cpu", 32, 64, False),
    ],
    "quick": [("tiny UNet (:tiny)", "fashion_mnist,tiny", 4, 2, False)],
}


def _setup(arg: str, batch: int, bf16: bool):
    import jax
    import numpy as np

    from jaxgen.families import get_family

    config = harness.load_config("diffusion", arg)
    config.diffusion.mixed_precision = bf16
    family = get_family("diffusion")
    rng = np.random.default_rng(0)
    shape = tuple(config.data.image_shape)
    example = {
        "image": rng.integers(0, 256, (batch, *shape), dtype=np.uint8),
        "label": np.zeros(batch, np.int32),
        "index": np.arange(batch, dtype=np.int32),
    }
    state = family.init(config, jax.random.PRNGKey(0), example)
    dev = jax.devices()[0]
    out = {"device": dev.device_kind, "platform": dev.platform}
    out["params"] = harness.num_params(state.model.params)
    return config, family, state, example, rng, out


def _flops(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", 0.0)) if cost else 0.0


def _matmul_rate(seconds: float) -> tuple[float, str]:
    """FLOP/s of a large matmul: bf16 8192^3 on an accelerator, f32 2048^3 on a CPU."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    cpu = jax.devices()[0].platform == "cpu"
    n, dtype = (2048, jnp.float32) if cpu else (8192, jnp.bfloat16)
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), dtype)
    f = jax.jit(lambda a: a @ a)
    t = harness.time_calls(lambda: f(a), warmup=0, repeats=3, min_seconds=seconds)
    return 2 * n**3 / t.median_s, f"{jnp.dtype(dtype).name} {n}^3"


def _peak_memory(out: dict) -> dict:
    """The device's peak bytes where it keeps them (an accelerator); else none here, and the
    table reads the child's peak resident memory."""
    import jax

    dev = jax.devices()[0]
    stats = dev.memory_stats() if dev.platform != "cpu" else None
    if stats and "peak_bytes_in_use" in stats:
        out["peak_device_bytes"] = stats["peak_bytes_in_use"]
    return out


def train_case(arg: str, batch: int, bf16: bool, seconds: float, repeats: int = 5) -> dict:
    """Training images/s and the fraction of the matmul rate it reaches."""
    import jax

    config, family, state, example, _, out = _setup(arg, batch, bf16)
    step = jax.jit(functools.partial(family.train_step, config), donate_argnums=0)
    compiled = step.lower(state, example).compile()
    out["gflop_per_img"] = _flops(compiled) / batch / 1e9

    def call():
        nonlocal state
        state, metrics = step(state, example)
        return metrics

    t = harness.time_calls(call, warmup=3, repeats=repeats, min_seconds=seconds, inner=4)
    out["img_s"] = t.per_s(batch)
    out["spread"] = t.spread
    rate, out["matmul"] = _matmul_rate(min(seconds, 2.0))
    out["matmul_tflops"] = rate / 1e12
    out["of_matmul_rate"] = out["gflop_per_img"] * 1e9 * out["img_s"] / rate
    return _peak_memory(out)


def sample_case(arg: str, batch: int, bf16: bool, seconds: float, repeats: int = 3) -> dict:
    """DPM-Solver++ 2M in 20 steps against its 20 bare UNet calls (one scan; a Python loop)."""
    import jax
    import jax.numpy as jnp

    from jaxgen.diffusion import samplers
    from jaxgen.families import diffusion

    config, _, state, _, rng, out = _setup(arg, batch, bf16)
    model = diffusion.build_model(config)
    schedule = diffusion.make_schedule(config)
    params = state.model.ema_params
    x_T = jnp.asarray(rng.standard_normal((batch, *config.data.image_shape)), jnp.float32)
    ts = samplers.timesteps(schedule, 20, "logSNR")[:-1]

    def model_fn(params):
        return lambda x, t: model.apply({"params": params}, x, t, None)

    @jax.jit
    def solver(params, x_T):
        return samplers.sample(
            model_fn(params),
            x_T,
            schedule,
            solver="dpm_solver++",
            steps=20,
            order=2,
            method="multistep",
        )

    @jax.jit
    def calls_scan(params, x_T):
        def body(x, t):
            return model_fn(params)(x, jnp.full((x.shape[0],), t)).astype(jnp.float32), None

        return jax.lax.scan(body, x_T, ts)[0]

    one_call = jax.jit(lambda params, x, t: model_fn(params)(x, jnp.full((x.shape[0],), t)))

    def calls_python(params, x_T):
        x = x_T
        for t in ts:
            x = one_call(params, x, t)
        return x

    def median(fn) -> float:
        timing = harness.time_calls(
            lambda: fn(params, x_T), warmup=0, repeats=repeats, min_seconds=seconds
        )
        return timing.median_s

    out["solver_s"] = median(solver)
    out["calls_scan_s"] = median(calls_scan)
    out["calls_python_s"] = median(calls_python)
    out["solver_over_calls"] = out["solver_s"] / out["calls_scan_s"]
    out["gflop_per_call"] = _flops(one_call.lower(params, x_T, ts[0]).compile()) / 1e9
    return _peak_memory(out)


def run_peer():
    # The peer script, then its peak CUDA memory (training and sampling together).
    code = "\n".join(
        [
            "import json, runpy, torch",
            f"runpy.run_path({PEER!r}, run_name='__main__')",
            "print(json.dumps({'peak_bytes': torch.cuda.max_memory_allocated()}))",
        ]
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    peer = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            peer.update(json.loads(line))
    if not peer:
        raise RuntimeError(f"peer benchmark failed:\n{proc.stderr[-3000:]}")
    return peer


def gib(n):
    return f"{n / 2**30:.2f} GiB"


def _peak(figures: dict) -> tuple[float, str]:
    if "peak_device_bytes" in figures:
        return figures["peak_device_bytes"], "device"
    return figures["peak_rss_mb"] * 2**20, "host RSS"


def main(argv=None) -> None:
    ap = harness.parser(__doc__)
    ap.add_argument("--seconds", type=float, default=20.0, help="timing per figure")
    ap.add_argument("--cases", choices=sorted(CASES), default=None)
    ap.add_argument("--peer", action="store_true", help="also run the diffusers peer (GPU)")
    args = ap.parse_args(argv)

    import jax  # only to pick the defaults; the figures come from subprocesses

    platform_name = jax.devices()[0].platform
    default = "quick" if args.quick else ("cpu" if platform_name == "cpu" else "gpu")
    cases = CASES[args.cases or default]
    seconds, repeats = (0.0, 2) if args.quick else (args.seconds, 5)
    rows = []
    for label, arg, batch, sample_batch, bf16 in cases:
        common = {"arg": arg, "bf16": bf16, "seconds": seconds, "repeats": repeats}
        train = harness.run_in_child(train_case, cpu_only=False, batch=batch, **common)
        common["repeats"] = min(repeats, 3)  # a whole sampler: 3 calls at least, as before
        samp = harness.run_in_child(sample_case, cpu_only=False, batch=sample_batch, **common)
        train["peak_bytes"], train["peak_kind"] = _peak(train)
        samp["peak_bytes"], samp["peak_kind"] = _peak(samp)
        rows.append((label, batch, sample_batch, bf16, train, samp))
        print(json.dumps({"case": label, "train": train, "sample": samp}), flush=True)
    peer = run_peer() if args.peer else None

    device = rows[0][4]["device"]
    lines = [
        f"# Diffusion throughput on {device} ({platform_name})",
        "",
        f"Medians of repeats over at least {seconds:g} s per figure.",
        "",
        "## Training (family train_step: loss, grads, Adam, EMA)",
        "",
        "| model | batch | compute | img/s | GFLOP/img | of matmul rate | peak memory |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, batch, _, bf16, tr, _ in rows:
        lines.append(
            f"| {label} | {batch} | {'bf16' if bf16 else 'f32'} | {tr['img_s']:,.1f} | "
            f"{tr['gflop_per_img']:.2f} | {100 * tr['of_matmul_rate']:.1f}% of "
            f"{tr['matmul_tflops']:.2f} TFLOP/s ({tr['matmul']}) | "
            f"{gib(tr['peak_bytes'])} ({tr['peak_kind']}) |"
        )
    lines += [
        "",
        "## Sampling: DPM-Solver++ 2M, 20 steps (20 model calls)",
        "",
        "| model | batch | whole solver, one scan | 20 calls, one scan | 20 calls, Python loop "
        "| solver / calls | peak memory |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, _, sample_batch, _, _, sa in rows:
        lines.append(
            f"| {label} | {sample_batch} | {sa['solver_s']:.3f} s | {sa['calls_scan_s']:.3f} s | "
            f"{sa['calls_python_s']:.3f} s | {sa['solver_over_calls']:.3f} | "
            f"{gib(sa['peak_bytes'])} ({sa['peak_kind']}) |"
        )
    if peer:
        tr, sa = rows[0][4], rows[0][5]
        peer_train = max(peer.get("train_compiled_img_s", 0.0), peer["train_eager_img_s"])
        lines += [
            "",
            f"## Against the peer in this run (diffusers {peer.get('diffusers')}, "
            f"torch {peer.get('torch')})",
            "",
            "| figure | ours | peer | ours / peer |",
            "|---|---|---|---|",
            f"| train img/s | {tr['img_s']:,.0f} | {peer_train:,.0f} | "
            f"{tr['img_s'] / peer_train:.2f}x |",
            f"| 20-step sampling, s | {sa['solver_s']:.3f} | {peer['sample_dpmpp20_b256_s']:.3f} "
            f"| {peer['sample_dpmpp20_b256_s'] / sa['solver_s']:.2f}x faster |",
            f"| sampler / bare calls | {sa['solver_over_calls']:.2f} | "
            f"{peer['sample_overhead_ratio']:.2f} | |",
            f"| peak memory | train {gib(tr['peak_bytes'])}, sample {gib(sa['peak_bytes'])} | "
            f"{gib(peer['peak_bytes'])} (train and sample in one process) | |",
        ]
    out = harness.out_path(args, f"diffusion_{platform_name}")
    figures = [
        {"label": r[0], "batch": r[1], "sample_batch": r[2], "bf16": r[3], "train": r[4]}
        | {"sample": r[5]}
        for r in rows
    ]
    harness.write_results(out, "\n".join(lines), {"rows": figures, "peer": peer})
    print("\n".join(lines))
    print("wrote", out)


if __name__ == "__main__":
    main()
