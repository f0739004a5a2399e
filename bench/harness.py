"""What every benchmark shares: one timing loop, one subprocess runner for per-case peak memory,
machine and commit metadata, results written as markdown and JSON together, and the plumbing the
table drivers use to train, evaluate and read runs.

A benchmark is a script, ``python bench/<name>.py [--quick]``; its folder is on ``sys.path``, so
it imports this module as ``harness``. A case that needs its own peak memory is a plain function
of the script, called in a fresh Python by :func:`run_in_child`, which runs

    python -m harness run MODULE:FUNCTION --kwargs JSON --result PATH

and returns what the function returned, with the child's peak resident memory. ``--quick``
(``make bench``) shrinks every benchmark to a pass of a few seconds per case and writes its
tables to :func:`quick_dir`, never over the committed ones in ``bench/results/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import importlib
import importlib.util
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib import metadata as importlib_metadata
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
RESULTS = os.path.join(BENCH, "results")
# The library and the config files import from the repository root.
if ROOT not in sys.path:
    sys.path.insert(1, ROOT)

# ---------------------------------------------------------------------------------------------
# Configs and random batches


def config_file(name: str) -> str:
    """The absolute path of a config file named ``"vae"`` or ``"configs/vae.py"``: in ``configs/``
    at the repository root, or in ``jaxgen/configs/`` if they live in the package."""
    base = os.path.basename(name)
    base = base if base.endswith(".py") else base + ".py"
    for folder in ("configs", os.path.join("jaxgen", "configs")):
        path = os.path.join(ROOT, folder, base)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"no config file {base} in configs/ or jaxgen/configs/")


def config_flag(name: str, arg: str = "") -> str:
    """``--config=...`` for ``train.py``, with the path relative to the repository root."""
    path = os.path.relpath(config_file(name), ROOT)
    return f"--config={path}" + (f":{arg}" if arg else "")


def load_config(name: str, arg: str | None = None):
    """``get_config(arg)`` of a config file, e.g. ``load_config("vae", "mnist,tiny")``."""
    spec = importlib.util.spec_from_file_location("bench_config", config_file(name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg or None)


def batch_maker(config, seed: int = 0, num_classes: int = 10) -> Callable[..., dict]:
    """``batch(n)``: random uint8 images of the config's shape, labels and example indices, and
    for a captioned data set random word tokens (``text``, ``data.caption_len`` of them)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    words = config.text.vocab_size if config.data.get("captions", "") else 0

    def batch(n: int = config.train.batch_size) -> dict:
        out = {
            "image": rng.integers(0, 256, (n, *config.data.image_shape), dtype=np.uint8),
            "label": rng.integers(0, num_classes, (n,), dtype=np.int32),
            "index": np.arange(n, dtype=np.int32),
        }
        if words:
            shape = (n, config.data.caption_len)
            out["text"] = rng.integers(1, words, shape, dtype=np.int32)
        return out

    return batch


def num_params(tree) -> int:
    import jax

    return int(sum(x.size for x in jax.tree.leaves(tree)))


# ---------------------------------------------------------------------------------------------
# The timing loop


@dataclasses.dataclass(frozen=True)
class Timing:
    """Seconds per call of one timed function.

    ``first_s``: the first call (tracing, compiling and one run), never in the statistics.
    ``per_call_s``: one figure per repeat, the repeat's wall time over its ``inner`` calls.
    """

    first_s: float
    per_call_s: tuple[float, ...]
    inner: int

    @property
    def median_s(self) -> float:
        return statistics.median(self.per_call_s)

    @property
    def spread(self) -> float:
        """Relative spread of the repeats, ``(max - min) / median``."""
        return (max(self.per_call_s) - min(self.per_call_s)) / self.median_s

    @property
    def calls(self) -> int:
        return len(self.per_call_s) * self.inner

    def per_s(self, items: float = 1.0) -> float:
        """``items`` per second at the median, e.g. ``per_s(batch)`` for examples/s."""
        return items / self.median_s

    def as_dict(self) -> dict:
        return {
            "first_s": self.first_s,
            "median_s": self.median_s,
            "min_s": min(self.per_call_s),
            "max_s": max(self.per_call_s),
            "spread": self.spread,
            "repeats": len(self.per_call_s),
            "inner": self.inner,
        }


def time_calls(
    call: Callable[[], Any],
    *,
    warmup: int = 3,
    repeats: int = 5,
    min_seconds: float = 0.0,
    inner: int = 1,
    max_repeats: int = 100_000,
) -> Timing:
    """Time ``call()``: one first call (compile), ``warmup`` untimed calls, then at least
    ``repeats`` timed repeats of ``inner`` calls each, and more until ``min_seconds`` have passed.

    Each repeat ends with ``jax.block_until_ready`` on its last output, so asynchronous dispatch
    is inside the time. A stateful step is a closure that threads its own state (``nonlocal``):
    then the last output depends on every call of the repeat.
    """
    t0 = time.perf_counter()
    _block(call())
    first = time.perf_counter() - t0
    out = None
    for _ in range(warmup):
        out = call()
    _block(out)
    times: list[float] = []
    t_end = time.perf_counter() + min_seconds
    while len(times) < max_repeats and (len(times) < repeats or time.perf_counter() < t_end):
        t0 = time.perf_counter()
        for _ in range(inner):
            out = call()
        _block(out)
        times.append((time.perf_counter() - t0) / inner)
    return Timing(first, tuple(times), inner)


def _block(out: Any) -> None:
    """Wait for ``out``'s JAX arrays to be computed (only JAX makes arrays that can be
    pending, and only if it is imported)."""
    if "jax" in sys.modules:
        sys.modules["jax"].block_until_ready(out)


def time_train_step(config, seconds: float, *, repeats: int = 5) -> tuple[Any, dict]:
    """The family's jitted train step (state donated) on 8 pre-made random batches: compile, 3
    warm-up steps, then repeats of 8 steps for at least ``seconds``. Returns ``(state, figures)``
    with ``examples_per_s`` at the median repeat; data loading is not timed."""
    import jax

    from jaxgen.families import get_family

    family = get_family(config.family)
    batch = batch_maker(config)
    b = config.train.batch_size
    state = family.init(config, jax.random.PRNGKey(0), batch())
    step = jax.jit(functools.partial(family.train_step, config), donate_argnums=0)
    batches = [batch() for _ in range(8)]
    n = 0

    def call():
        nonlocal state, n
        state, metrics = step(state, batches[n % 8])
        n += 1
        return metrics

    t = time_calls(call, min_seconds=seconds, repeats=repeats, inner=8)
    return state, {
        "batch": b,
        "examples_per_s": t.per_s(b),
        "ms_per_step": 1000 * t.median_s,
        "compile_s": t.first_s,
        "spread": t.spread,
        "steps": t.calls,
    }


# ---------------------------------------------------------------------------------------------
# One case in its own process


def _reference(fn: Callable) -> tuple[str, str]:
    """``(MODULE:FUNCTION, folder)``: how a fresh Python finds ``fn`` once ``folder`` is on its
    path. A benchmark script run as ``__main__`` is named by its file."""
    if "<" in fn.__qualname__:
        raise ValueError(f"{fn.__qualname__} is not a module-level function")
    module = sys.modules[fn.__module__]
    name = fn.__module__
    if name == "__main__":
        spec = getattr(module, "__spec__", None)
        name = spec.name if spec else os.path.splitext(os.path.basename(module.__file__))[0]
    folder = os.path.dirname(os.path.abspath(module.__file__))
    for _ in range(name.count(".")):  # a module of a package: the folder above the package
        folder = os.path.dirname(folder)
    return f"{name}:{fn.__qualname__}", folder


def child_env(cpu_only: bool = True, folder: str = BENCH) -> dict:
    """The environment of a child: ``folder`` (the case's own), ``bench/`` and the root
    importable; CPU-only by default."""
    env = dict(os.environ)
    if cpu_only:
        env["JAX_PLATFORMS"] = "cpu"
    paths = dict.fromkeys(p for p in (folder, BENCH, ROOT, env.get("PYTHONPATH")) if p)
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def run_in_child(fn: Callable[..., dict], /, *, cpu_only: bool = True, **kwargs) -> dict:
    """``fn(**kwargs)`` in a fresh Python, so that its peak memory is its own. Returns the dict
    ``fn`` returned plus ``peak_rss_mb`` (see :func:`peak_rss_mb`) and ``child_wall_s``.
    ``kwargs`` and the result are JSON."""
    with tempfile.TemporaryDirectory(prefix="jaxgen-bench-") as tmp:
        result = os.path.join(tmp, "result.json")
        ref, folder = _reference(fn)
        cmd = [sys.executable, "-m", "harness", "run", ref]
        cmd += ["--kwargs", json.dumps(kwargs), "--result", result]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=child_env(cpu_only, folder))
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{ref}({kwargs}) exited with {proc.returncode}")
        with open(result) as f:
            out = json.load(f)
    return {**out, "child_wall_s": wall}


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB, or its largest finished child's if larger.

    From ``VmHWM`` in ``/proc/self/status``: the high-water mark of this process's own address
    space. ``ru_maxrss`` is not, on Linux: it keeps the forking parent's resident size from before
    ``exec``, so a small case started from a large benchmark process would look large.
    """
    own = None
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    own = int(line.split()[1]) / 1024
    except OSError:
        pass
    if own is None:
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return max(own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


def _child_main(argv: Sequence[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness run")
    ap.add_argument("function", help="MODULE:FUNCTION")
    ap.add_argument("--kwargs", default="{}", help="its keyword arguments, as JSON")
    ap.add_argument("--result", required=True, help="where its returned dict goes, as JSON")
    args = ap.parse_args(argv)
    module, name = args.function.split(":")
    fn = importlib.import_module(module)
    for part in name.split("."):
        fn = getattr(fn, part)
    out = fn(**json.loads(args.kwargs))
    out = {**out, "peak_rss_mb": peak_rss_mb()}
    _write_atomically({args.result: json.dumps(out, default=_json_default)})
    return 0


# ---------------------------------------------------------------------------------------------
# Machine and commit metadata, and results files


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return importlib_metadata.version(package)
    except importlib_metadata.PackageNotFoundError:
        return None


def metadata() -> dict:
    """Where and when a result was measured: date (UTC), commit (``dirty``: with uncommitted
    changes to tracked files), CPU model and cores, load average, Python and the library
    versions, the command."""
    commit = _git("rev-parse", "HEAD")
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "dirty": bool(commit and _git("status", "--porcelain", "--untracked-files=no")),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in ("jax", "jaxlib", "flax", "optax", "numpy")},
        "command": " ".join(shlex.quote(a) for a in ["python", *_script_argv()]),
    }


def _script_argv() -> list[str]:
    argv = list(sys.argv)
    if argv and os.path.isabs(argv[0]):
        argv[0] = os.path.relpath(argv[0], ROOT)
    return argv


def metadata_line(meta: dict) -> str:
    v = meta["versions"]
    commit = (meta["commit"][:12] or "unknown") + (" (dirty)" if meta["dirty"] else "")
    return (
        f"_Measured {meta['date']} at commit {commit} on "
        f"{meta['cpu']} ({meta['cores']} cores, load {', '.join(map(str, meta['load_avg']))}); "
        f"Python {meta['python']}, jax {v['jax']}, jaxlib {v['jaxlib']}, flax {v['flax']}; "
        f"`{meta['command']}`. Figures: `{os.path.basename(meta.get('json', ''))}` beside this._"
    )


def _write_atomically(files: dict[str, str]) -> None:
    """Write every ``{path: text}``, each to a temporary file first and then renamed into place,
    so that no reader sees half a file and the files of one result change together."""
    staged = []
    try:
        for path, text in files.items():
            folder = os.path.dirname(os.path.abspath(path))
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
            with os.fdopen(fd, "w") as f:
                f.write(text)
            staged.append((tmp, path))
        for tmp, path in staged:
            os.replace(tmp, path)
    finally:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.remove(tmp)


def write_results(md_path: str, markdown: str, data: Any, meta: dict | None = None) -> str:
    """Write the table ``md_path`` (``x.md``) and its figures ``x.json`` beside it, together and
    atomically. The JSON is ``{"meta": metadata(), "results": data}``; the markdown ends with one
    line of the same metadata. Returns the JSON path."""
    meta = dict(meta or metadata())
    json_path = os.path.splitext(md_path)[0] + ".json"
    meta["json"] = os.path.basename(json_path)
    text = markdown.rstrip("\n") + "\n\n" + metadata_line(meta) + "\n"
    figures = json.dumps({"meta": meta, "results": data}, indent=1, default=_json_default)
    _write_atomically({json_path: figures + "\n", md_path: text})
    return json_path


def _json_default(value):
    if hasattr(value, "tolist"):  # numpy and jax scalars and arrays
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON")


# ---------------------------------------------------------------------------------------------
# Command lines: --quick and --out


def quick_dir() -> str:
    """Where ``--quick`` tables and runs go: ``$BENCH_QUICK_DIR``, by default a folder in the
    system's temporary directory (never ``bench/results``)."""
    path = os.environ.get("BENCH_QUICK_DIR") or os.path.join(
        tempfile.gettempdir(), "jaxgen-bench-quick"
    )
    return os.path.abspath(path)


def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser with the flags every benchmark has: ``--quick`` and ``--out``."""
    ap = argparse.ArgumentParser(
        description=doc.strip().splitlines()[0], formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a few seconds per case at tiny sizes; tables go to $BENCH_QUICK_DIR",
    )
    ap.add_argument("--out", default=None, help="the markdown table (JSON beside it)")
    return ap


def out_path(args: argparse.Namespace, name: str) -> str:
    """``--out``, else ``<quick_dir()>/<name>.md`` with ``--quick``, else the committed table."""
    if args.out:
        return args.out
    return os.path.join(quick_dir() if args.quick else RESULTS, name + ".md")


# ---------------------------------------------------------------------------------------------
# Training runs and evaluations, for the table drivers


def metrics_rows(workdir: str) -> list[dict]:
    """The rows of a run's ``metrics.jsonl`` (none when it has not started)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def finished(workdir: str) -> bool:
    """A run is finished when its ``metrics.jsonl`` ends with the final eval."""
    rows = metrics_rows(workdir)
    return bool(rows) and rows[-1].get("split") == "eval"


def train_info(workdir: str) -> tuple[int, float]:
    """(last step, wall seconds) of a run, from its metrics."""
    rows = metrics_rows(workdir)
    steps = max((int(r.get("step", 0)) for r in rows), default=0)
    wall = max((float(r.get("time", 0.0)) for r in rows), default=0.0)
    return steps, wall


TRAINED_ON = "trained_on.txt"  # in a run's workdir: the device kind it trained on


@functools.cache
def device_kind() -> str:
    """The kind of device (``jax.devices()[0].device_kind``: ``cpu``, ``NVIDIA H200``, ...) that
    the commands of :func:`call` compute on."""
    probe = "import jax; print(jax.devices()[0].device_kind)"
    out = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True, env=_env()
    )
    return out.stdout.strip().splitlines()[-1]


def trained_on(workdir: str) -> str:
    """The device kind run ``workdir`` trained on; ``cpu`` for a run without the note (one
    trained before ``Runs.train`` wrote it)."""
    path = os.path.join(workdir, TRAINED_ON)
    if not os.path.exists(path):
        return "cpu"
    with open(path) as f:
        return f.read().strip() or "cpu"


def _env() -> dict:
    return dict(
        os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    )


def call(command: str) -> None:
    """Run one ``python ...`` command line from the repository root with this Python."""
    args = shlex.split(command)
    args[0] = sys.executable
    print("+", command, flush=True)
    subprocess.run(args, check=True, cwd=ROOT, env=_env())


# What --quick adds to every train.py command line: two steps of the config's tiny variant.
QUICK_TRAIN = (
    "--config.train.num_steps=2 --config.train.batch_size=16 --config.train.log_every=1 "
    "--config.train.eval_every=0 --config.train.sample_every=0 --config.train.checkpoint_every=2 "
    "--config.eval.batch_size=16 --config.eval.num_examples=32 --config.eval.final_num_examples=32"
)
QUICK_NUM = 64  # samples a --quick eval scores


@dataclasses.dataclass(frozen=True)
class Runs:
    """Where a driver's training runs, evals and pictures live, and how to make missing ones.

    ``root``: ``runs/<driver>``, and pictures in ``docs/images``. With ``quick`` both are under
    :func:`quick_dir`, every run is its config's ``tiny`` variant for two steps, and every eval
    scores 64 samples with a tiny evaluator trained on the spot: the whole chain runs in minutes
    and proves the plumbing, not the figures.
    """

    root: str
    images: str
    quick: bool = False

    @classmethod
    def for_driver(cls, name: str, quick: bool) -> Runs:
        if quick:
            return cls(
                os.path.join(quick_dir(), "runs", name), os.path.join(quick_dir(), "images"), True
            )
        return cls(os.path.join("runs", name), os.path.join("docs", "images"))

    def workdir(self, name: str) -> str:
        return os.path.join(self.root, name)

    def eval_json(self, name: str) -> str:
        return os.path.join(self.root, "evals", name + ".json")

    def image(self, name: str) -> str:
        """The path of picture ``name``, its folder made."""
        os.makedirs(os.path.join(ROOT, self.images), exist_ok=True)
        return os.path.join(self.images, name)

    def train(self, name: str, config: str, arg: str, flags: str = "", first_stage: str = ""):
        """Train run ``name`` (``train.py --config=<config>:<arg> <flags>``) unless it finished;
        ``first_stage``: the workdir of its tokenizer. Returns its workdir."""
        workdir = self.workdir(name)
        if finished(workdir):
            return workdir
        if self.quick:
            arg, flags = arg + ",tiny", f"{flags} {QUICK_TRAIN}"
        if first_stage:
            flags += f" --config.first_stage.workdir={first_stage}"
        call(f"python train.py {config_flag(config, arg)} --workdir={workdir} {flags}".strip())
        with open(os.path.join(ROOT, workdir, TRAINED_ON), "w") as f:
            f.write(device_kind() + "\n")
        return workdir

    def evaluate(
        self, name: str, flags: str, dataset: str, num: int | None = None, extra: str = ""
    ) -> dict:
        """``python -m jaxgen.eval <flags> --num=<num> <extra>`` into ``eval_json(name)`` unless
        it is there. Returns the JSON it wrote."""
        out = self.eval_json(name)
        if not os.path.exists(out):
            if self.quick:
                num = QUICK_NUM
                flags += f" --batch=32 --evaluator={self.evaluator(dataset)} --allow_weak_evaluator"
            flags += f" --num={num}" if num else ""
            parts = ("python -m jaxgen.eval", flags, extra, f"--out={out}")
            call(" ".join(p for p in parts if p))
        with open(out) as f:
            return json.load(f)

    def sample_grid(self, workdir: str, picture: str, flags: str = "") -> None:
        """``sample.py`` of a run into ``image(picture)`` unless it is there."""
        out = self.image(picture)
        if not os.path.exists(out):
            call(f"python sample.py --workdir={workdir} {flags} --out={out}")

    def evaluator(self, dataset: str) -> str:
        """A tiny evaluator classifier for ``--quick`` evals (its figures mean nothing), one
        for every driver."""
        shared = Runs(os.path.join(quick_dir(), "runs", "evaluators"), self.images, quick=True)
        return shared.train(dataset, "classifier", f"{dataset},evaluator")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "run":
        print(__doc__)
        return 2
    return _child_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
