"""Test setup: 8 fake CPU devices (set before JAX is imported) and shared helpers."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import importlib.util  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CONFIGS = sorted((ROOT / "configs").glob("*.py"))


def load_config(path, arg=None):
    """``get_config(arg)`` of a config file, as ``--config=path:arg`` would give it."""
    spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def offline_data(config):
    """Point a config at procedural data when its real data is not on this machine."""
    if config.data.source in ("idx", "npz", "image_folder", "tfds") and not os.path.exists(
        config.data.path
    ):
        config.data.source = "shapes"
        config.data.num_train, config.data.num_test = 256, 64
    return config


@pytest.fixture
def tiny_vae_config():
    """The tiny VAE config on procedural 16x16 shapes: fast and needs no files."""
    config = load_config(ROOT / "configs" / "vae_mnist.py", "tiny")
    config.data.source = "shapes"
    config.data.image_shape = (16, 16, 1)
    config.data.num_train, config.data.num_test = 256, 64
    return config
