"""Sampling a trained run through its family's contract: options, classes, one compiled call.

``sample.py`` is flags around these functions; they never name a family. A family declares its
options (``Family.sample_options``), checks them and turns them into ``sample``'s keyword
arguments (``prepare_sample``); an option of type ``workdir`` (a guiding classifier, say) is
restored here and handed to the family as ``(config, state)``.
"""

from __future__ import annotations

import jax
import numpy as np

from jaxgen.errors import ConfigError
from jaxgen.families import Family, Samples


def prepare(setup, values: dict, restore) -> dict:
    """``sample``'s keyword arguments from option values by name (missing: the default).

    ``restore(workdir) -> (setup, state)`` restores options of type ``workdir``."""
    family: Family = setup.family
    known = {o.name for o in family.sample_options}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"{unknown} are not sampling options of the {family.name!r} family; its options "
            f"are {sorted(known) or 'none'}"
        )
    options = {}
    for opt in family.sample_options:
        value = values.get(opt.name, opt.default)
        if opt.kind == "workdir" and value:
            other_setup, other_state = restore(value)
            value = (other_setup.config, other_state)
        options[opt.name] = value
    if family.prepare_sample is not None:
        return family.prepare_sample(setup.config, options)
    return {name.replace("-", "_"): value for name, value in options.items()}


def class_choice(setup, kwargs: dict, class_value: str | None, num: int):
    """``(num, ncol, label)`` for ``--class`` (an index, ``'all'`` or ``None``): ``'all'`` gives
    one row per class of ``num // classes`` images; ``label`` is ``None``, an int or an array."""
    family, caps = setup.family, setup.caps
    if class_value is None:
        return num, None, None
    if caps.num_classes is None:
        raise ConfigError(
            f"--class is for conditional models; this workdir holds a {family.name!r} model, "
            "which takes no class"
        )
    k = caps.num_classes
    if family.sample_classes is not None:
        k = family.sample_classes(setup.config, kwargs)
    if k == 0:
        raise ConfigError(
            "--class was given but the model is unconditional (model.num_classes=0); "
            f"{caps.unconditional_hint}"
        )
    if class_value == "all":
        per_class = max(1, num // k)
        return k * per_class, per_class, np.repeat(np.arange(k, dtype=np.int32), per_class)
    try:
        label = int(class_value)
    except ValueError:
        label = -1
    if not 0 <= label < k:
        raise ConfigError(
            f"--class={class_value!r} is not a class of this model; use 0..{k - 1} or 'all'"
        )
    return num, None, label


def generate(setup, state, rng, num: int, kwargs: dict) -> Samples:
    """``family.sample`` compiled once. Array arguments (a guiding classifier's parameters,
    labels) are arguments of the compiled program, not constants baked into it."""
    family, config = setup.family, setup.config
    leaves, treedef = jax.tree.flatten(kwargs)
    is_array = [isinstance(leaf, (jax.Array, np.ndarray)) for leaf in leaves]
    arrays = [leaf for leaf, a in zip(leaves, is_array, strict=True) if a]

    def run(state, rng, arrays):
        it = iter(arrays)
        full = [next(it) if a else leaf for leaf, a in zip(leaves, is_array, strict=True)]
        out = family.sample(config, state, rng, num, **jax.tree.unflatten(treedef, full))
        return Samples(*out) if isinstance(out, tuple) else Samples(out)

    out = jax.jit(run)(state, rng, arrays)
    labels = None if out.labels is None else np.asarray(out.labels)
    return Samples(np.asarray(out.images), labels)


def reconstruct(setup, state, images: np.ndarray) -> np.ndarray:
    """The family's reconstructions of uint8 ``images``, in ``[0, 1]``."""
    if not setup.caps.reconstructs:
        raise ConfigError(f"family {setup.family.name!r} does not reconstruct")
    fn = jax.jit(lambda s, x: setup.family.reconstruct(setup.config, s, x))
    return np.asarray(fn(state, images))
