r"""Sample from a trained jaxgen model.

    python sample.py --workdir=runs/vae --num=64 [--seed=0] [--out=samples.png] [--reconstruct]

A VQ-VAE alone writes reconstructions; its PixelCNN prior generates, per class when it is
conditional (``--class=N|all``):

    python sample.py --workdir=runs/pixelcnn_mnist --class=all --num=100 [--temperature=1.0]

Guided generation from a diffusion model:

    python sample.py --workdir=runs/cfg --sampler=dpm_solver++ --steps=20 --guidance=cfg \
        --scale=3 --class=7 [--negative-class=1] --num=64
    python sample.py --workdir=runs/diff --guidance=classifier --classifier-workdir=runs/clf \
        --scale=2 --class=all --num=100

Restores the latest checkpoint (EMA parameters where the family keeps them) and writes a PNG grid
and an ``.npz`` of the images (float32 ``[N, H, W, C]`` in [0, 1], and their ``labels`` when
conditional) beside it. Family options are flags too (e.g. --temperature for the VAE).
``--class=all`` writes one row per class, ``--num // classes`` images each.
"""

import os
import sys

import jax
import numpy as np
from absl import app, flags, logging

from jaxgen.data import DataError, load_splits
from jaxgen.engine import loop
from jaxgen.engine.images import save_grid
from jaxgen.errors import CheckpointError, ConfigError
from jaxgen.families import FAMILIES, get_family

_WORKDIR = flags.DEFINE_string("workdir", None, "A train.py workdir.")
_NUM = flags.DEFINE_integer("num", 64, "How many images.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_OUT = flags.DEFINE_string("out", None, "PNG path (default: <workdir>/samples.png).")
_RECON = flags.DEFINE_bool(
    "reconstruct",
    False,
    "Reconstruct the first --num test images instead (families that "
    "encode); the grid shows originals and reconstructions in alternate rows.",
)
_GUIDANCE = flags.DEFINE_enum(
    "guidance",
    "none",
    ["none", "cfg", "classifier"],
    "diffusion: classifier-free guidance (cfg) or classifier guidance (classifier).",
)
_SCALE = flags.DEFINE_float(
    "scale", None, "Guidance strength: CFG's w (1: the plain conditional model) or classifier s."
)
_CLASS = flags.DEFINE_string(
    "class", None, "Class to generate: an index, or 'all' for one row per class (default: in turn)."
)
_NEGATIVE = flags.DEFINE_integer(
    "negative-class", None, "CFG: steer away from this class (replaces the null class)."
)
_RESCALE = flags.DEFINE_float("rescale", 0.0, "CFG: guidance rescale phi in [0, 1] (0: off).")
_INTERVAL = flags.DEFINE_list(
    "interval", None, "CFG: t_lo,t_hi; guidance applies only for t in [t_lo, t_hi]."
)
_CLASSIFIER = flags.DEFINE_string(
    "classifier-workdir", None, "Classifier guidance: a noise-aware classifier's workdir."
)
flags.mark_flag_as_required("workdir")

# Each family's sampling options become flags, typed by their defaults; only the chosen
# family's options are passed on.
_DEFINE = {
    bool: flags.DEFINE_bool,
    int: flags.DEFINE_integer,
    float: flags.DEFINE_float,
    str: flags.DEFINE_string,
}
_OPTION_FLAGS = {}
for _name in FAMILIES:
    for _opt, (_default, _help) in get_family(_name).SAMPLE_OPTIONS.items():
        if _opt not in _OPTION_FLAGS:
            _OPTION_FLAGS[_opt] = _DEFINE[type(_default)](_opt, _default, _help)
flags.DEFINE_alias("sampler", "solver")


def _reconstructions(setup, state, num):
    family = setup.family
    if not hasattr(family, "reconstruct"):
        raise ConfigError(f"family {setup.config.family!r} does not reconstruct")
    _, test = load_splits(setup.config.data)
    originals = test.get(np.arange(min(num, test.num_examples)))["image"]
    recon = jax.jit(lambda s, x: family.reconstruct(setup.config, s, x))(state, originals)
    originals = originals.astype(np.float32) / 255.0
    recon = np.asarray(recon)
    ncol = 8
    rows = []  # alternate rows: originals, then their reconstructions
    for i in range(0, len(originals), ncol):
        rows += [originals[i : i + ncol], recon[i : i + ncol]]
    return np.concatenate(rows), ncol, {"originals": originals, "reconstructions": recon}


def _class_count(config, classifier) -> int:
    if classifier is not None:
        return int(classifier[0].model.num_classes)
    return int(config.model.get("num_classes", 0)) if "model" in config else 0


_LABELLED = ("diffusion", "pixelcnn")  # families whose ``sample`` takes ``label``


def _class_choice(config, k: int):
    """``(num, ncol, label)`` from --class and --num for a model with ``k`` classes."""
    num, ncol, label = _NUM.value, None, None
    if _CLASS.value is None:
        return num, ncol, label
    if k == 0:
        hint = (
            "steer it with --guidance=classifier and a noise-aware classifier"
            if config.family == "diffusion"
            else "train a conditional one (model.num_classes > 0) to choose the class"
        )
        raise ConfigError(
            f"--class was given but the model is unconditional (model.num_classes=0); {hint}"
        )
    if _CLASS.value == "all":
        per_class = max(1, num // k)
        return k * per_class, per_class, np.repeat(np.arange(k, dtype=np.int32), per_class)
    try:
        label = int(_CLASS.value)
    except ValueError:
        label = -1
    if not 0 <= label < k:
        raise ConfigError(
            f"--class={_CLASS.value!r} is not a class of this model; use 0..{k - 1} or 'all'"
        )
    return num, ncol, label


def _labels_of(label, num: int, k: int):
    labels = label if isinstance(label, np.ndarray) else None
    if labels is None and k:
        labels = np.full(num, label) if label is not None else np.arange(num) % k
    return labels


def _guided_options(config):
    """``(num, ncol, labels, options)`` for the family's ``sample`` from the class and
    guidance flags."""
    guided_flags = [
        name
        for name in ("guidance", "scale", "negative-class", "interval", "rescale")
        + ("classifier-workdir",)
        if flags.FLAGS[name].present
    ]
    if config.family != "diffusion":
        if guided_flags:
            raise ConfigError(
                f"--{guided_flags[0]} is for diffusion models; this workdir holds a "
                f"{config.family!r} model"
            )
        if config.family not in _LABELLED:
            if _CLASS.value is not None:
                raise ConfigError(
                    f"--class is for conditional models; this workdir holds a "
                    f"{config.family!r} model, which takes no class"
                )
            return _NUM.value, None, None, {}
        k = _class_count(config, None)
        num, ncol, label = _class_choice(config, k)
        return num, ncol, _labels_of(label, num, k), {"label": label}
    guidance = _GUIDANCE.value
    if guidance != "none" and _SCALE.value is None:
        raise ConfigError(f"--guidance={guidance} needs --scale (e.g. --scale=3)")
    if guidance != "classifier" and _CLASSIFIER.value:
        raise ConfigError("--classifier-workdir is only used with --guidance=classifier")
    if guidance != "cfg":
        for name in ("negative-class", "interval", "rescale"):
            if flags.FLAGS[name].present:
                raise ConfigError(f"--{name} is an option of --guidance=cfg")
    classifier = None
    if guidance == "classifier":
        if not _CLASSIFIER.value:
            raise ConfigError("--guidance=classifier needs --classifier-workdir=<a classifier run>")
        clf_setup, clf_state = loop.restore_for_inference(_CLASSIFIER.value)
        classifier = (clf_setup.config, clf_state.params)
    k = _class_count(config, classifier)
    num, ncol, label = _class_choice(config, k)
    if _NEGATIVE.value is not None and not 0 <= _NEGATIVE.value < k:
        raise ConfigError(
            f"--negative-class={_NEGATIVE.value} is not a class of this model; use 0..{k - 1}"
        )
    interval = None
    if _INTERVAL.value:
        try:
            interval = tuple(float(v) for v in _INTERVAL.value)
        except ValueError:
            interval = ()
        if len(interval) != 2 or not 0 <= interval[0] <= interval[1] <= 1:
            raise ConfigError(
                f"--interval={','.join(_INTERVAL.value)} must be t_lo,t_hi with "
                "0 <= t_lo <= t_hi <= 1"
            )
    if not 0 <= _RESCALE.value <= 1:
        raise ConfigError(f"--rescale={_RESCALE.value} must be in [0, 1]")
    options = {"label": label, "guidance": guidance}
    if guidance != "none":
        options.update(scale=_SCALE.value, classifier=classifier)
    if guidance == "cfg":
        options.update(negative_label=_NEGATIVE.value, rescale=_RESCALE.value, interval=interval)
    return num, ncol, _labels_of(label, num, k), options


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    try:
        if _NUM.value < 1:
            raise ConfigError(f"--num={_NUM.value} must be >= 1")
        setup, state = loop.restore_for_inference(_WORKDIR.value)
        reconstruct = _RECON.value
        if not hasattr(setup.family, "sample") and hasattr(setup.family, "reconstruct"):
            # e.g. a VQ-VAE alone: it generates only with a prior over its codes
            print(
                f"{setup.config.family!r} does not generate on its own (train a prior on its "
                "codes for that); writing reconstructions of test images"
            )
            reconstruct = True
        name = "reconstructions.png" if reconstruct else "samples.png"
        out = _OUT.value or os.path.join(_WORKDIR.value, name)
        if reconstruct:
            grid, ncol, arrays = _reconstructions(setup, state, _NUM.value)
        else:
            family = setup.family
            if not hasattr(family, "sample"):
                raise ConfigError(
                    f"{_WORKDIR.value} holds a {setup.config.family!r} model, which does not "
                    "generate; give the workdir of a generative model"
                )
            options = {k: _OPTION_FLAGS[k].value for k in family.SAMPLE_OPTIONS}
            num, ncol, labels, guide = _guided_options(setup.config)
            options.update(guide)
            key = jax.random.PRNGKey(_SEED.value)
            classifier = options.pop("classifier", None)
            if classifier is None:
                fn = jax.jit(lambda s, r: family.sample(setup.config, s, r, num, **options))
                grid = np.asarray(fn(state, key))
            else:  # its parameters are an argument, not constants baked into the program
                clf_config, clf_params = classifier

                def guided(s, r, c):
                    clf = (clf_config, c)
                    return family.sample(setup.config, s, r, num, classifier=clf, **options)

                grid = np.asarray(jax.jit(guided)(state, key, clf_params))
            arrays = {"images": grid}
            if labels is not None:
                arrays["labels"] = np.asarray(labels)
        save_grid(grid, out, ncol)
        npz = os.path.splitext(out)[0] + ".npz"
        np.savez_compressed(npz, **arrays)
        print(f"wrote {out} and {npz} (step {int(state.step)}, family {setup.config.family})")
    except (ConfigError, DataError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
