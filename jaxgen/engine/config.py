"""The engine's config keys (``base_config``) and validation at the start of a run.

Config files (``configs/*.py``) start from ``base_config()`` and add their family's sections
(``model``, ``loss``, ...); see ``configs/common.py``.
"""

from __future__ import annotations

import math
import os

import ml_collections

from jaxgen.data.sources import SOURCES
from jaxgen.engine import evals
from jaxgen.errors import ConfigError
from jaxgen.families import get_family


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.family = ""
    c.seed = 0
    c.distributed = False  # call jax.distributed.initialize() (also: JAXGEN_DISTRIBUTED=1)

    c.data = ml_collections.ConfigDict()
    c.data.source = "idx"  # one of jaxgen.data.sources.SOURCES
    c.data.path = ""  # folder or file, depending on the source
    c.data.name = ""  # TFDS name, for source=tfds
    c.data.train_split = "train"
    c.data.test_split = "test"
    c.data.image_shape = (28, 28, 1)  # (H, W, C); checked against the data
    c.data.num_train = 2048  # procedural sources only
    c.data.num_test = 512

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 1e-3
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999
    c.optimizer.weight_decay = 0.0
    c.optimizer.warmup_steps = 0
    c.optimizer.decay_steps = 0  # > 0: cosine decay to 0 over this many steps after warm-up
    c.optimizer.grad_clip = 0.0

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 128  # global, over all devices and hosts
    c.train.num_steps = 10_000
    c.train.log_every = 100
    c.train.eval_every = 1_000  # 0: only at the end
    c.train.sample_every = 1_000  # 0: only at the end
    c.train.sample_num = 64
    c.train.checkpoint_every = 1_000
    c.train.keep_checkpoints = 3
    c.train.progress = True

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 200  # divides 10,000 test images and 1, 2, 4 or 8 devices
    c.eval.num_examples = 1_000  # 0: the whole test split
    c.eval.final_num_examples = 0  # the eval after the last step; 0: whole test split

    # Evaluations the training loop runs (jaxgen.engine.evals): name -> {type, settings}.
    c.evals = ml_collections.ConfigDict({"held_out": {"type": "held_out"}})

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # devices on the data axis; -1: all (the only layout so far)
    return c


def _positive(c, key):
    section, name = key.split(".")
    value = c[section][name]
    if not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key}={value!r} must be a positive integer")


def _non_negative(c, key):
    section, name = key.split(".")
    value = c[section][name]
    if not isinstance(value, int) or value < 0:
        raise ConfigError(f"{key}={value!r} must be an integer >= 0")


def validate(config, num_devices: int, process_count: int = 1, need_data: bool = True) -> None:
    """Check a config before anything is compiled; raise ConfigError naming the bad value."""
    family = get_family(config.family)  # raises on an unknown family
    for key in (
        "train.batch_size",
        "train.num_steps",
        "eval.batch_size",
        "train.sample_num",
        "train.keep_checkpoints",
        "train.log_every",
    ):
        _positive(config, key)
    for key in (
        "train.eval_every",
        "train.sample_every",
        "train.checkpoint_every",
        "eval.num_examples",
        "eval.final_num_examples",
    ):
        _non_negative(config, key)
    if config.mesh.data not in (-1, num_devices):
        raise ConfigError(
            f"mesh.data={config.mesh.data!r} must be -1 (all devices) or the device count, "
            f"{num_devices}; the data axis spans every device"
        )
    data_devices = num_devices
    for key in ("train.batch_size", "eval.batch_size"):
        section, name = key.split(".")
        value = config[section][name]
        multiple = math.lcm(data_devices, process_count)
        if value % multiple:
            raise ConfigError(
                f"{key}={value} is not divisible by the {data_devices} devices on the data axis"
                f" ({process_count} processes); use a multiple of {multiple}"
            )
    shape = tuple(config.data.image_shape)
    if len(shape) != 3 or any(not isinstance(s, int) or s < 1 for s in shape):
        raise ConfigError(f"data.image_shape={shape!r} must be three positive ints (H, W, C)")
    if config.data.source not in SOURCES:
        raise ConfigError(f"data.source={config.data.source!r} is not one of {SOURCES}")
    if need_data and config.data.source in ("idx", "npz", "image_folder", "tfds"):
        path = config.data.path
        if not path or not os.path.exists(path):
            hint = {
                "idx": "a folder with MNIST-layout IDX files, e.g. "
                "/usr/share/datasets/fashion-mnist (apt-get install dataset-fashion-mnist)",
                "npz": "a .npz file with x_train, y_train, x_test, y_test, e.g. "
                "../shared/data/mnist.npz",
                "image_folder": "a folder with train/ and test/ subfolders of class folders",
                "tfds": "a TFDS data dir with the data set already prepared",
            }[config.data.source]
            raise ConfigError(
                f"data.path={path!r} does not exist; data.source={config.data.source!r} needs "
                f"{hint}. Set it with --config.data.path=..."
            )
    evals.check(config)
    family.validate_config(config)
