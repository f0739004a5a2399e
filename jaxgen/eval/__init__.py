"""Evaluation of generated samples: an evaluator classifier's verdicts and features, and
feature-based sample-quality metrics (Frechet distance, KID, precision and recall).

- ``jaxgen.eval.metrics``: the metrics, pure NumPy functions of features.
- ``jaxgen.eval.evaluator``: finding and restoring a data set's evaluator.
- ``jaxgen.eval.report``: a stream of images against the test split (``evaluate_run``).
- ``python -m jaxgen.eval``: the command (``--workdir``, ``--reference``, sample files).
"""

from jaxgen.eval.metrics import (
    FeatureStats,
    frechet_distance,
    frechet_distance_of,
    kid,
    precision_recall,
)
from jaxgen.eval.samples import class_accuracy, evaluator_outputs, within_class_diversity

__all__ = [
    "FeatureStats",
    "class_accuracy",
    "evaluator_outputs",
    "frechet_distance",
    "frechet_distance_of",
    "kid",
    "precision_recall",
    "within_class_diversity",
]
