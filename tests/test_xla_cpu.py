"""jaxgen's XLA CPU setup (jaxgen.xla_cpu) and what every tool does before JAX starts
(cli.prepare_process): the flags are added, never over the user's, only for a measured jaxlib;
XLA accepts them and computes the same numbers; the tools' imports leave JAX's backend unmade,
so the flags take effect; the persistent compilation cache goes where it is told."""

import os
import subprocess
import sys
import textwrap

import pytest
from support import ROOT

from jaxgen import xla_cpu
from jaxgen.engine import cli

MEASURED = next(iter(xla_cpu.FLAGS))


def test_configure_adds_the_flags_of_a_measured_jaxlib(monkeypatch):
    monkeypatch.setattr(xla_cpu, "_jaxlib_version", lambda: MEASURED)
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    added = xla_cpu.configure(env)
    assert added and len(added) == len(xla_cpu.FLAGS[MEASURED])
    parts = env["XLA_FLAGS"].split()
    assert parts[0] == "--xla_force_host_platform_device_count=2"
    for name, value in xla_cpu.FLAGS[MEASURED].items():
        assert f"--{name}={value}" in parts
    assert xla_cpu.configure(env) == []  # a second call adds nothing
    assert env["XLA_FLAGS"].split() == parts


def test_configure_keeps_a_flag_the_user_set(monkeypatch):
    monkeypatch.setattr(xla_cpu, "_jaxlib_version", lambda: MEASURED)
    name = next(iter(xla_cpu.FLAGS[MEASURED]))
    env = {"XLA_FLAGS": f"--{name}=mine"}
    added = xla_cpu.configure(env)
    assert all(not a.startswith(f"--{name}=") for a in added)
    assert env["XLA_FLAGS"].split().count(f"--{name}=mine") == 1


@pytest.mark.parametrize("value", ["0", "false", "off"])
def test_opt_out_adds_nothing(monkeypatch, value):
    monkeypatch.setattr(xla_cpu, "_jaxlib_version", lambda: MEASURED)
    env = {xla_cpu.OPT_OUT: value}
    assert xla_cpu.configure(env) == [] and "XLA_FLAGS" not in env


def test_an_unmeasured_jaxlib_gets_no_flags(monkeypatch):
    # XLA aborts on a flag it does not know; experimental flags come and go between versions.
    monkeypatch.setattr(xla_cpu, "_jaxlib_version", lambda: (0, 99))
    env = {}
    assert xla_cpu.configure(env) == [] and "XLA_FLAGS" not in env
    assert xla_cpu.flags_for(None) == {}


PROGRAM = textwrap.dedent(
    """
    import sys
    from jaxgen import xla_cpu
    if sys.argv[1] == "on":
        xla_cpu.configure()
    import jax, jax.numpy as jnp, numpy as np
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((4, 14, 14, 8)), rng.standard_normal((3, 3, 8, 16))
    d, g = rng.standard_normal((16, 5)), rng.standard_normal((4, 14, 14, 5))
    def f(x, w, d):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y @ d
    args = [jnp.asarray(a, jnp.float32) for a in (x, w, d)]
    out, vjp = jax.vjp(jax.jit(f), *args)
    grads = vjp(jnp.asarray(g, jnp.float32))
    np.savez(sys.argv[2], out=out, gx=grads[0], gw=grads[1], gd=grads[2])
    """
)


def _reference():
    """The program's numbers in float64 numpy: the convolution as 9 shifted matmuls."""
    import numpy as np

    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((4, 14, 14, 8)), rng.standard_normal((3, 3, 8, 16))
    d, g = rng.standard_normal((16, 5)), rng.standard_normal((4, 14, 14, 5))
    x, w, d, g = (a.astype(np.float32).astype(np.float64) for a in (x, w, d, g))
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    window = lambda i, j: xp[:, i : i + 14, j : j + 14, :]
    y = sum(window(i, j) @ w[i, j] for i in range(3) for j in range(3))
    gy = g @ d.T
    gw = np.stack(
        [np.einsum("bhwc,bhwo->co", window(i, j), gy) for i in range(3) for j in range(3)]
    )
    gxp = np.zeros_like(xp)
    for i in range(3):
        for j in range(3):
            gxp[:, i : i + 14, j : j + 14, :] += gy @ w[i, j].T
    return {
        "out": y @ d,
        "gx": gxp[:, 1:-1, 1:-1, :],
        "gw": gw.reshape(w.shape),
        "gd": np.einsum("bhwo,bhwk->ok", y, g),
    }


def test_xla_accepts_the_flags_and_computes_as_exactly_as_without(tmp_path):
    """A convolution, a dot and their three gradients, with and without the flags, each in a
    fresh process (the flags act when JAX starts): both within float32 rounding of a float64
    reference. With a jaxlib the table does not know, both runs are plain XLA."""
    import numpy as np

    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    ref = _reference()
    for mode in ("on", "off"):
        path = tmp_path / f"{mode}.npz"
        proc = subprocess.run(
            [sys.executable, "-c", PROGRAM, mode, str(path)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        got = np.load(path)
        for name, want in ref.items():
            err = np.max(np.abs(got[name] - want)) / np.max(np.abs(want))
            assert err < 1e-5, (mode, name, err)


@pytest.mark.parametrize("module", ["jaxgen.train", "jaxgen.sample", "jaxgen.eval.__main__"])
def test_the_tools_imports_leave_the_backend_unmade(module):
    """prepare_process runs in each tool's run(), after its imports: if an import made JAX's
    backend (an array at module level), the flags would come too late and do nothing."""
    code = (
        f"import {module}\n"
        "from jax._src import xla_bridge\n"
        "raise SystemExit(3 if xla_bridge.backends_are_initialized() else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_cache_dir_follows_the_environment(tmp_path):
    assert cli.cache_dir({cli.CACHE_ENV: str(tmp_path)}) == str(tmp_path)
    assert cli.cache_dir({cli.CACHE_ENV: ""}) is None  # off
    assert cli.cache_dir({"XDG_CACHE_HOME": "/c"}) == os.path.join("/c", "jaxgen", "xla")
    # JAX's own setting wins: jaxgen then sets nothing.
    assert cli.cache_dir({"JAX_COMPILATION_CACHE_DIR": "/j", cli.CACHE_ENV: "/x"}) is None
