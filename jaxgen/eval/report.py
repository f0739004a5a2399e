"""One evaluation: a stream of images against the test split, through the evaluator's features.

``FeatureSink`` takes images chunk by chunk (generated samples, reconstructions, a reference
set) and keeps only what the metrics need: running float64 feature statistics for the Frechet
distance (every image), the features of the first ``keep`` images for KID and precision/recall,
and the evaluator's class verdicts when the images have labels. ``scores`` compares it with the
test split's features. ``evaluate_run`` does the whole thing for a train.py workdir;
``RunScoring.prepare`` sets it up (the evaluator, the test split's features, the family's
sampling options) once for ``python -m jaxgen.eval`` and the training loop's ``samples``
evaluation alike.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from jaxgen.data import load_splits
from jaxgen.errors import ConfigError
from jaxgen.eval import evaluator as evaluator_lib
from jaxgen.eval.metrics import (
    FeatureStats,
    equal_sized,
    frechet_distance_of,
    kid,
    precision_recall,
)
from jaxgen.eval.samples import within_class_diversity


@dataclasses.dataclass
class Settings:
    """How the metrics are computed. ``keep``: features kept for KID and precision/recall (the
    Frechet distance uses every image); KID over ``kid_subsets`` random subsets of
    ``kid_subset_size``; precision and recall with ``pr_k`` neighbours."""

    keep: int = 10_000
    kid_subsets: int = 100
    kid_subset_size: int = 1_000
    pr_k: int = 3
    seed: int = 0


class FeatureSink:
    """Accumulates an evaluator's view of images added chunk by chunk."""

    def __init__(self, evaluator, keep: int):
        self.evaluator = evaluator
        self.keep = keep
        self.stats: FeatureStats | None = None
        self.kept: list[np.ndarray] = []
        self.num_kept = 0
        self.correct = 0
        self.labelled = 0
        self.labelled_feats: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []

    @property
    def count(self) -> int:
        return 0 if self.stats is None else self.stats.count

    def add(self, images, labels=None) -> None:
        logits, feats = self.evaluator.outputs(images)
        if self.stats is None:
            self.stats = FeatureStats(feats.shape[1])
        self.stats.update(feats)
        take = min(len(feats), self.keep - self.num_kept)
        if take > 0:
            self.kept.append(feats[:take])
            self.num_kept += take
        if labels is not None:
            labels = np.asarray(labels)
            self.correct += int(np.sum(np.argmax(logits, -1) == labels))
            self.labelled += len(labels)
            if take > 0:
                self.labelled_feats.append(feats[:take])
                self.labels.append(labels[:take])

    def features(self) -> np.ndarray:
        return np.concatenate(self.kept)


def test_reference(evaluator, data_config, settings: Settings) -> FeatureSink:
    """The evaluator's view of the whole test split of ``data_config``."""
    _, test = load_splits(data_config)
    sink = FeatureSink(evaluator, settings.keep)
    for start in range(0, test.num_examples, 1_000):
        batch = test.get(np.arange(start, min(start + 1_000, test.num_examples)))
        sink.add(batch["image"])
    return sink


def scores(real: FeatureSink, fake: FeatureSink, settings: Settings, prefix: str = "") -> dict:
    """``fd``, ``kid`` (mean and std), ``precision``, ``recall`` (the larger set of kept
    features subsampled to the other's size, under ``settings.seed``) and, for labelled images,
    ``class_accuracy`` and ``within_class_diversity``, of ``fake`` against ``real``."""
    if fake.count < 2:
        raise ConfigError(f"the metrics need 2 or more images, got {fake.count}")
    rf, ff = real.features(), fake.features()
    out = {"fd": frechet_distance_of(real.stats, fake.stats)}
    out["kid"], out["kid_std"] = kid(
        rf, ff, settings.kid_subsets, settings.kid_subset_size, settings.seed
    )
    if min(len(rf), len(ff)) > settings.pr_k:
        # Equal-sized sets (e.g. --num 2000 against 10,000 kept test features): the k-NN radii
        # depend on a set's size.
        pr_real, pr_fake = equal_sized(rf, ff, settings.seed)
        out["precision"], out["recall"] = precision_recall(pr_real, pr_fake, settings.pr_k)
    if fake.labelled:
        out["class_accuracy"] = fake.correct / fake.labelled
        labels = np.concatenate(fake.labels)
        if len(labels) and np.bincount(labels).max() >= 2:
            feats = np.concatenate(fake.labelled_feats)
            out["within_class_diversity"] = within_class_diversity(feats, labels)
    return {prefix + k: float(v) for k, v in out.items()}


def metric_names(evaluator) -> dict:
    """What each number is, spelled out for ``eval.json`` and tables."""
    on = f"on {evaluator.name} features"
    return {
        "fd": f"FD {on}",
        "kid": f"KID {on} (unbiased MMD^2, cubic kernel)",
        "precision": f"precision {on} (k-NN manifold, Kynkaanniemi et al. 2019)",
        "recall": f"recall {on}",
        "class_accuracy": f"share of samples {evaluator.name} assigns to the requested class",
    }


def balanced_labels(num: int, classes: int) -> np.ndarray:
    """``0, 1, .., classes - 1, 0, ..``: ``num`` labels, every class equally often (+-1)."""
    return (np.arange(num) % classes).astype(np.int32)


def evaluate_run(
    setup,
    state,
    evaluator,
    real: FeatureSink,
    num: int,
    kwargs: dict,
    *,
    rng,
    batch: int,
    settings: Settings,
    progress: bool = True,
) -> dict:
    """Generate ``num`` samples of a run (or, for a family that only reconstructs, reconstruct
    the first ``num`` test images) and score them against ``real``. Conditional models get every
    class equally often. Returns the metrics plus ``mode``, ``num_samples`` and timings."""
    from jaxgen.engine import sampling

    caps = setup.caps
    evaluator.check_images(np.zeros((1, *setup.config.data.image_shape)), "this run's images")
    fake = FeatureSink(evaluator, settings.keep)
    start = time.perf_counter()
    first_done = None
    if caps.generates:
        mode = "samples"
        kwargs = dict(kwargs)
        classes = caps.num_classes or 0
        if classes and setup.family.sample_classes is not None:
            classes = setup.family.sample_classes(setup.config, kwargs)
        if classes and "label" not in kwargs:
            kwargs["label"] = balanced_labels(num, classes)
        chunks = sampling.generate_chunks(
            setup, state, rng, num, kwargs, batch=batch, progress=progress
        )
        for i, part in enumerate(chunks):
            bad = sampling.count_nonfinite(part.images)
            if bad:
                raise ConfigError(
                    f"{bad} generated images have NaN or Inf values; the checkpoint has "
                    "probably diverged (see metrics.jsonl)"
                )
            fake.add(part.images, part.labels)
            if i == 0:
                first_done = (time.perf_counter(), len(part.images))
    elif caps.reconstructs:
        mode = "reconstructions"
        _, test = load_splits(setup.config.data)
        num = min(num, test.num_examples)
        fn = sampling.reconstructor(setup)
        for i, lo in enumerate(range(0, num, batch)):
            images = test.get(np.arange(lo, min(lo + batch, num)))["image"]
            fake.add(np.asarray(fn(state, images)))
            if i == 0:
                first_done = (time.perf_counter(), len(images))
    else:
        raise ConfigError(
            f"the {setup.family.name!r} family neither generates nor reconstructs; "
            "there is nothing to evaluate"
        )
    total = time.perf_counter() - start
    out = scores(real, fake, settings)
    # Over everything, the first chunk's compilation included (a pipelined chunk finishes
    # while the host reads the one before, so per-chunk times would flatter the rate); with
    # many chunks the compile is a small share of it.
    return {
        "mode": mode,
        "num_samples": fake.count,
        "metrics": out,
        "generate_s": total,
        "first_chunk_s": first_done[0] - start,
        "samples_per_s": fake.count / max(total, 1e-9),
    }


@dataclasses.dataclass
class RunScoring:
    """Everything scoring a run's samples needs, made once: the evaluator of its data set, the
    test split's features and the family's prepared sampling keyword arguments."""

    setup: Any
    evaluator: evaluator_lib.Evaluator
    real: FeatureSink
    sample_kwargs: dict
    settings: Settings

    @classmethod
    def prepare(
        cls,
        setup,
        options: dict,
        settings: Settings,
        evaluator_workdir: str | None = None,
        allow_weak_evaluator: bool = False,
    ) -> RunScoring:
        """Find the evaluator (``evaluator_workdir``, or the one of ``config.data.dataset``),
        check the sampling ``options`` (by name; missing ones take the family's defaults), then
        compute the test split's features: the cheap checks fail before the slow part."""
        from jaxgen.engine import loop, sampling

        dataset = setup.config.data.get("dataset", "")
        evaluator = evaluator_lib.load_for(dataset, evaluator_workdir, allow_weak_evaluator)
        kwargs = {}
        if setup.caps.generates:
            kwargs = sampling.prepare(setup, dict(options), loop.restore_for_inference)
        real = test_reference(evaluator, setup.config.data, settings)
        return cls(setup, evaluator, real, kwargs, settings)

    def run(self, state, num: int, *, rng, batch: int, progress: bool = True) -> dict:
        """``evaluate_run`` of ``num`` samples (or reconstructions) of ``state``."""
        return evaluate_run(
            self.setup,
            state,
            self.evaluator,
            self.real,
            num,
            self.sample_kwargs,
            rng=rng,
            batch=batch,
            settings=self.settings,
            progress=progress,
        )
