"""The package as a whole: imports point down only, the evaluations defined above the engine
register themselves, and a built wheel works without the repository."""

import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys

import pytest
from support import CONFIGS, ROOT

from jaxgen.errors import ConfigError

# Packages above the engine, which nothing below them may import or name as a module path.
_UPPER = ("jaxgen.eval", "jaxgen.configs", "jaxgen.train", "jaxgen.sample")
_LOWER = ("engine", "families", "nn", "losses", "diffusion", "data")
_MODULE_PATH = re.compile(r"^(" + "|".join(re.escape(u) for u in _UPPER) + r")(\.\w+)*$")


def _lower_modules():
    base = ROOT / "jaxgen"
    for sub in _LOWER:
        yield from sorted((base / sub).rglob("*.py"))
    commands = ("__init__.py", "train.py", "sample.py")  # the package's top
    yield from sorted(p for p in base.glob("*.py") if p.name not in commands)


def _upward_references(path) -> list[str]:
    """Imports of an upper package (lazy ones inside functions too) and strings that are its
    module paths (an ``importlib`` target is an import all the same)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _MODULE_PATH.match(node.value):
                found.append(f"line {node.lineno}: the string {node.value!r}")
            continue
        for name in names:
            if any(name == u or name.startswith(u + ".") for u in _UPPER):
                found.append(f"line {node.lineno}: imports {name}")
    return found


def test_layers_below_the_evaluation_package_never_reach_up():
    bad = {
        str(p.relative_to(ROOT)): refs for p in _lower_modules() if (refs := _upward_references(p))
    }
    assert not bad, bad


def test_the_package_never_imports_the_checkouts_top_level_folders():
    """``configs``, ``bench`` and ``tests`` are not in an installed wheel."""
    bad = []
    for path in sorted((ROOT / "jaxgen").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            bad += [
                f"{path.relative_to(ROOT)}:{node.lineno} imports {n}"
                for n in names
                if n.split(".")[0] in ("configs", "bench", "tests", "conftest")
            ]
    assert not bad, bad


@pytest.mark.slow
def test_the_engine_alone_lacks_samples_and_importing_jaxgen_eval_registers_it():
    code = """
import sys
import ml_collections
from jaxgen.engine import evals, loop, sampling
from jaxgen.errors import ConfigError
print(sorted(m for m in sys.modules if m.startswith("jaxgen.eval")))
config = ml_collections.ConfigDict({"evals": {"fd": {"type": "samples"}}})
try:
    evals.check(config)
except ConfigError as e:
    print(e)
import jaxgen.eval
evals.check(config)
print(sorted(evals._TYPES))
"""
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == "[]"  # the engine imported nothing of jaxgen.eval
    assert "evals.fd.type='samples' is not a registered evaluation" in lines[1]
    assert "`import jaxgen.eval` adds 'samples'" in lines[1]
    assert lines[2] == "['held_out', 'samples']"


def test_inference_does_not_need_the_evaluation_types(tiny_vae_config):
    """``sample.py`` restores a run without importing what registered its evaluations."""
    from jaxgen.engine.config import validate

    tiny_vae_config.evals = {"fd": {"type": "registered_elsewhere"}}
    validate(tiny_vae_config, num_devices=8, need_data=False)
    with pytest.raises(ConfigError, match="'registered_elsewhere' is not a registered"):
        validate(tiny_vae_config, num_devices=8)


def test_config_flag_takes_a_file_or_a_built_in_config_by_name(tmp_path, monkeypatch):
    from jaxgen import configs

    assert set(configs.NAMES) == {p.stem for p in CONFIGS}
    assert os.path.samefile(configs.FOLDER, ROOT / "configs")  # the checkout's link
    vae = os.path.join(configs.FOLDER, "vae.py")
    assert configs.resolve("vae:mnist,tiny") == f"{vae}:mnist,tiny"
    assert configs.resolve("gan") == os.path.join(configs.FOLDER, "gan.py")
    own = tmp_path / "mine.py"
    own.write_text("")
    assert configs.resolve(f"{own}:x") == f"{own}:x"  # a file that exists is the user's
    monkeypatch.chdir(ROOT)
    assert configs.resolve("configs/vae.py:mnist") == "configs/vae.py:mnist"
    monkeypatch.chdir(tmp_path)  # outside the checkout the documented path still works
    assert configs.resolve("configs/vae.py:mnist") == f"{vae}:mnist"
    assert configs.resolve("other/vae.py:mnist") == "other/vae.py:mnist"  # config_flags says
    with pytest.raises(
        ConfigError, match="'vea' is neither .* built-in ones are autoencoder_kl, classifier, "
    ):
        configs.resolve("vea:mnist")
    argv = ["train.py", "--config", "vae:tiny", "--config.seed=1", "--workdir=x"]
    assert configs.resolve_argv(argv) == [*argv[:2], f"{vae}:tiny", *argv[3:]]
    assert (
        configs.resolve_argv(["t", "--config=gan:wgan"])[1]
        == f"--config={configs.FOLDER}/gan.py:wgan"
    )


def _can_build_wheels_offline() -> bool:
    """Whether this interpreter's setuptools builds wheels by itself (70.1 and later) or has the
    ``wheel`` package; otherwise pip builds in an isolated environment, fetching setuptools."""
    import setuptools

    major, minor = (int(v) for v in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


def _check(proc, what: str):
    assert proc.returncode == 0, f"{what} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
def test_an_installed_wheel_runs_without_the_repository(tmp_path):
    """Build a wheel from the package's files alone, install it into an empty folder and, from
    another folder, run ``python -m jaxgen.eval --help``, train the tiny VAE config by name on
    procedural shapes for two steps, and sample it: the commands and the configs travel with
    the wheel, and the jaxgen imported is the installed one."""
    src = tmp_path / "src"  # a copy, so that the build leaves nothing in the checkout
    shutil.copytree(ROOT / "jaxgen", src / "jaxgen", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    isolation = ["--no-build-isolation"] if _can_build_wheels_offline() else []
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    _check(
        subprocess.run(
            [*pip, "wheel", "--no-deps", *isolation, "-w", str(wheels), str(src)],
            capture_output=True,
            text=True,
            timeout=600,
        ),
        "pip wheel",
    )
    (wheel,) = wheels.glob("jaxgen-*.whl")
    _check(
        subprocess.run(
            [*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
            capture_output=True,
            text=True,
            timeout=300,
        ),
        "pip install",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site), JAX_PLATFORMS="cpu", XLA_FLAGS="")

    def run(*args):
        return subprocess.run(
            list(args), cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600
        )

    where = _check(run(sys.executable, "-c", "import jaxgen; print(jaxgen.__file__)"), "import")
    assert where.stdout.strip() == str(site / "jaxgen" / "__init__.py")

    def usage(*command) -> str:
        proc = run(*command, "--help")
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr  # absl --help
        return proc.stdout

    text = usage(sys.executable, "-m", "jaxgen.eval")
    assert "Evaluate a trained model" in text and "--workdir" in text
    text = usage(str(site / "bin" / "jaxgen-train"))
    assert "Train a jaxgen model" in text and "a built-in config by name" in text

    workdir = elsewhere / "run"
    train = run(
        str(site / "bin" / "jaxgen-train"),
        "--config=vae:mnist,tiny",
        f"--workdir={workdir}",
        "--config.data.source=shapes",
        "--config.data.num_train=256",
        "--config.data.num_test=64",
        "--config.train.num_steps=2",
    )
    assert "summary | steps=2" in _check(train, "jaxgen-train").stdout
    sample = run(sys.executable, "-m", "jaxgen.sample", f"--workdir={workdir}", "--num=4")
    assert "wrote" in _check(sample, "python -m jaxgen.sample").stdout
    assert (workdir / "samples.png").is_file()
