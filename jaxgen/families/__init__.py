"""Trainable families. Each module exposes State, init, train_step, eval_step, and sample where
it generates (the classifier family does not).

See DESIGN.md, "The family contract".
"""

from __future__ import annotations

import importlib
from types import ModuleType

from jaxgen.errors import ConfigError

FAMILIES = ("vae", "vqvae", "pixelcnn", "diffusion", "classifier")


def get_family(name: str) -> ModuleType:
    """The family module registered under ``name`` (``config.family``)."""
    if name not in FAMILIES:
        raise ConfigError(f"family={name!r} is not a known family; expected one of {FAMILIES}")
    return importlib.import_module(f"jaxgen.families.{name}")
