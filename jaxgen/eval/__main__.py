r"""Evaluate a trained model, a reference set or sample files against the test split.

    python -m jaxgen.eval --workdir=runs/x [--num=10000] [--batch=500] [sampler flags]
    python -m jaxgen.eval --reference=train --dataset=mnist      # the floor: train vs test
    python -m jaxgen.eval --reference=noise --dataset=mnist      # uniform noise
    python -m jaxgen.eval --dataset=mnist samples.npz [more.npz ...]

With ``--workdir``: generates ``--num`` samples with the run's default sampler, or the options
given (a workdir's family options are flags, as in ``sample.py``; a conditional model gets every
class equally often); a family that only reconstructs has its reconstructions of the first
``--num`` test images scored instead. Writes ``eval.json`` beside the run (or ``--out``): the
metrics (FD, KID, precision, recall, class accuracy for conditional models, held-out likelihoods
where the family has them), the evaluator, the number of samples, the sampler options, wall time
and samples/s.

Features come from the data set's evaluator (``jaxgen.eval.evaluator``), found under
``runs/evaluators/<data set>`` unless ``--evaluator=DIR`` names one. Every figure is "on jaxgen's
<data set> classifier features", not FID.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import sys
import time

import jax
import numpy as np
from absl import app, flags, logging

from jaxgen.data import DataError, load_splits
from jaxgen.engine import cli, loop
from jaxgen.engine.config import MAX_SEED
from jaxgen.errors import CheckpointError, ConfigError
from jaxgen.eval import evaluator as evaluator_lib
from jaxgen.eval import report
from jaxgen.files import atomic_write, target_of, unwritable_reason

_WORKDIR = flags.DEFINE_string("workdir", None, "A train.py workdir to evaluate.")
_NUM = flags.DEFINE_integer("num", 10_000, "How many samples (or reference images).", lower_bound=1)
_BATCH = flags.DEFINE_integer("batch", 500, "Images per compiled sampling call.", lower_bound=1)
_SEED = flags.DEFINE_integer(
    "seed",
    0,
    "Sampling seed (and the KID subsets' seed).",
    lower_bound=0,
    upper_bound=MAX_SEED,
)
_EVALUATOR = flags.DEFINE_string(
    "evaluator", None, "Evaluator workdir (default: runs/evaluators/<data set>)."
)
_DATASET = flags.DEFINE_string(
    "dataset", None, "Data set of --reference and sample files (mnist, fashion_mnist)."
)
_DATA_PATH = flags.DEFINE_string(
    "data_path", None, "Where the data set's files are (default: the config's place)."
)
_REFERENCE = flags.DEFINE_enum(
    "reference", None, ["train", "noise"], "Score a reference set instead of a model."
)
_OUT = flags.DEFINE_string("out", None, "JSON path (default: <workdir>/eval.json).")
_KEEP = flags.DEFINE_integer(
    "keep",
    10_000,
    "Features kept for KID and precision/recall (FD uses every image).",
    lower_bound=1,
)
_ALLOW_WEAK = flags.DEFINE_bool(
    "allow_weak_evaluator",
    False,
    "Score with an evaluator below its data set's required test accuracy (e.g. a tiny run); "
    "the JSON marks it below_required_accuracy.",
)
_LIKELIHOOD = flags.DEFINE_bool(
    "likelihood", True, "Also run the family's held-out eval for its likelihoods, if any."
)
_FILES_HELP = "sample .npz files (images in [0, 1], optional labels), as positional arguments"

_OPTIONS = cli.define_options(cli.family_named_by(sys.argv)) if __name__ == "__main__" else {}


def _data_config(dataset: str):
    """The data section of ``dataset``'s default config (``configs/common.py``)."""
    from jaxgen.configs import common

    if dataset not in common.DATA:
        raise ConfigError(f"--dataset={dataset!r} is not one of {sorted(common.DATA)}")
    data = common.new("classifier", dataset).data
    _use_data_path(data)
    return data


def _use_data_path(data) -> None:
    """Point ``data`` at ``--data_path`` when given; ConfigError when it is not there."""
    if not _DATA_PATH.value:
        return
    if not os.path.exists(_DATA_PATH.value):
        raise ConfigError(
            f"--data_path={_DATA_PATH.value!r} does not exist; give the data set's file or folder"
        )
    data.path = _DATA_PATH.value


def _settings() -> report.Settings:
    return report.Settings(keep=_KEEP.value, seed=_SEED.value)


def _write_json(path: str, payload: dict) -> None:
    with atomic_write(path) as f:
        json.dump(payload, f, indent=2, allow_nan=False)
        f.write("\n")


def _header(evaluator, num_real: int) -> dict:
    return {
        "evaluator": evaluator.describe(),
        "metric_names": report.metric_names(evaluator),
        "reference": {"split": "test", "num_images": num_real},
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "jax": jax.__version__,
        "device": jax.devices()[0].device_kind,
    }


def _print(label: str, metrics: dict, evaluator) -> None:
    shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float)))
    print(f"{label} | on {evaluator.name} features | {shown}")


def _likelihoods(setup, state) -> dict:
    """The family's likelihood metrics over the whole test split (its held-out eval)."""
    from jaxgen.engine import evals

    wanted = setup.caps.likelihoods
    if not wanted or not setup.caps.held_out:
        return {}
    _, test = load_splits(setup.config.data)
    eval_fn = evals.compile_eval_step(setup)
    out = evals.run_held_out(setup, eval_fn, state, test, 0)
    return {k: out[k] for k in wanted if k in out}


def _plain(kwargs: dict) -> dict:
    """The JSON-able settings among ``sample``'s keyword arguments (no arrays or states)."""
    scalar = (str, int, float, bool, type(None))
    out = {}
    for k, v in kwargs.items():
        if isinstance(v, scalar):
            out[k] = v
        elif isinstance(v, (list, tuple)) and all(isinstance(e, scalar) for e in v):
            out[k] = list(v)
        elif dataclasses.is_dataclass(v) and not isinstance(v, type):
            out[k] = _plain(dataclasses.asdict(v))
    return out


def _evaluate_workdir(workdir: str) -> dict:
    started = time.perf_counter()
    setup, state = loop.restore_for_inference(workdir)
    values = cli.given_options(_OPTIONS)
    scoring = report.RunScoring.prepare(
        setup, values, _settings(), _EVALUATOR.value, _ALLOW_WEAK.value
    )
    evaluator = scoring.evaluator
    result = scoring.run(state, _NUM.value, rng=jax.random.PRNGKey(_SEED.value), batch=_BATCH.value)
    if _LIKELIHOOD.value:
        result["metrics"].update(_likelihoods(setup, state))
    payload = {
        "workdir": os.path.abspath(workdir),
        "family": setup.family.name,
        "dataset": setup.config.data.get("dataset", ""),
        "step": int(state.step),
        **result,
        "sampler_options": dict(values),  # as given on the command line
        "sample_kwargs": _plain(scoring.sample_kwargs),  # what the family made of them
        "seed": _SEED.value,
        "batch": _BATCH.value,
        **_header(evaluator, scoring.real.count),
        "wall_s": time.perf_counter() - started,
    }
    _print(
        f"{workdir} (step {payload['step']}, {result['num_samples']} {result['mode']})",
        result["metrics"],
        evaluator,
    )
    return payload


def _reference_images(kind: str, data_config, num: int):
    """Chunks of the reference set: the first ``num`` training images, or uniform noise."""
    if kind == "train":
        train, _ = load_splits(data_config)
        num = min(num, train.num_examples)
        for lo in range(0, num, 1_000):
            yield train.get(np.arange(lo, min(lo + 1_000, num)))["image"]
    else:
        rng = np.random.default_rng(_SEED.value)
        shape = tuple(data_config.image_shape)
        for lo in range(0, num, 1_000):
            yield rng.uniform(0, 1, (min(1_000, num - lo), *shape)).astype(np.float32)


def _evaluate_reference(kind: str) -> dict:
    started = time.perf_counter()
    dataset = _DATASET.value
    if not dataset:
        raise ConfigError("--reference needs --dataset (mnist, fashion_mnist)")
    data = _data_config(dataset)
    evaluator = evaluator_lib.load_for(dataset, _EVALUATOR.value, _ALLOW_WEAK.value)
    settings = _settings()
    real = report.test_reference(evaluator, data, settings)
    fake = report.FeatureSink(evaluator, settings.keep)
    for images in _reference_images(kind, data, _NUM.value):
        fake.add(images)
    metrics = report.scores(real, fake, settings)
    _print(f"reference {kind} ({fake.count} images) vs {dataset} test", metrics, evaluator)
    return {
        "reference_set": kind,
        "dataset": dataset,
        "num_samples": fake.count,
        "metrics": metrics,
        **_header(evaluator, real.count),
        "wall_s": time.perf_counter() - started,
    }


def _load_samples(path: str, evaluator) -> tuple[np.ndarray, np.ndarray | None]:
    """A sample file's images and labels, checked where they enter: readable, the evaluator's
    image shape, finite values in [0, 1] (or uint8), and labels of its classes, one per image."""
    try:
        arrays = np.load(path)
        if not isinstance(arrays, np.lib.npyio.NpzFile):  # a .npy: one bare array
            raise ValueError("it holds one array, not named arrays")
        with arrays:
            images = arrays["images"]
            labels = arrays["labels"] if "labels" in arrays else None
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise ConfigError(f"{path} is not a sample.py .npz with 'images' ({e})") from e
    if images.ndim != 4:
        raise ConfigError(f"{path}: images have shape {images.shape}; expected [N, H, W, C]")
    evaluator.check_images(images, f"{path}: the images")
    images = evaluator_lib.checked_images(images, f"{path}: ")
    if labels is not None:
        k = int(evaluator.config.model.num_classes)
        if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
            raise ConfigError(
                f"{path}: labels are {labels.dtype} {labels.shape}; expected {len(images)} "
                "integers, one per image"
            )
        if len(labels) and not 0 <= labels.min() <= labels.max() < k:
            raise ConfigError(
                f"{path}: labels run {labels.min()}..{labels.max()}; the evaluator's classes "
                f"are 0..{k - 1}"
            )
    return images, labels


def _evaluate_files(paths) -> list[dict]:
    dataset = _DATASET.value or ""
    evaluator = evaluator_lib.load_for(dataset, _EVALUATOR.value, _ALLOW_WEAK.value)
    settings = _settings()
    data = evaluator.config.data  # the evaluator's own test split
    _use_data_path(data)
    loaded = [_load_samples(path, evaluator) for path in paths]  # every file checked first
    real = report.test_reference(evaluator, data, settings)
    out = []
    for path, (images, labels) in zip(paths, loaded, strict=True):
        fake = report.FeatureSink(evaluator, settings.keep)
        fake.add(images, labels)
        metrics = report.scores(real, fake, settings)
        _print(f"{path} ({fake.count} images)", metrics, evaluator)
        out.append({"file": os.path.abspath(path), "num_samples": fake.count, "metrics": metrics})
    return out


def main(argv):
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    files = argv[1:]
    try:
        chosen = [bool(_WORKDIR.value), bool(_REFERENCE.value), bool(files)]
        if sum(chosen) != 1:
            raise ConfigError(
                f"give exactly one of --workdir=DIR, --reference=train|noise, or {_FILES_HELP}"
            )
        out = _OUT.value
        if _WORKDIR.value and not out:
            out = os.path.join(_WORKDIR.value, "eval.json")
        if out:  # before any sampling or scoring: a long run must not be lost at the write
            reason = unwritable_reason(out)
            if reason:
                flag = "--out" if _OUT.value else "the default --out, <workdir>/eval.json,"
                raise ConfigError(f"{flag} ({out}) {reason}")
        if _WORKDIR.value:
            payload = _evaluate_workdir(_WORKDIR.value)
        elif _REFERENCE.value:
            payload = _evaluate_reference(_REFERENCE.value)
        else:
            payload = {"files": _evaluate_files(files)}
        if out:
            try:
                _write_json(out, payload)
            except ValueError as e:  # allow_nan=False: a score that is NaN or Inf
                raise ConfigError(
                    f"a score is NaN or Inf; nothing was written to {out} (the scores are "
                    "printed above)"
                ) from e
            except OSError as e:  # past the check: a full disk, a folder made meanwhile
                path = target_of(str(e.filename or out))  # the file meant, not its temporary
                print(
                    f"error: cannot write {path}: {e.strerror or e} (the scores are printed above)",
                    file=sys.stderr,
                )
                sys.exit(2)
            print(f"wrote {out}")
    except (ConfigError, DataError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli.prepare_process()
    app.run(main, flags_parser=cli.parse_flags)
