r"""Train a jaxgen model.

    python train.py --config=configs/vae.py:fashion_mnist --workdir=runs/vae \
        [--config.train.num_steps=5000 ...]

From an installed package (no repository needed) the same command is ``jaxgen-train`` or
``python -m jaxgen.train``, and ``--config`` also takes a built-in config by name:
``--config=vae:fashion_mnist,tiny`` (the file ``jaxgen/configs/vae.py`` with the argument
``fashion_mnist,tiny``). A path that is not there, such as ``configs/vae.py`` outside the
repository, falls back to the built-in config of that name.

Running it again with the same --workdir resumes from the latest checkpoint, with the same config
(a run whose stored config differs in the model, data or optimisation stops and lists the
differences; --allow_config_change resumes anyway). With --eval_only it
restores the latest checkpoint and evaluates it on the test split instead; the run's own
config.json is used, except that the ``eval`` section comes from --config when one is given
(``--config=configs/vae.py:mnist --config.eval.iwae_k=1000``).
"""

import json
import sys

from absl import app, flags, logging
from ml_collections import config_flags

import jaxgen.eval  # noqa: F401  (registers the evaluations defined above the engine)
from jaxgen import configs
from jaxgen.data import DataError
from jaxgen.engine import cli, loop, signals
from jaxgen.errors import CheckpointError, ConfigError, TrainingError

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Config file and its argument, e.g. configs/vae.py:mnist,tiny, or a built-in config by "
    f"name, e.g. vae:mnist,tiny (built in: {', '.join(configs.NAMES)}).",
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics and images.")
_EVAL_ONLY = flags.DEFINE_bool("eval_only", False, "Evaluate the latest checkpoint and exit.")
_ALLOW_CHANGE = flags.DEFINE_bool(
    "allow_config_change",
    False,
    "Resume although the config differs from the run's config.json (e.g. a new learning rate).",
)
flags.mark_flag_as_required("workdir")


def _parse_flags(argv):
    """absl's parsing, with a bad flag or config override as one line and exit code 2."""
    try:
        return flags.FLAGS(configs.resolve_argv(argv))
    except Exception as e:  # noqa: BLE001 (config_flags raises many types for a bad override)
        text = _one_line(str(e) or type(e).__name__)
        if isinstance(e, (AttributeError, KeyError)):  # an override of a key the config lacks
            key = text.strip("'\"")
            given = [
                a.split("=", 1)[0]
                for a in argv
                if a.startswith("--config.") and key in a.split("=", 1)[0].split(".")
            ]
            where = f" ({', '.join(given)})" if given else ""
            text = f"unknown config key in an override{where}: {text}"
        print(f"error: {text}", file=sys.stderr)
        sys.exit(2)


def _one_line(text: str) -> str:
    """An exception's text as one short line (config_flags nests quotes and newlines)."""
    text = text.replace("\\n", " ").replace("\\'", "'")
    if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    text = " ".join(text.split())
    return text if len(text) <= 400 else text[:397] + "..."


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    with signals.StopFlag():
        _run()


def _run():
    try:
        if _EVAL_ONLY.value:
            eval_config = None if _CONFIG.value is None else _CONFIG.value.eval
            metrics = loop.evaluate(_WORKDIR.value, eval_config)
            print(json.dumps(metrics, indent=1))
            return
        if _CONFIG.value is None:
            raise app.UsageError("--config is required, e.g. --config=configs/vae.py:mnist")
        loop.train_and_evaluate(
            _CONFIG.value, _WORKDIR.value, allow_config_change=_ALLOW_CHANGE.value
        )
    except (ConfigError, DataError, CheckpointError, TrainingError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # a full disk, a config file that is not there: one line
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"error: {_one_line(e.strerror or str(e))}{where}", file=sys.stderr)
        sys.exit(2)


def run() -> None:
    """The command: ``train.py``, ``jaxgen-train`` and ``python -m jaxgen.train``."""
    cli.prepare_process()
    cli.show_in_help(__name__, __doc__)
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
