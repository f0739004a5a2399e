"""The evaluator: one clean-image classifier per data set, whose penultimate features serve every
sample-quality metric and whose verdicts give the class accuracy of conditional samples.

Train one with the project command (weights stay in the workdir, never in the repository)::

    python train.py --config=configs/classifier.py:mnist,evaluator --workdir=runs/evaluators/mnist
    make evaluators        # both data sets

Every eval command finds it by the data set's name (``config.data.dataset``): in
``$JAXGEN_EVALUATORS/<data set>`` (default ``runs/evaluators/<data set>``) unless
``--evaluator=DIR`` names a workdir. The metrics it gives are named after it: "FD on jaxgen's
MNIST classifier features", never "FID", which means Inception-v3 features.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.errors import CheckpointError, ConfigError

DEFAULT_ROOT = os.path.join("runs", "evaluators")
# Test accuracy a data set's evaluator must reach (issue 13); eval commands warn below it.
REQUIRED_ACCURACY = {"mnist": 0.993, "fashion_mnist": 0.92}
DISPLAY = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}


def to_uint8(images) -> np.ndarray:
    """Images as the data sets store them: uint8 kept, floats on ``[0, 1]`` to
    ``round(255 clip(x, 0, 1))``. Generated images go through this before the evaluator, so
    they are seen at the same 256 levels as the real ones and no finer detail tells them apart."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    return np.round(np.clip(images.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


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

    def __post_init__(self):
        from jaxgen.families import classifier

        self._fn = jax.jit(classifier.features_fn(self.config, self.params))

    @property
    def dataset(self) -> str:
        return self.config.data.get("dataset", "")

    @property
    def name(self) -> str:
        return f"jaxgen's {DISPLAY.get(self.dataset, self.dataset or 'custom')} classifier"

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.config.data.image_shape)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "workdir": os.path.abspath(self.workdir),
            "step": self.step,
            "test_accuracy": self.test_accuracy,
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

    def outputs(self, images) -> tuple[np.ndarray, np.ndarray]:
        images = np.asarray(images)
        self.check_images(images, "the images")
        logits, feats = [], []
        for i in range(0, len(images), self.batch_size):
            x = to_uint8(images[i : i + self.batch_size]).astype(np.float32) / 255.0
            x = jnp.asarray(x * 2.0 - 1.0)
            out_logits, out_feats = self._fn(x, jnp.zeros((x.shape[0],), jnp.float32))
            logits.append(np.asarray(out_logits))
            feats.append(np.asarray(out_feats))
        return np.concatenate(logits), np.concatenate(feats)


def load(workdir: str) -> Evaluator:
    """Restore an evaluator run; ConfigError unless it is a clean classifier."""
    from jaxgen.engine import loop

    try:
        setup, state = loop.restore_for_inference(workdir)
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
    return Evaluator(workdir, config, params, step, _final_accuracy(workdir))


def load_for(dataset: str, workdir: str | None = None) -> Evaluator:
    return load(find(dataset, workdir))
