"""Diffusion throughput: UNet training (img/s) and the cost of a whole sampler against its bare
model calls, with peak memory next to each figure.

    python bench/diffusion_throughput.py [--seconds 20] [--peer] [--cases gpu|cpu]

Cases (``--cases``, by default ``gpu`` on an accelerator and ``cpu`` otherwise):
- ``gpu``: the DDPM CIFAR-10 UNet (35.7M parameters, ``configs/diffusion.py:cifar10``),
  training at batch 128 with bfloat16 compute, sampling at batch 256 in bfloat16;
- ``cpu``: the same UNet training at batch 8 and sampling at batch 2, in float32 (bfloat16 is
  emulated on CPUs), and the README's 28x28 UNet (``configs/diffusion.py:fashion_mnist,cpu``)
  at batch 32, sampling at batch 64.

Each figure runs in its own subprocess, so that its peak memory is its own: the device's
``peak_bytes_in_use`` on an accelerator, the process's peak resident memory on a CPU.

- Training: the family's jitted ``train_step`` (parameters donated), 3 warm-up steps, then as
  many steps as fit in ``--seconds`` on a fixed random batch. FLOPs per image come from XLA's
  cost analysis of the compiled step; "of matmul rate" divides the achieved FLOP/s by a large
  matmul measured in the same process (bf16 8192^3 on an accelerator, f32 2048^3 on a CPU).
- Sampling: DPM-Solver++ 2M, 20 steps (20 model calls), the whole solver in one jitted
  ``lax.scan``; against it, the same 20 UNet calls alone, in a ``lax.scan`` that feeds each
  output back as the next input (so none can be skipped), and the same 20 calls as a Python
  loop of one jitted call each (what a framework without a compiled loop does).
- ``--peer`` (GPU only) also runs ``../shared/bench/peer_torch_ddpm.py`` (diffusers +
  torch.compile) in this run and reports our figures as ratios of its.

Results go to ``bench/results/diffusion_<platform>.md``. Compare ratios within one table; absolute
times from different runs or machines are not comparable.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER = os.path.join(ROOT, "..", "shared", "bench", "peer_torch_ddpm.py")

CASES = {
    "gpu": [
        # (label, config path, its argument (data set, variants), train batch, sample batch, bf16)
        ("DDPM CIFAR-10 UNet, 35.7M", "configs/diffusion.py", "cifar10", 128, 256, True),
    ],
    "cpu": [
        ("DDPM CIFAR-10 UNet, 35.7M", "configs/diffusion.py", "cifar10", 8, 2, False),
        ("28x28 UNet (:cpu), 0.69M", "configs/diffusion.py", "fashion_mnist,cpu", 32, 64, False),
    ],
}

CHILD = r"""
import functools, importlib.util, json, resource, sys, time
import jax, jax.numpy as jnp, numpy as np
what, path, arg, batch, bf16, seconds = sys.argv[1:7]
batch, bf16, seconds = int(batch), bf16 == "1", float(seconds)
spec = importlib.util.spec_from_file_location("cfg", path)
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
config = mod.get_config(arg or None)
config.diffusion.mixed_precision = bf16
from jaxgen.diffusion import samplers
from jaxgen.families import diffusion, get_family
family = get_family("diffusion")
dev = jax.devices()[0]
rng = np.random.default_rng(0)
shape = tuple(config.data.image_shape)
out = {"device": dev.device_kind, "platform": dev.platform}


def timed(fn, *args, min_seconds=seconds, min_iters=3):
    jax.block_until_ready(fn(*args))  # compile and warm up
    times = []
    t_end = time.perf_counter() + min_seconds
    while len(times) < min_iters or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def flops(compiled):
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", 0.0)) if cost else 0.0


def matmul_rate():
    n, dtype = (8192, jnp.bfloat16) if dev.platform != "cpu" else (2048, jnp.float32)
    a = jnp.asarray(rng.standard_normal((n, n)), dtype)
    f = jax.jit(lambda a: a @ a)
    return 2 * n**3 / timed(f, a, min_seconds=2.0), f"{jnp.dtype(dtype).name} {n}^3"


def peak_memory():
    stats = dev.memory_stats() if dev.platform != "cpu" else None
    if stats and "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"], "device"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "host RSS"


example = {"image": rng.integers(0, 256, (batch, *shape), dtype=np.uint8),
           "label": np.zeros(batch, np.int32), "index": np.arange(batch, dtype=np.int32)}
state = family.init(config, jax.random.PRNGKey(0), example)
out["params"] = int(sum(x.size for x in jax.tree.leaves(state.model.params)))

if what == "train":
    step = jax.jit(functools.partial(family.train_step, config), donate_argnums=0)
    compiled = step.lower(state, example).compile()
    out["gflop_per_img"] = flops(compiled) / batch / 1e9
    for _ in range(4):
        state, m = step(state, example)
    jax.block_until_ready(m)
    n, t0 = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - t0 < seconds:
        state, m = step(state, example); n += 1
        if n % 4 == 0:
            jax.block_until_ready(m)
    jax.block_until_ready(m)
    dt = (time.perf_counter() - t0) / n
    out["img_s"] = batch / dt
    rate, out["matmul"] = matmul_rate()
    out["matmul_tflops"] = rate / 1e12
    out["of_matmul_rate"] = out["gflop_per_img"] * 1e9 * out["img_s"] / rate
else:
    model = diffusion.build_model(config)
    schedule = diffusion.make_schedule(config)
    params = state.model.ema_params
    x_T = jnp.asarray(rng.standard_normal((batch, *shape)), jnp.float32)
    ts = samplers.timesteps(schedule, 20, "logSNR")[:-1]

    def model_fn(params):
        return lambda x, t: model.apply({"params": params}, x, t, None)

    @jax.jit
    def solver(params, x_T):
        return samplers.sample(model_fn(params), x_T, schedule, solver="dpm_solver++",
                               steps=20, order=2, method="multistep")

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

    out["solver_s"] = timed(solver, params, x_T)
    out["calls_scan_s"] = timed(calls_scan, params, x_T)
    out["calls_python_s"] = timed(calls_python, params, x_T)
    out["solver_over_calls"] = out["solver_s"] / out["calls_scan_s"]
    out["gflop_per_call"] = flops(one_call.lower(params, x_T, ts[0]).compile()) / 1e9

out["peak_bytes"], out["peak_kind"] = peak_memory()
print("RESULT " + json.dumps(out))
"""


def run_child(what, path, variant, batch, bf16, seconds):
    cmd = [sys.executable, "-c", CHILD, what, os.path.join(ROOT, path), variant or "", str(batch)]
    cmd += ["1" if bf16 else "0", str(seconds)]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"{what} {path}:{variant} failed:\n{proc.stderr[-3000:]}")


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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="timing per figure")
    ap.add_argument("--cases", choices=sorted(CASES), default=None)
    ap.add_argument("--peer", action="store_true", help="also run the diffusers peer (GPU)")
    ap.add_argument("--out", default=None, help="results file (default by platform)")
    args = ap.parse_args()

    import jax  # only to pick the defaults; the figures come from subprocesses

    platform_name = jax.devices()[0].platform
    cases = CASES[args.cases or ("cpu" if platform_name == "cpu" else "gpu")]
    rows = []
    for label, path, variant, batch, sample_batch, bf16 in cases:
        train = run_child("train", path, variant, batch, bf16, args.seconds)
        samp = run_child("sample", path, variant, sample_batch, bf16, args.seconds)
        rows.append((label, batch, sample_batch, bf16, train, samp))
        print(json.dumps({"case": label, "train": train, "sample": samp}), flush=True)
    peer = run_peer() if args.peer else None

    device = rows[0][4]["device"]
    lines = [
        f"# Diffusion throughput on {device} ({platform_name})",
        "",
        f"`python bench/diffusion_throughput.py --seconds {args.seconds:g}"
        + (" --peer`" if args.peer else "`")
        + f", {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU threads, jax {jax.__version__}.",
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
    text = "\n".join(lines) + "\n"
    out = args.out or os.path.join(ROOT, "bench", "results", f"diffusion_{platform_name}.md")
    with open(out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
