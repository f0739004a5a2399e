"""What the config files share: the data sets, variant parsing, and presets of the engine keys.

``--config=configs/<family>.py:<data set>,<variant>,...``: a config's argument names at most one
data set of its ``DATASETS`` (the first one when none is given) and any of its ``VARIANTS``.
Every config file declares both as data, so tools and tests can list them.
"""

from __future__ import annotations

import os

import ml_collections

from jaxgen.engine.config import base_config
from jaxgen.errors import ConfigError

# The checkout (this file is jaxgen/configs/common.py in it); MNIST is read from beside it.
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Where each data set is read from by default (override with --config.data.path=...): MNIST from
# $JAXGEN_MNIST when set (read when a config is made), else from ../shared/data/mnist.npz beside
# the checkout.
MNIST_NPZ = os.path.normpath(os.path.join(_ROOT, "..", "shared", "data", "mnist.npz"))
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist
TFDS_DIR = os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))

DATA = {
    # name: (source, path, TFDS name, image shape)
    "mnist": ("npz", MNIST_NPZ, "", (28, 28, 1)),
    "fashion_mnist": ("idx", FASHION_MNIST_DIR, "", (28, 28, 1)),
    "cifar10": ("tfds", TFDS_DIR, "cifar10", (32, 32, 3)),
    # Two MNIST digits side by side (jaxgen.data.derived), label 10 * left + right.
    "mnist_pairs": ("npz", MNIST_NPZ, "", (28, 56, 1)),
}


def parse(arg: str | None, datasets, variants) -> tuple[str, set[str]]:
    """``(data set, variants)`` from a config argument such as ``"fashion_mnist,tiny"``."""
    names = {v.strip() for v in (arg or "").split(",") if v.strip()}
    chosen = sorted(names & set(datasets))
    unknown = names - set(datasets) - set(variants)
    if unknown:
        raise ConfigError(
            f"config variant(s) {sorted(unknown)} not known; this config offers the data sets "
            f"{sorted(datasets)} and the variants {sorted(variants)}"
        )
    if len(chosen) > 1:
        raise ConfigError(f"config names two data sets {chosen}; choose one of {list(datasets)}")
    return (chosen[0] if chosen else datasets[0]), names - set(chosen)


def new(family: str, dataset: str) -> ml_collections.ConfigDict:
    """The engine's base config for ``family``, reading ``dataset`` from its default place."""
    c = base_config()
    c.family = family
    c.data.dataset = dataset
    c.data.source, c.data.path, c.data.name, c.data.image_shape = DATA[dataset]
    if dataset in ("mnist", "mnist_pairs"):
        c.data.path = os.environ.get("JAXGEN_MNIST") or c.data.path
    if dataset == "mnist_pairs":
        c.data.compose = "pairs"
        c.data.num_train, c.data.num_test = 60_000, 10_000
    return c


def tiny(c: ml_collections.ConfigDict) -> None:
    """The ``tiny`` variant's engine settings: a few steps, small batches, small evals."""
    c.train.batch_size = 16
    c.train.num_steps = 4
    c.train.log_every = 2
    c.train.eval_every = 0
    c.train.sample_every = 0
    c.train.sample_num = 16
    c.train.checkpoint_every = 2
    c.train.progress = False
    c.eval.batch_size = 16
    c.eval.num_examples = 32
    c.eval.final_num_examples = 32


def schedule_28x28(c: ml_collections.ConfigDict) -> None:
    """The training schedule the two-stage 28x28 configs (VQ-VAE, PixelCNN prior) share:
    2,000 Adam steps of batch 64 at 1e-3, 100 warm-up steps then cosine decay to 0, evals of
    2,000 test images every 1,000 steps and the full 10,000 at the end."""
    c.train.batch_size = 64
    c.train.num_steps = 2_000
    c.train.eval_every = 1_000
    c.train.checkpoint_every = 1_000
    c.train.sample_every = 1_000
    c.optimizer.learning_rate = 1e-3
    c.optimizer.warmup_steps = 100
    c.optimizer.decay_steps = c.train.get_ref("num_steps") - 100
    c.eval.batch_size = 400
    c.eval.num_examples = 2_000
    c.eval.final_num_examples = 10_000


def section(**values) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(values)


def first_stage(dataset: str) -> ml_collections.ConfigDict:
    """A prior's ``first_stage`` section: the trained tokenizer it models the codes of."""
    return section(
        workdir=f"runs/vqvae_{dataset}",  # a trained tokenizer run
        config=section(),  # filled from its config.json when the run starts
        # True: the tokenizer may have been trained on another data set than the prior's
        # (a deliberate transfer); by default that is refused.
        allow_other_data=False,
    )
