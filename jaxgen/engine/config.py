"""The engine's config keys (``base_config``) and validation at the start of a run.

Config files (``configs/*.py``) start from ``base_config()`` and add their family's sections
(``model``, ``loss``, ...); see ``configs/common.py``.
"""

from __future__ import annotations

import json
import math
import os

import ml_collections

from jaxgen.data.sources import HOW_TO_GET, SOURCES
from jaxgen.engine import evals
from jaxgen.errors import ConfigError
from jaxgen.families import get_family

FSDP_MIN_SIZE = 2**16  # default mesh.fsdp_min_size: smaller arrays stay replicated


# The largest seed: every seed goes into jax.random.PRNGKey and numpy generators, and 32 bits
# fit both on every platform (a larger one is an OverflowError deep inside).
MAX_SEED = 2**32 - 1


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.family = ""
    c.seed = 0
    c.distributed = False  # call jax.distributed.initialize() (also: JAXGEN_DISTRIBUTED=1)

    c.data = ml_collections.ConfigDict()
    c.data.dataset = ""  # the data set's name (mnist, ...): how jaxgen.eval finds its evaluator
    c.data.source = "idx"  # one of jaxgen.data.sources.SOURCES
    c.data.path = ""  # folder or file, depending on the source
    c.data.name = ""  # TFDS name, for source=tfds
    c.data.train_split = "train"
    c.data.test_split = "test"
    c.data.image_shape = (28, 28, 1)  # (H, W, C); checked against the data
    c.data.num_train = 2048  # procedural and composed sources only
    c.data.num_test = 512
    # Derived data (jaxgen.data.derived): two-image canvases and captions, fixed by data.seed.
    c.data.compose = ""  # "" | "pairs": two images side by side, label K * left + right
    c.data.captions = ""  # a caption set of jaxgen.data.captions: batches gain "text" tokens
    c.data.caption_len = 12  # tokens per caption, <bos> included
    c.data.held_out = True  # keep the held-out templates and ordered pairs out of training
    c.data.seed = 0  # the seed of composed pairs and captions (not the training seed)

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
    # A NaN or Inf train metric (loss, gradient norm): "stop" the run (the newest finite
    # checkpoint stays the latest) or "skip" that update and count it.
    c.train.nonfinite = "stop"
    c.train.prefetch = 2  # batches assembled ahead on a background thread; 0: none

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 200  # divides 10,000 test images and 1, 2, 4 or 8 devices
    c.eval.num_examples = 1_000  # 0: the whole test split
    c.eval.final_num_examples = 0  # the eval after the last step; 0: whole test split

    # What sample.py, python -m jaxgen.eval and the training loop's grids use for a sampling
    # option (Family.sample_options) the command line does not give: option name, with '_' for
    # '-', -> value. A class-conditional diffusion model sets its guidance here, say.
    c.sample_defaults = ml_collections.ConfigDict()

    # Evaluations the training loop runs (jaxgen.engine.evals): name -> {type, settings}.
    c.evals = ml_collections.ConfigDict({"held_out": {"type": "held_out"}})

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # devices on the data axis; -1: all the fsdp axis leaves
    # Devices that share one copy of the train state: each array of at least fsdp_min_size
    # elements is split over them (FSDP); 1: the state is replicated on every device.
    c.mesh.fsdp = 1
    c.mesh.fsdp_min_size = FSDP_MIN_SIZE
    return c


NONFINITE = ("stop", "skip")

# Keys a resumed run may change without --allow_config_change: how long it runs, how often it
# logs, evaluates, samples and saves, and how it evaluates; nothing that changes the model, the
# data or the optimisation.
RESUMABLE = (
    "train.num_steps",
    "train.log_every",
    "train.eval_every",
    "train.sample_every",
    "train.sample_num",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.progress",
    "train.prefetch",
    "eval.",
    "evals.",
    "distributed",
    # The layout of the state over devices, not the model: a checkpoint restores into any.
    "mesh.fsdp",
    "mesh.fsdp_min_size",
)


# Keys added after runs were saved without them, with the value those runs had in effect:
# ``differences`` takes a stored config's missing key to have it.
ADDED_KEYS = {
    "data.compose": "",
    "data.captions": "",
    "data.caption_len": 12,
    "data.held_out": True,
    "data.seed": 0,
    "diffusion.ema_warmup": False,
    "model.pooled_context": False,
}


def _flatten(tree, prefix="") -> dict:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = tuple(value) if isinstance(value, list) else value
    return out


def differences(stored, new) -> list[str]:
    """``key: stored -> new`` for every value that differs between two configs."""
    old = {**ADDED_KEYS, **_flatten(json.loads(stored.to_json()))}
    cur = {**ADDED_KEYS, **_flatten(json.loads(new.to_json()))}
    out = []
    for key in sorted(set(old) | set(cur)):
        if old.get(key, "<absent>") != cur.get(key, "<absent>"):
            out.append(f"{key}: {old.get(key, '<absent>')!r} -> {cur.get(key, '<absent>')!r}")
    return out


def resumable(diff_line: str) -> bool:
    key = diff_line.split(":", 1)[0]
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUMABLE)


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


def validate(
    config,
    num_devices: int,
    process_count: int = 1,
    need_data: bool = True,
    fsdp: int | None = None,
) -> None:
    """Check a config before anything is compiled; raise ConfigError naming the bad value.

    ``fsdp``: the ``fsdp`` size the mesh will have, when it differs from ``mesh.fsdp``
    (inference on fewer devices); by default ``mesh.fsdp``."""
    family = get_family(config.family)  # raises on an unknown family
    seed = config.seed
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed={seed!r} must be an integer in [0, {MAX_SEED}]")
    train = config.train
    if train.get("nonfinite", "stop") not in NONFINITE:
        raise ConfigError(f"train.nonfinite={train.nonfinite!r} is not one of {NONFINITE}")
    prefetch = train.get("prefetch", 0)
    if not isinstance(prefetch, int) or isinstance(prefetch, bool) or prefetch < 0:
        raise ConfigError(f"train.prefetch={prefetch!r} must be an integer >= 0")
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
    wanted = config.mesh.get("fsdp", 1)
    if not isinstance(wanted, int) or isinstance(wanted, bool) or wanted < 1:
        raise ConfigError(f"mesh.fsdp={wanted!r} must be a positive integer (1: no sharding)")
    fsdp = wanted if fsdp is None else fsdp
    if num_devices % fsdp:
        divisors = [d for d in range(1, num_devices + 1) if num_devices % d == 0]
        raise ConfigError(
            f"mesh.fsdp={fsdp} does not divide the {num_devices} devices; use one of {divisors}"
        )
    min_size = config.mesh.get("fsdp_min_size", FSDP_MIN_SIZE)
    if not isinstance(min_size, int) or isinstance(min_size, bool) or min_size < 0:
        raise ConfigError(f"mesh.fsdp_min_size={min_size!r} must be an integer >= 0")
    data_devices = num_devices // fsdp
    if config.mesh.data not in (-1, data_devices):
        what = "the device count" if fsdp == 1 else f"the device count over mesh.fsdp={fsdp}"
        raise ConfigError(
            f"mesh.data={config.mesh.data!r} must be -1 (all devices) or {what}, "
            f"{data_devices}; the data and fsdp axes span every device"
        )
    for key in ("train.batch_size", "eval.batch_size"):
        section, name = key.split(".")
        value = config[section][name]
        multiple = math.lcm(num_devices, process_count)
        if value % multiple:
            raise ConfigError(
                f"{key}={value} is not divisible by the {num_devices} devices the batch is "
                f"split over ({process_count} processes); use a multiple of {multiple}"
            )
    shape = tuple(config.data.image_shape)
    if len(shape) != 3 or any(not isinstance(s, int) or s < 1 for s in shape):
        raise ConfigError(f"data.image_shape={shape!r} must be three positive ints (H, W, C)")
    if config.data.source not in SOURCES:
        raise ConfigError(f"data.source={config.data.source!r} is not one of {SOURCES}")
    check_derived_data(config.data)
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
            dataset = config.data.get("dataset", "")
            if dataset in HOW_TO_GET:
                raise ConfigError(
                    f"data.path={path!r} does not exist; {dataset} is read from there: "
                    f"{HOW_TO_GET[dataset]}"
                )
            raise ConfigError(
                f"data.path={path!r} does not exist; data.source={config.data.source!r} needs "
                f"{hint}. Set it with --config.data.path=..."
            )
    if need_data:  # inference (no data) runs no evaluations, so their types need not be known
        evals.check(config)
    check_sample_defaults(config, family)
    family.validate_config(config)


def check_derived_data(data) -> None:
    """``data.compose`` and ``data.captions`` name what exists, and captions fit
    ``data.caption_len``."""
    from jaxgen.data import captions, derived

    compose = data.get("compose", "")
    if compose not in derived.COMPOSE:
        raise ConfigError(f"data.compose={compose!r} is not one of {derived.COMPOSE}")
    name = data.get("captions", "")
    if not name:
        return
    try:
        caption_set = captions.caption_set(name)
    except captions.CaptionError as e:
        raise ConfigError(str(e)) from None
    need = caption_set.max_words() + 1
    length = data.caption_len
    if not isinstance(length, int) or isinstance(length, bool) or length < need:
        raise ConfigError(
            f"data.caption_len={length!r} is too short for data.captions={name!r}: its longest "
            f"caption has {need - 1} words, so use at least {need} tokens (<bos> included)"
        )


def check_sample_defaults(config, family) -> None:
    """``sample_defaults`` names sampling options of the family, each with a value its flag
    would accept (a run's own guiding classifier cannot be a default: it is another run)."""
    options = {o.name.replace("-", "_"): o for o in family.sample_options}
    for key, value in config.get("sample_defaults", {}).items():
        opt = options.get(key)
        if opt is None or opt.kind == "workdir":
            choices = sorted(k for k, o in options.items() if o.kind != "workdir")
            raise ConfigError(
                f"sample_defaults.{key} is not a sampling option of the {family.name!r} family; "
                f"its options are {choices or 'none'}"
            )
        if not opt.accepts(value):
            raise ConfigError(
                f"sample_defaults.{key}={value!r} is not of --{opt.name}'s type ({opt.kind})"
            )
        problem = opt.problem(value)
        if problem:
            raise ConfigError(f"sample_defaults.{key}={value!r} {problem}")
