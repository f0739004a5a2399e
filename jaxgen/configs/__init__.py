"""Configs: one file per family or recipe, ``get_config(arg)`` with the data set as a variant
(``configs/vae.py:fashion_mnist,tiny``); ``common.py`` holds what they share.

They live in the package (``jaxgen/configs/``), so they travel with an installed wheel; the
repository's top-level ``configs`` is a link to this folder, so ``--config=configs/x.py:arg``
works in a checkout. ``train.py`` also takes a built-in config by name
(``--config=vae:mnist,tiny``): ``resolve`` turns a name into this folder's file.
"""

from __future__ import annotations

import os

from jaxgen.errors import ConfigError

FOLDER = os.path.dirname(os.path.abspath(__file__))
NAMES = tuple(
    sorted(
        name[: -len(".py")]
        for name in os.listdir(FOLDER)
        if name.endswith(".py") and name not in ("__init__.py", "common.py")
    )
)


def path(name: str) -> str:
    """The file of the built-in config ``name`` (``vae``: ``jaxgen/configs/vae.py``)."""
    if name not in NAMES:
        raise ConfigError(
            f"--config={name!r} is neither a config file nor a built-in config; the built-in "
            f"ones are {', '.join(NAMES)} (e.g. --config=vae:mnist,tiny)"
        )
    return os.path.join(FOLDER, f"{name}.py")


def resolve(value: str) -> str:
    """A ``--config`` value (``file[:arg]``) as config_flags loads it. A file that exists is
    kept; a bare name (``vae:mnist,tiny``), or a ``configs/<name>.py`` that is not there (a
    documented command run outside the repository), becomes the built-in file of that name."""
    file, sep, arg = value.partition(":")
    if os.path.isfile(file):
        return value
    if "/" not in file and os.sep not in file and not file.endswith(".py"):
        return path(file) + sep + arg
    parent, base = os.path.split(os.path.normpath(file))
    if parent == "configs" and base.removesuffix(".py") in NAMES:
        return path(base.removesuffix(".py")) + sep + arg
    return value  # config_flags names the missing file


def resolve_argv(argv: list[str]) -> list[str]:
    """``argv`` with its ``--config=V`` (or ``--config V``) value resolved."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg.startswith("--config="):
            out[i] = "--config=" + resolve(arg.removeprefix("--config="))
        elif arg == "--config" and i + 1 < len(out):
            out[i + 1] = resolve(out[i + 1])
    return out
