"""jaxgen against its PyTorch peers on this CPU, interleaved in one run: train img/s, 20-step
DPM-Solver++ sampling time and peak memory, as ratios.

    python bench/cpu_peer.py [--rounds 3] [--seconds 20] [--cases mnist_train,...] [--compile]
    python bench/cpu_peer.py --quick        # one short round of the 28x28 cases

Peers (PyTorch, 2 threads, float32; a separate venv, ``make peer``, never the project's):
- the diffusion UNets: ``../shared/bench/cpu_peer/peer.py``, diffusers' ``UNet2DModel`` built
  like our 28x28 and CIFAR-10 UNets, the same train step and diffusers' DPM-Solver++ 2M;
- the DCGAN pair and the GPT prior's train step (its frozen VQ-VAE encoder included):
  ``bench/peers/dcgan.py`` and ``bench/peers/gpt.py``, ours written again in PyTorch at the
  README's sizes, in the same style.

Each round runs every case once per side, ours first, in fresh processes (each figure has its
own peak memory): ours with jaxgen's XLA CPU flags (``jaxgen.xla_cpu``, what ``train.py`` uses),
ours without them (``plain XLA``), the peer in eager mode and, with ``--compile``, under
``torch.compile``. A figure is the median over repeats after compiling and warming up.

A run taken under load is dropped: the CPU time that other processes used while it ran (from
``/proc/stat``, less the run's own) and the time stolen by the hypervisor must each stay under
``--max-foreign`` of the machine (default 5%: a figure with 6.5% measured 20% slow). The table
gives, per case, the median over the kept rounds of each side and of the per-round ratio ours /
peer (for times: peer / ours, so that above 1 is always ours ahead), and how many rounds were
kept. ``--summarise JSON`` rebuilds the table from a run's figures.

Results: ``bench/results/cpu_peer.md`` (and ``.json``); ``--quick`` writes to the quick folder.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time

import harness

PEER_DIR = os.path.join(harness.ROOT, "..", "shared", "bench", "cpu_peer")
OWN_PEERS = os.path.join(harness.BENCH, "peers")


def peer_python() -> str:
    """The peers' interpreter: ``$JAXGEN_PEER_PYTHON``, else ``.peer/bin/python``."""
    path = os.environ.get("JAXGEN_PEER_PYTHON") or os.path.join(
        harness.ROOT, ".peer", "bin", "python"
    )
    if not os.path.exists(path):
        raise SystemExit(
            f"no PyTorch peer interpreter at {path}: run `make peer` (a separate venv with torch "
            "and diffusers), or set JAXGEN_PEER_PYTHON"
        )
    return path


# (name, label, what, ours: (config, argument, batch), peer: (script, args...))
CASES = {
    "mnist_train": (
        "train, 28x28 UNet, batch 32 (img/s)",
        "train",
        ("diffusion", "mnist,cpu,cond", 32),
        ("peer.py", "train", "mnist", "32"),
    ),
    "cifar_train": (
        "train, CIFAR-10 UNet 35.7M, batch 8 (img/s)",
        "train",
        ("diffusion", "cifar10", 8),
        ("peer.py", "train", "cifar", "8"),
    ),
    "mnist_sample": (
        "20-step DPM-Solver++ 2M, 28x28, batch 64 (s)",
        "sample",
        ("diffusion", "mnist,cpu,cond", 64),
        ("peer.py", "sample", "mnist", "64"),
    ),
    "cifar_sample": (
        "20-step DPM-Solver++ 2M, CIFAR-10, batch 4 (s)",
        "sample",
        ("diffusion", "cifar10", 4),
        ("peer.py", "sample", "cifar", "4"),
    ),
    "dcgan_train": (
        "train, DCGAN pair (MNIST), batch 64 (img/s)",
        "train",
        ("gan", "mnist", 64),
        ("dcgan.py", "train", "64"),
    ),
    "gpt_train": (
        "train, GPT prior over a VQ-VAE's 7x7 codes, batch 64 (img/s)",
        "train",
        ("gpt", "mnist,cond", 64),
        ("gpt.py", "train", "64"),
    ),
}
QUICK = ("mnist_train", "mnist_sample")


# ---------------------------------------------------------------------------------------------
# Our side: one figure in a fresh process (harness.run_in_child)


def _prepare(xla_cpu: bool, cache: str | None = None):
    if xla_cpu:  # before JAX makes its CPU backend, as train.py does
        from jaxgen import xla_cpu as flags

        flags.configure()
    import jax

    if cache:  # the persistent compilation cache, as train.py keeps it
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return jax


def ours_train(
    family: str, arg: str, batch: int, seconds: float, xla_cpu: bool, cache: str | None = None
) -> dict:
    """The loop's own compiled train step (``loop.compile_train_step``) on one device, over 4
    fixed random batches: img/s at the median repeat."""
    jax = _prepare(xla_cpu, cache)
    from jaxgen.engine import loop
    from jaxgen.engine.mesh import global_batch

    config = harness.load_config(family, arg)
    config.train.batch_size = batch
    if "first_stage" in config:  # a prior: over an untrained VQ-VAE (the cost is the same)
        config.first_stage.config = harness.load_config("vqvae", "mnist")
    setup = loop.make_setup(config, jax.devices()[:1], need_data=False)
    state = setup.init_state()
    step = loop.compile_train_step(setup)
    k = setup.caps.batches_per_step
    make = harness.batch_maker(config, num_classes=max(setup.caps.label_classes or 10, 1))

    def one():
        b = make(batch * k)
        if k > 1:
            b = {name: v.reshape(k, batch, *v.shape[1:]) for name, v in b.items()}
        return global_batch(b, setup.mesh, k)

    batches = [one() for _ in range(4)]
    n = 0

    def call():
        nonlocal state, n
        state, metrics, _ = step(state, batches[n % 4])
        n += 1
        return metrics

    t = harness.time_calls(call, min_seconds=seconds, repeats=5, inner=4)
    return {
        "value": t.per_s(batch),
        "timing": t.as_dict(),
        "flags": os.environ.get("XLA_FLAGS", ""),
    }


def ours_sample(
    family: str, arg: str, batch: int, seconds: float, xla_cpu: bool, cache: str | None = None
) -> dict:
    """DPM-Solver++ 2M, 20 steps, the whole solver in one jitted scan, on a freshly initialised
    network (sampling time does not depend on the weights)."""
    jax = _prepare(xla_cpu, cache)
    import jax.numpy as jnp
    import numpy as np

    from jaxgen.diffusion import samplers
    from jaxgen.families import diffusion

    config = harness.load_config(family, arg)
    model = diffusion.build_model(config)
    schedule = diffusion.make_schedule(config)
    cond = config.model.get("num_classes", 0) > 0
    labels = jnp.arange(batch) % 10 if cond else None
    x_T = jnp.asarray(
        np.random.default_rng(0).standard_normal((batch, *config.data.image_shape)), jnp.float32
    )

    @jax.jit
    def solve(params, x_T):
        fn = lambda x, t: model.apply({"params": params}, x, t, labels)
        return samplers.sample(
            fn, x_T, schedule, solver="dpm_solver++", steps=20, order=2, method="multistep"
        )

    # The network's parameters alone, as the peer builds its model: no optimiser state.
    x0 = jnp.zeros((1, *config.data.image_shape))
    y0 = jnp.zeros((1,), jnp.int32) if cond else None
    params = jax.jit(model.init)(jax.random.PRNGKey(0), x0, jnp.zeros((1,)), y0)["params"]
    t = harness.time_calls(lambda: solve(params, x_T), warmup=1, repeats=3, min_seconds=seconds)
    return {"value": t.median_s, "timing": t.as_dict(), "flags": os.environ.get("XLA_FLAGS", "")}


# ---------------------------------------------------------------------------------------------
# Load: the CPU time others used while a figure ran


def _cpu_times() -> tuple[float, float, float]:
    """(busy, steal, total) clock ticks of the whole machine, from ``/proc/stat``."""
    with open("/proc/stat") as f:
        fields = [float(v) for v in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0.0] * 8)[:8]
    busy = user + nice + system + irq + softirq
    return busy, steal, busy + idle + iowait + steal


def _children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measured(run) -> dict:
    """``run()``'s result with ``foreign`` (others' share of the machine's CPU time while it ran)
    and ``steal`` (the hypervisor's share) added."""
    ticks = os.sysconf("SC_CLK_TCK")
    busy0, steal0, total0 = _cpu_times()
    own0 = _children_cpu_s()
    out = run()
    busy1, steal1, total1 = _cpu_times()
    own = _children_cpu_s() - own0
    total = max(total1 - total0, 1.0)
    out["foreign"] = max(0.0, ((busy1 - busy0) / ticks - own) * ticks / total)
    out["steal"] = (steal1 - steal0) / total
    return out


def run_peer(script: str, args: tuple[str, ...], seconds: float, mode: str) -> dict:
    folder = PEER_DIR if script == "peer.py" else OWN_PEERS
    path = os.path.join(folder, script)
    if not os.path.exists(path):
        raise SystemExit(f"peer script {path} is missing")
    cmd = [peer_python(), path, *args, f"{seconds:g}", mode]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[len("RESULT ") :])
            value = r["img_s"] if args[0] == "train" else r["solver_s"]
            return {"value": value, "peak_rss_mb": r["peak_rss"] / 2**20, "raw": r}
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")


def sides(compile_peer: bool) -> list[str]:
    peers = ["peer, eager"] + (["peer, torch.compile"] if compile_peer else [])
    return ["jaxgen", "jaxgen, warm cache", "jaxgen, plain XLA", *peers]


def run_one(case: str, side: str, seconds: float, cache: str) -> dict:
    """One figure. ``jaxgen`` compiles and fills the compilation cache ``cache`` (a fresh folder
    per case and round); ``jaxgen, warm cache`` then loads its programs from there, as a second
    ``train.py`` run does: the same speed, without the compiler's memory."""
    _, what, (family, arg, batch), (script, *peer_args) = CASES[case]
    if side.startswith("peer"):
        mode = "compile" if "compile" in side else "eager"
        return measured(lambda: run_peer(script, tuple(peer_args), seconds, mode))
    fn = ours_train if what == "train" else ours_sample
    xla_cpu = side != "jaxgen, plain XLA"
    return measured(
        lambda: harness.run_in_child(
            fn,
            family=family,
            arg=arg,
            batch=batch,
            seconds=seconds,
            xla_cpu=xla_cpu,
            cache=cache if xla_cpu else None,
        )
    )


# ---------------------------------------------------------------------------------------------
# The table


def summarise(runs: list[dict], max_foreign: float) -> list[dict]:
    """Per case and side: the kept rounds' median value and memory, and the median per-round
    ratio against the eager peer (above 1: ours ahead)."""
    rows = []
    for case in dict.fromkeys(r["case"] for r in runs):
        what = CASES[case][1]
        by_round: dict[int, dict[str, dict]] = {}
        for r in runs:
            if r["case"] == case:
                by_round.setdefault(r["round"], {})[r["side"]] = r
        kept = {
            n: s
            for n, s in by_round.items()
            if all(v["foreign"] <= max_foreign and v["steal"] <= max_foreign for v in s.values())
        }
        row = {"case": case, "label": CASES[case][0], "rounds": len(by_round), "kept": len(kept)}
        for side in dict.fromkeys(side for s in by_round.values() for side in s):
            values = [s[side]["value"] for s in kept.values() if side in s]
            mems = [s[side]["peak_rss_mb"] for s in kept.values() if side in s]
            row[side] = {
                "value": statistics.median(values) if values else None,
                "peak_rss_mb": statistics.median(mems) if mems else None,
            }
            for peer in ("peer, eager", "peer, torch.compile"):
                pairs = [
                    (s[side]["value"], s[peer]["value"])
                    for s in kept.values()
                    if side in s and peer in s
                ]
                if pairs and not side.startswith("peer"):
                    ratios = [o / p if what == "train" else p / o for o, p in pairs]
                    mem = [
                        s[side]["peak_rss_mb"] / s[peer]["peak_rss_mb"]
                        for s in kept.values()
                        if side in s and peer in s
                    ]
                    row[side][f"vs {peer}"] = statistics.median(ratios)
                    row[side][f"memory vs {peer}"] = statistics.median(mem)
        rows.append(row)
    return rows


def table(rows: list[dict], args) -> str:
    peers = ["peer, eager"] + (["peer, torch.compile"] if args.compile else [])
    lines = [
        "# jaxgen against PyTorch peers on this CPU",
        "",
        f"`python bench/cpu_peer.py`: {args.rounds} interleaved round(s), at least "
        f"{args.seconds:g} s a figure; rounds with another process or the hypervisor above "
        f"{100 * args.max_foreign:.0f}% of the CPU dropped. Speed ratio: above 1 is jaxgen ahead "
        "(img/s ours / peer; for sampling times, peer / ours). Memory: peak resident memory, "
        "ours / peer.",
        "",
        "| figure | rounds kept | jaxgen | plain XLA | "
        + " | ".join(p.split(", ")[1] for p in peers)
        + " | "
        + " | ".join(f"speed vs {p.split(', ')[1]}" for p in peers)
        + " | plain XLA vs eager | memory vs eager | memory vs eager, warm cache |",
        "|---|---|---|---|" + "---|" * len(peers) * 2 + "---|---|---|",
    ]
    fmt = lambda v: "" if v is None else (f"{v:.3g}" if v < 100 else f"{v:.0f}")
    for r in rows:
        ours, plain = r.get("jaxgen", {}), r.get("jaxgen, plain XLA", {})
        cells = [r["label"], f"{r['kept']} / {r['rounds']}"]
        cells += [fmt(ours.get("value")), fmt(plain.get("value"))]
        cells += [fmt(r.get(p, {}).get("value")) for p in peers]
        cells += [(f"**{ours[f'vs {p}']:.2f}x**" if f"vs {p}" in ours else "") for p in peers]
        cells.append(f"{plain['vs peer, eager']:.2f}x" if "vs peer, eager" in plain else "")
        for side in (ours, r.get("jaxgen, warm cache", {})):
            cells.append(
                f"{side['memory vs peer, eager']:.2f}x" if "memory vs peer, eager" in side else ""
            )
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Peak memory (MiB): "
        + "; ".join(
            f"{r['case']}: "
            + ", ".join(
                f"{side} {fmt(v['peak_rss_mb'])}"
                for side, v in r.items()
                if isinstance(v, dict) and v.get("peak_rss_mb")
            )
            for r in rows
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = harness.parser(__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20.0, help="timing per figure")
    ap.add_argument("--cases", default=None, help=f"default: all of {','.join(CASES)}")
    ap.add_argument("--compile", action="store_true", help="also the peer under torch.compile")
    ap.add_argument(
        "--max-foreign",
        type=float,
        default=0.05,
        help="drop a round in which others used more than this share of the CPU",
    )
    ap.add_argument(
        "--summarise",
        metavar="JSON",
        default=None,
        help="rebuild the table from a run's JSON (e.g. with another --max-foreign)",
    )
    args = ap.parse_args(argv)
    if args.summarise:
        with open(args.summarise) as f:
            saved = json.load(f)
        runs = saved["results"]["runs"]
        args.rounds = 1 + max(r["round"] for r in runs)
        args.compile = any(r["side"] == "peer, torch.compile" for r in runs)
        command = saved["meta"]["command"].split()
        if "--seconds" in command:
            args.seconds = float(command[command.index("--seconds") + 1])
        rows = summarise(runs, args.max_foreign)
        text = table(rows, args)
        meta = {**saved["meta"], "summarised_with_max_foreign": args.max_foreign}
        harness.write_results(
            harness.out_path(args, "cpu_peer"), text, {"rows": rows, "runs": runs}, meta
        )
        print(text)
        return
    cases = args.cases.split(",") if args.cases else list(QUICK if args.quick else CASES)
    for c in cases:
        if c not in CASES:
            raise SystemExit(f"--cases: {c!r} is not one of {sorted(CASES)}")
    if args.quick:
        args.rounds, args.seconds = 1, 2.0
    peer_python()
    runs = []
    for n in range(args.rounds):
        for case in cases:
            cache = tempfile.mkdtemp(prefix="jaxgen-cpu-peer-xla-")
            for side in sides(args.compile):
                t0 = time.perf_counter()
                out = run_one(case, side, args.seconds, cache)
                out.update(case=case, side=side, round=n, wall_s=time.perf_counter() - t0)
                runs.append(out)
                print(
                    f"round {n} {case:13s} {side:20s} {out['value']:9.3f}  "
                    f"rss {out['peak_rss_mb']:6.0f} MiB  foreign {100 * out['foreign']:4.1f}%  "
                    f"steal {100 * out['steal']:4.1f}%",
                    flush=True,
                )
            shutil.rmtree(cache, ignore_errors=True)
    rows = summarise(runs, args.max_foreign)
    text = table(rows, args)
    out = harness.out_path(args, "cpu_peer")
    harness.write_results(out, text, {"rows": rows, "runs": runs})
    print(text)
    print("wrote", out)


if __name__ == "__main__":
    main()
