"""Evaluation of generated samples: an evaluator classifier's verdicts and features, and
feature-based sample-quality metrics (Frechet distance, KID, precision and recall).

- ``jaxgen.eval.metrics``: the metrics, pure NumPy functions of features.
- ``jaxgen.eval.evaluator``: ``Evaluator``, a data set's classifier restored for scoring.
- ``jaxgen.eval.report``: a stream of images against the test split (``evaluate_run``).
- ``jaxgen.eval.training``: the training loop's ``samples`` evaluation. Importing this package
  registers it with the engine's registry (``jaxgen.engine.evals``), which never imports
  anything above the engine; ``train.py``, ``sample.py`` and ``python -m jaxgen.eval`` do.
- ``python -m jaxgen.eval``: the command (``--workdir``, ``--reference``, sample files).
"""

from jaxgen.eval import training  # noqa: F401  (registers the ``samples`` evaluation)
from jaxgen.eval.evaluator import Evaluator
from jaxgen.eval.metrics import (
    FeatureStats,
    frechet_distance,
    frechet_distance_of,
    kid,
    precision_recall,
)
from jaxgen.eval.samples import class_accuracy, within_class_diversity

__all__ = [
    "Evaluator",
    "FeatureStats",
    "class_accuracy",
    "frechet_distance",
    "frechet_distance_of",
    "kid",
    "precision_recall",
    "within_class_diversity",
]
