"""The training loop's ``samples`` evaluation: generated samples against the test split, on
the data set's evaluator features, every N steps (``config.evals``)::

    config.evals.samples = {"type": "samples", "every": 1000, "num": 2000}

Registered with the engine's registry (``jaxgen.engine.evals``) when ``jaxgen.eval`` is
imported; the engine itself never imports this module (the tools above it do).
"""

from __future__ import annotations

import jax

from jaxgen.engine.evals import Evaluation, register
from jaxgen.errors import ConfigError
from jaxgen.eval import report

SAMPLE_SETTINGS = {
    "every": "steps between runs while training (0: only after the last step)",
    "num": "samples generated each time (conditional models: every class equally often)",
    "batch": "samples per compiled sampling call",
    "evaluator": "evaluator workdir ('': runs/evaluators/<data.dataset>)",
    "allow_weak_evaluator": "use an evaluator below its data set's required accuracy (marked)",
    "options": "the family's sampling options by name (default: its defaults)",
    "seed": "sampling seed: the same noise every time, so runs are comparable across steps",
}


@register("samples")
def samples(setup, settings, test_split) -> Evaluation | None:
    """FD, KID, precision/recall (and class accuracy for conditional models) of ``num``
    samples against the test split, on the data set's evaluator features
    (``jaxgen.eval``). Rows go to ``metrics.jsonl`` with ``split = "samples"``. The evaluator
    is found and the test split's features computed once, when training starts."""
    values = {k: v for k, v in dict(settings).items() if k != "type"}
    unknown = sorted(set(values) - set(SAMPLE_SETTINGS))
    if unknown:
        raise ConfigError(
            f"evals: {unknown} are not settings of a 'samples' evaluation; it takes "
            f"{sorted(SAMPLE_SETTINGS)}"
        )
    every, num = values.get("every", 0), values.get("num", 2_000)
    batch, seed = values.get("batch", 500), values.get("seed", 0)
    for key, value, minimum in (("every", every, 0), ("num", num, 2), ("batch", batch, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ConfigError(f"evals.<samples>.{key}={value!r} must be an integer >= {minimum}")
    if not setup.caps.generates and not setup.caps.reconstructs:
        raise ConfigError(
            f"a 'samples' evaluation needs a family that generates or reconstructs; "
            f"{setup.family.name!r} does neither"
        )
    scoring = report.RunScoring.prepare(
        setup,
        values.get("options") or {},
        report.Settings(keep=num, kid_subset_size=min(1_000, num), seed=seed),
        values.get("evaluator") or None,
        bool(values.get("allow_weak_evaluator", False)),
    )
    rng = jax.random.PRNGKey(seed)

    def run(state, final: bool):
        del final
        result = scoring.run(state, num, rng=rng, batch=batch, progress=False)
        return {**result["metrics"], "samples_per_s": result["samples_per_s"]}

    return Evaluation(split="samples", every=every, run=run)
