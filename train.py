"""Train a jaxgen model.

    python train.py --config=configs/vae_fashion_mnist.py --workdir=runs/vae \
        [--config.train.num_steps=5000 ...]

Running it again with the same --workdir resumes from the latest checkpoint. With --eval_only it
restores the latest checkpoint and evaluates it on the test split instead; the run's own
config.json is used, except that the ``eval`` section comes from --config when one is given
(``--config=configs/vae_mnist.py --config.eval.iwae_k=1000``).
"""

import json
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from jaxgen.data import DataError
from jaxgen.engine import loop
from jaxgen.errors import CheckpointError, ConfigError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/x.py:tiny")
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics and images.")
_EVAL_ONLY = flags.DEFINE_bool("eval_only", False, "Evaluate the latest checkpoint and exit.")
flags.mark_flag_as_required("workdir")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    try:
        if _EVAL_ONLY.value:
            eval_config = None if _CONFIG.value is None else _CONFIG.value.eval
            metrics = loop.evaluate(_WORKDIR.value, eval_config)
            print(json.dumps(metrics, indent=1))
            return
        if _CONFIG.value is None:
            raise app.UsageError("--config is required, e.g. --config=configs/vae_mnist.py")
        loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except (ConfigError, DataError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
