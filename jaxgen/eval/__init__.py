"""Evaluation of generated samples: an evaluator classifier's verdicts and features."""

from jaxgen.eval.samples import class_accuracy, evaluator_outputs, within_class_diversity

__all__ = ["class_accuracy", "evaluator_outputs", "within_class_diversity"]
