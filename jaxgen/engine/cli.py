"""What the command-line tools share: the process's XLA setup, a workdir's family's sampling
options as absl flags, one-line flag errors, and the help text.

``sample.py`` and ``python -m jaxgen.eval`` read the ``--workdir`` in ``argv`` before parsing
flags, so that the family's options (``Family.sample_options``) become flags with their own
defaults and help; an option of another family is a one-line error naming that family.
"""

from __future__ import annotations

import json
import os
import sys

from absl import flags

from jaxgen import xla_cpu
from jaxgen.errors import ConfigError
from jaxgen.families import FAMILIES, get_family

# The persistent compilation cache: ``$JAXGEN_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxgen/xla``
# (``~/.cache/jaxgen/xla``); an empty ``JAXGEN_CACHE_DIR`` turns it off.
CACHE_ENV = "JAXGEN_CACHE_DIR"
# Programs that compile faster than this are not worth a file.
CACHE_MIN_COMPILE_S = 1.0


def cache_dir(environ=None) -> str | None:
    """Where the tools keep compiled programs, or ``None`` when jaxgen sets no cache: it is off,
    or JAX's own ``JAX_COMPILATION_CACHE_DIR`` is set (then JAX's settings apply)."""
    env = os.environ if environ is None else environ
    if "JAX_COMPILATION_CACHE_DIR" in env:
        return None
    if CACHE_ENV in env:
        return env[CACHE_ENV] or None
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxgen", "xla")


def prepare_process() -> None:
    """What every tool does before JAX makes its first backend: jaxgen's XLA CPU flags
    (``jaxgen.xla_cpu``) and the persistent compilation cache (``cache_dir``), so that a second
    run of the same program loads it instead of compiling it again: a shorter start, and a peak
    memory without the compiler's (docs/notes/cpu.md)."""
    xla_cpu.configure()
    folder = cache_dir()
    if folder:
        import jax

        jax.config.update("jax_compilation_cache_dir", folder)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", CACHE_MIN_COMPILE_S)


_DEFINE = {
    "bool": flags.DEFINE_bool,
    "int": flags.DEFINE_integer,
    "float": flags.DEFINE_float,
    "str": flags.DEFINE_string,
    "workdir": flags.DEFINE_string,
    "list": flags.DEFINE_list,
}


def family_named_by(argv):
    """The family of the ``--workdir`` in ``argv`` (read before flags are parsed, so that its
    sampling options can become flags), or ``None``."""
    workdir = None
    for i, arg in enumerate(argv[1:], start=1):
        if arg.startswith("--workdir="):
            workdir = arg.split("=", 1)[1]
        elif arg == "--workdir" and i + 1 < len(argv):
            workdir = argv[i + 1]
    try:
        with open(os.path.join(workdir, "config.json")) as f:
            return get_family(json.load(f)["family"])
    except (TypeError, OSError, ValueError, KeyError, ConfigError):
        return None  # the tool reports a missing or broken workdir


def define_options(family) -> dict:
    """One flag per sampling option of ``family``; returns ``{option name: flag holder}``."""
    holders = {}
    for opt in family.sample_options if family is not None else ():
        holders[opt.name] = _DEFINE[opt.kind](opt.name, opt.default, opt.help)
        flags.register_validator(opt.name, _validator(opt), message=f"--{opt.name}")
        for alias in opt.aliases:
            flags.DEFINE_alias(alias, opt.name)
    return holders


def given_options(holders: dict) -> dict:
    """The sampling options given on the command line, by name: those left out take the
    config's ``sample_defaults`` or the family's default (``sampling.prepare``)."""
    return {name: holder.value for name, holder in holders.items() if holder.present}


def _validator(opt):
    """An absl validator from ``SampleOption.check``: a bad value fails at parsing, before any
    checkpoint is read, with the option's own message."""

    def valid(value):
        problem = opt.problem(value)
        if problem:
            raise flags.ValidationError(problem)  # absl adds "flag --name=value: "
        return True

    return valid


def parse_flags(argv):
    """absl's flag parsing, with one-line errors (exit 2) for unknown and bad flags."""
    program = os.path.basename(argv[0]) if argv else "this tool"
    try:
        return flags.FLAGS(argv)
    except flags.UnrecognizedFlagError as e:
        owners = [
            name
            for name in FAMILIES
            if any(e.flagname in (o.name, *o.aliases) for o in get_family(name).sample_options)
        ]
        family = family_named_by(argv)
        held = f"this workdir holds a {family.name!r} model" if family else "no --workdir run"
        where = ""
        if owners:
            names = " and ".join(owners)
            where = f"a sampling option of the {names} famil{'ies' if len(owners) > 1 else 'y'}; "
        print(
            f"error: --{e.flagname} is {where or f'not a flag of {program}; '}{held}",
            file=sys.stderr,
        )
        sys.exit(2)
    except flags.Error as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def show_in_help(module_name: str, doc: str) -> None:
    """Make ``--help`` print ``doc`` and list the flags of ``module_name`` and the family's
    sampling options: absl shows the ``__main__`` module's docstring and flags, which are those
    of a thin wrapper (``train.py``) or a console script (``jaxgen-train``)."""
    main = sys.modules.get("__main__")
    if main is not None:
        main.__doc__ = doc
    for module in (module_name, __name__):
        for flag in flags.FLAGS.get_key_flags_for_module(module):
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
