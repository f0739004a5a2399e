"""The evaluator: one clean-image classifier per data set, whose penultimate features serve every
sample-quality metric and whose verdicts give the class accuracy of conditional samples.

Train one with the project command (weights stay in the workdir, never in the repository)::

    python train.py --config=configs/classifier.py:mnist,evaluator --workdir=runs/evaluators/mnist
    make evaluators        # both data sets

Every eval command finds it by the data set's name (``config.data.dataset``): in
``$JAXGEN_EVALUATORS/<data set>`` (default ``runs/evaluators/<data set>``) unless
``--evaluator=DIR`` names a workdir. The metrics it gives are named after it: "FD on jaxgen's
MNIST classifier features", never "FID", which means Inception-v3 features.

An evaluator below its data set's ``REQUIRED_ACCURACY`` (a ``tiny`` or short run) is refused:
its features would be reported as the data set's evaluator's and compare with nothing.
``allow_weak=True`` (``--allow_weak_evaluator``, ``evals.<samples>.allow_weak_evaluator``) uses
it anyway, with a warning, and every description of it says ``below_required_accuracy``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.errors import CheckpointError, ConfigError

DEFAULT_ROOT = os.path.join("runs", "evaluators")
# Test accuracy a data set's evaluator must reach (issue 13); below it one is refused unless
# allowed, and then marked.
REQUIRED_ACCURACY = {"mnist": 0.993, "fashion_mnist": 0.92}
_RANGE_SLACK = 1e-3  # float images a hair outside [0, 1] (rounding) are clipped, not refused
DISPLAY = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}


def to_uint8(images) -> np.ndarray:
    """Images as the data sets store them: uint8 kept, floats on ``[0, 1]`` to
    ``round(255 clip(x, 0, 1))``. Generated images go through this before the evaluator, so
    they are seen at the same 256 levels as the real ones and no finer detail tells them apart."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    return np.round(np.clip(images.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def checked_images(images, what: str = "", strict_range: bool = True) -> np.ndarray:
    """``images`` as uint8 (``to_uint8``) after checking that they are images at all: integers in
    0..255, or floats that are finite and in [0, 1]. ConfigError otherwise, starting with
    ``what``: NaN from a diverged model, or images in 0..255 stored as floats, would otherwise
    be scored without a word (NaN metrics, or everything white). ``strict_range=False``: floats
    out of [0, 1] are clipped (a model's raw outputs), only non-finite ones refused."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    if images.size == 0:
        raise ConfigError(f"{what}there are no images")
    if np.issubdtype(images.dtype, np.integer):
        low, high = int(images.min()), int(images.max())
        if low < 0 or high > 255:
            raise ConfigError(f"{what}integer images have values {low}..{high}; expected 0..255")
        return images.astype(np.uint8)
    if not np.issubdtype(images.dtype, np.floating):
        raise ConfigError(f"{what}images of dtype {images.dtype}; expected uint8 or floats")
    bad = int(np.sum(~np.all(np.isfinite(images.reshape(len(images), -1)), axis=1)))
    if bad:
        raise ConfigError(
            f"{what}{bad} of {len(images)} images have NaN or Inf values (a diverged model?); "
            "nothing was scored"
        )
    low, high = float(images.min()), float(images.max())
    if strict_range and (low < -_RANGE_SLACK or high > 1.0 + _RANGE_SLACK):
        hint = " (images in 0..255: divide by 255 or store them as uint8)" if high > 2 else ""
        raise ConfigError(
            f"{what}float images have values in [{low:.4g}, {high:.4g}]; expected [0, 1]{hint}"
        )
    return to_uint8(images)


def evaluator_root() -> str:
    return os.environ.get("JAXGEN_EVALUATORS", DEFAULT_ROOT)


def default_workdir(dataset: str) -> str:
    return os.path.join(evaluator_root(), dataset)


def train_command(dataset: str, workdir: str | None = None) -> str:
    workdir = workdir or default_workdir(dataset)
    return f"python train.py --config=configs/classifier.py:{dataset},evaluator --workdir={workdir}"


def find(dataset: str, workdir: str | None = None) -> str:
    """The evaluator workdir for ``dataset`` (``workdir`` if given); ConfigError naming the
    command that trains one when there is none."""
    if workdir:
        if not os.path.isfile(os.path.join(workdir, "config.json")):
            raise ConfigError(f"--evaluator={workdir} is not a train.py workdir (no config.json)")
        return workdir
    if not dataset:
        raise ConfigError(
            "this run's config names no data set (data.dataset is empty, e.g. procedural data); "
            "pass --evaluator=DIR, the workdir of a clean classifier of its images"
        )
    path = default_workdir(dataset)
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ConfigError(
            f"no evaluator for the data set {dataset!r} in {path}; train one with\n  "
            f"{train_command(dataset)}\n(or `make evaluators`), set JAXGEN_EVALUATORS to the "
            "folder that holds it, or pass --evaluator=DIR"
        )
    return path


def _final_accuracy(workdir: str) -> float | None:
    """The test accuracy of the last full held-out eval in the run's ``metrics.jsonl``."""
    best = None
    try:
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if row.get("split") == "eval" and "accuracy" in row:
                    best = (row["step"], row["accuracy"], row.get("examples", 0))
    except OSError:
        return None
    return None if best is None else float(best[1])


@dataclasses.dataclass
class Evaluator:
    """A restored evaluator: ``outputs(images) -> (logits, features)`` for images in [0, 1]
    (float, quantised by ``to_uint8`` first) or uint8 ``[N, H, W, C]``, in batches."""

    workdir: str
    config: Any
    params: Any
    step: int
    test_accuracy: float | None
    batch_size: int = 500
    weak: bool = False  # below REQUIRED_ACCURACY, used by consent (``load(allow_weak=True)``)

    def __post_init__(self):
        from jaxgen.families import classifier

        self._fn = jax.jit(classifier.features_fn(self.config, self.params))

    @property
    def dataset(self) -> str:
        return self.config.data.get("dataset", "")

    @property
    def name(self) -> str:
        name = f"jaxgen's {DISPLAY.get(self.dataset, self.dataset or 'custom')} classifier"
        return f"{name} (below its required accuracy)" if self.weak else name

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.config.data.image_shape)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "workdir": os.path.abspath(self.workdir),
            "step": self.step,
            "test_accuracy": self.test_accuracy,
            "required_accuracy": REQUIRED_ACCURACY.get(self.dataset),
            "below_required_accuracy": self.weak,
            "features": int(self.config.model.features)
            if self.config.model.arch == "cnn"
            else None,
        }

    def check_images(self, images, what: str) -> None:
        shape = tuple(np.shape(images)[1:])
        if shape != self.image_shape:
            raise ConfigError(
                f"{what} are {shape} images but the evaluator ({self.workdir}) takes "
                f"{self.image_shape}; use the evaluator of their data set"
            )

    def outputs(self, images, what: str = "the images") -> tuple[np.ndarray, np.ndarray]:
        images = np.asarray(images)
        self.check_images(images, what)
        logits, feats = [], []
        for i in range(0, len(images), self.batch_size):
            x = checked_images(images[i : i + self.batch_size], f"{what}: ", strict_range=False)
            x = x.astype(np.float32) / 255.0
            x = jnp.asarray(x * 2.0 - 1.0)
            out_logits, out_feats = self._fn(x, jnp.zeros((x.shape[0],), jnp.float32))
            logits.append(np.asarray(out_logits))
            feats.append(np.asarray(out_feats))
        return np.concatenate(logits), np.concatenate(feats)


def load(workdir: str, allow_weak: bool = False) -> Evaluator:
    """Restore an evaluator run; ConfigError unless it is a clean classifier that reaches its
    data set's ``REQUIRED_ACCURACY`` (``allow_weak``: use one below it, marked and warned)."""
    from jaxgen.engine import loop

    try:
        setup, state = loop.restore_for_inference(workdir, key="--evaluator")
    except CheckpointError as e:
        raise ConfigError(f"the evaluator in {workdir} cannot be restored: {e}") from e
    config = setup.config
    if config.family != "classifier" or config.classifier.noisy:
        raise ConfigError(
            f"{workdir} holds a {config.family!r} run"
            + (" trained on noised images" if config.family == "classifier" else "")
            + "; an evaluator is a clean classifier (configs/classifier.py:<data set>,evaluator)"
        )
    step, total = int(state.step), int(config.train.num_steps)
    if step < total:
        raise ConfigError(
            f"the evaluator in {workdir} is at step {step} of {total}; its training has not "
            "finished (run its train.py command again to resume it), and scores from a "
            "half-trained evaluator would not compare with any others"
        )
    params = jax.device_get(state.model.inference_params)
    accuracy = _final_accuracy(workdir)
    dataset = config.data.get("dataset", "")
    required = REQUIRED_ACCURACY.get(dataset)
    weak = required is not None and (accuracy is None or accuracy < required)
    if weak:
        reached = "no recorded test accuracy" if accuracy is None else f"{accuracy:.1%}"
        problem = (
            f"the evaluator in {workdir} has {reached} on the {DISPLAY[dataset]} test split, "
            f"below the {required:.1%} its scores need"
        )
        if not allow_weak:
            raise ConfigError(
                f"{problem} (a tiny or short run?); train the full recipe "
                f"({train_command(dataset)}), or pass --allow_weak_evaluator to score "
                "with it anyway (the results are then marked below_required_accuracy)"
            )
        print(f"warning: {problem}; its scores compare with no others", file=sys.stderr)
    return Evaluator(workdir, config, params, step, accuracy, weak=weak)


def load_for(dataset: str, workdir: str | None = None, allow_weak: bool = False) -> Evaluator:
    return load(find(dataset, workdir), allow_weak)
