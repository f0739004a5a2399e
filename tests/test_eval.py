"""Sample scores: accuracy against requested classes, within-class diversity, evaluator inputs."""

import jax
import numpy as np
import pytest
from support import ROOT, load_config

from jaxgen.eval import Evaluator, class_accuracy, within_class_diversity
from jaxgen.families import classifier


def test_within_class_diversity_is_the_mean_pairwise_distance_per_class():
    feats = np.array([[0, 0], [3, 4], [0, 0], [0, 1], [0, 2]], np.float32)
    labels = np.array([0, 0, 1, 1, 1])
    assert within_class_diversity(feats, labels) == pytest.approx((5.0 + 4.0 / 3.0) / 2)
    # copies of one image have no diversity, whatever their number
    assert within_class_diversity(np.ones((6, 3)), np.zeros(6, int)) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="two or more"):
        within_class_diversity(feats[:1], labels[:1])


def test_class_accuracy():
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [5.0, 0.0]])
    assert class_accuracy(logits, np.array([0, 1, 1])) == pytest.approx(2 / 3)


def test_evaluator_reads_uint8_and_unit_floats_alike():
    config = load_config(ROOT / "configs" / "classifier.py", "mnist,tiny,clean")
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28, 1), dtype=np.uint8)
    batch = {"image": images, "label": np.zeros(5, np.int32)}
    params = classifier.init(config, jax.random.PRNGKey(0), batch).model.params
    evaluator = Evaluator("untrained", config, params, step=0, test_accuracy=None, batch_size=2)
    a_logits, a_feats = evaluator.outputs(images)
    evaluator.batch_size = 5
    b_logits, b_feats = evaluator.outputs(images / 255.0)
    np.testing.assert_allclose(a_logits, b_logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a_feats, b_feats, rtol=1e-5, atol=1e-5)
    assert a_logits.shape == (5, 10) and np.abs(a_feats).sum() > 0
