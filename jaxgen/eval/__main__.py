"""Score sample files with an evaluator classifier.

    python -m jaxgen.eval --evaluator=runs/clf_fashion_clean samples.npz [more.npz ...]

Each ``.npz`` is what ``sample.py`` writes (``images`` in [0, 1] and, for class-conditional
samples, ``labels``). Prints, per file, the share of images the evaluator assigns to their
requested class and the within-class diversity of its features (see ``jaxgen.eval.samples``).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from jaxgen.engine import loop
from jaxgen.errors import CheckpointError, ConfigError
from jaxgen.eval.samples import class_accuracy, evaluator_outputs, within_class_diversity


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jaxgen.eval", description=__doc__.split("\n")[0])
    ap.add_argument("--evaluator", required=True, help="workdir of a clean classifier run")
    ap.add_argument("files", nargs="+", help=".npz files written by sample.py")
    args = ap.parse_args(argv)
    try:
        setup, state = loop.restore_for_inference(args.evaluator)
    except (CheckpointError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if setup.config.family != "classifier":
        print(f"error: {args.evaluator} holds a {setup.config.family!r} run, not a classifier")
        return 2
    for path in args.files:
        data = np.load(path)
        if "labels" not in data:
            print(f"{path}: no labels (unconditional samples); nothing to score")
            continue
        logits, feats = evaluator_outputs(setup.config, state.model.params, data["images"])
        acc = class_accuracy(logits, data["labels"])
        div = within_class_diversity(feats, data["labels"])
        print(f"{path}: classified as requested {100 * acc:.1f}%, diversity {div:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
