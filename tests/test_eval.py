"""Sample scores: accuracy against requested classes, within-class diversity, evaluator inputs,
precision and recall on equal-sized sets."""

import jax
import numpy as np
import pytest
from support import ROOT, load_config

from jaxgen.eval import (
    Evaluator,
    class_accuracy,
    precision_recall,
    report,
    within_class_diversity,
)
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_float_images_are_seen_at_the_data_sets_256_levels():
    """Generated floats are quantised to uint8 as the real images are: anything within half a
    level of a uint8 image (or outside [0, 1], clipped) gives exactly that image's outputs."""
    config = load_config(ROOT / "configs" / "classifier.py", "mnist,tiny,clean")
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    images[0, :2] = 0
    images[0, 2:4] = 255
    batch = {"image": images, "label": np.zeros(4, np.int32)}
    params = classifier.init(config, jax.random.PRNGKey(0), batch).model.params
    floats = (images + rng.uniform(-0.49, 0.49, images.shape)) / 255.0
    floats[0, :2] -= 0.5  # below 0: clipped to 0
    floats[0, 2:4] += 0.5  # above 1: clipped to 1
    evaluator = Evaluator("unused", config, params, step=0, test_accuracy=None)
    want_outputs = evaluator.outputs(images)
    got_outputs = evaluator.outputs(floats.astype(np.float32))
    for want, got in zip(want_outputs, got_outputs, strict=True):
        np.testing.assert_array_equal(got, want)


class _IdentityEvaluator:
    """Features are the images themselves (``[N, d]``), for the scores' bookkeeping."""

    def outputs(self, images):
        return np.zeros((len(images), 2)), np.asarray(images, np.float64)


def test_precision_and_recall_always_compare_equal_sized_sets(monkeypatch):
    rng = np.random.default_rng(2)
    real, fake = (
        report.FeatureSink(_IdentityEvaluator(), 600),
        report.FeatureSink(_IdentityEvaluator(), 600),
    )
    real.add(rng.standard_normal((600, 3)))
    fake.add(rng.standard_normal((200, 3)))  # e.g. --num=200 against --keep=600
    sizes = []

    def spy(r, f, k):
        sizes.append((len(r), len(f)))
        return precision_recall(r, f, k)

    monkeypatch.setattr(report, "precision_recall", spy)
    settings = report.Settings(keep=600, kid_subsets=2, kid_subset_size=100)
    first = report.scores(real, fake, settings)
    assert sizes == [(200, 200)]
    assert report.scores(real, fake, settings) == first  # the subset is drawn under the seed
    with pytest.raises(ValueError, match="equal-sized sets, got 600 real and 200"):
        precision_recall(real.features(), fake.features())
