"""Evaluations as a registry: ``config.evals`` names them, the training loop runs them.

Each entry of ``config.evals`` is ``name: {"type": <registered type>, ...settings}``. A type is a
factory ``(setup, settings, test_split) -> Evaluation`` registered with ``@register``; the loop
calls ``Evaluation.run(state, final)`` every ``Evaluation.every`` steps (0: only after the last
step) and writes what it returns to ``metrics.jsonl`` under its ``split``. A new kind of
evaluation is a registered factory and a config entry; the loop does not change.

Built in: ``held_out``, the family's ``eval_step`` over the test split (settings in the
``eval`` section and ``train.eval_every``); it is skipped for families without held-out
metrics. Layers above the engine register their own types when they are imported (the
sample-quality package registers ``samples``: FD, KID, precision/recall of generated samples);
the engine never imports them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.data import eval_batches, num_eval_examples
from jaxgen.engine import signals
from jaxgen.engine.mesh import batch_sharding, gather_params, global_batch, replicated
from jaxgen.errors import ConfigError

_TYPES: dict[str, Callable] = {}


@dataclasses.dataclass
class Evaluation:
    """One configured evaluation, ready to run on a state."""

    split: str  # the metrics.jsonl ``split`` its rows carry
    every: int  # steps between runs while training; 0: only after the last step
    run: Callable  # (state, final: bool) -> dict[str, float]


def register(name: str):
    """Decorator: register an evaluation factory ``(setup, settings, test_split) ->
    Evaluation | None`` (``None``: nothing to evaluate for this family)."""

    def wrap(factory):
        _TYPES[name] = factory
        return factory

    return wrap


def default_evals() -> dict:
    return {"held_out": {"type": "held_out"}}


def check(config) -> None:
    """Raise unless every entry of ``config.evals`` names a registered type."""
    for name, settings in _entries(config):
        kind = settings.get("type", "")
        if kind not in _TYPES:
            raise ConfigError(
                f"evals.{name}.type={kind!r} is not a registered evaluation; expected one of "
                f"{tuple(sorted(_TYPES))} (types defined above the engine are registered when "
                "their module is imported: `import jaxgen.eval` adds 'samples')"
            )


def build(setup, test_split) -> list[Evaluation]:
    """The config's evaluations for this run (after ``check``), skipping those with nothing to
    evaluate for its family."""
    out = []
    for _, settings in _entries(setup.config):
        evaluation = _TYPES[settings["type"]](setup, settings, test_split)
        if evaluation is not None:
            out.append(evaluation)
    return out


def _entries(config):
    evals = config.get("evals", None)
    items = default_evals() if evals is None else evals
    return sorted(items.items())


# ----------------------------------------------------------------------------- held-out metrics
def reduce_metrics(totals: dict, count: int, reductions) -> dict[str, float]:
    """Turn metrics summed over ``count`` eval batches into the reported numbers.

    ``mean`` (the default, scalars only): the batch mean; ``sum``: the total, as a float or a
    list; ``histogram`` (e.g. a VQ model's code counts): ``<name>_used``, the fraction of bins
    hit over the pass, and ``<name>_perplexity``, the exponentiated entropy of the pass's
    distribution (unlike a batch perplexity, independent of the batch size).
    """
    out = {}
    for k, v in totals.items():
        v = np.asarray(v)
        kind = reductions.get(k, "mean")
        if kind == "histogram":
            out[f"{k}_used"] = float(np.mean(v > 0))
            p = v / max(float(v.sum()), 1e-12)
            out[f"{k}_perplexity"] = float(np.exp(-np.sum(p * np.log(np.maximum(p, 1e-12)))))
        elif kind == "sum":
            out[k] = float(v) if v.ndim == 0 else v.tolist()
        elif v.ndim == 0:
            out[k] = float(v) / count
        else:
            raise ValueError(
                f"eval metric {k!r} has shape {v.shape}; declare it in the family's "
                "eval_reductions ('sum' or 'histogram') or return a scalar"
            )
    return out


def compile_eval_step(setup):
    family, config, mesh = setup.family, setup.config, setup.mesh
    return jax.jit(
        lambda state, batch: family.eval_step(config, gather_params(state, mesh), batch),
        in_shardings=(setup.state_sharding, batch_sharding(setup.mesh)),
        out_shardings=replicated(setup.mesh),
    )


def run_held_out(setup, eval_fn, state, split, num_examples: int) -> dict[str, float]:
    """The family's eval metrics over the first ``num_examples`` test examples."""
    cfg = setup.config
    batches = eval_batches(
        split, cfg.eval.batch_size, num_examples, jax.process_index(), jax.process_count()
    )
    totals, count = None, 0
    for batch in batches:
        signals.check()  # SIGTERM or Ctrl-C: stop between batches
        metrics = eval_fn(state, global_batch(batch, setup.mesh))
        totals = metrics if totals is None else jax.tree.map(jnp.add, totals, metrics)
        count += 1
    if count == 0:
        raise ValueError(
            f"eval: the test split has {split.num_examples} examples, fewer than one eval batch "
            f"of eval.batch_size={cfg.eval.batch_size}"
        )
    out = reduce_metrics(jax.device_get(totals), count, setup.family.eval_reductions)
    out["examples"] = float(num_eval_examples(split, cfg.eval.batch_size, num_examples))
    return out


def check_held_out(cfg, test_split) -> None:
    """Raise ConfigError, before training, unless both held-out evals cover a whole batch."""
    size = test_split.num_examples
    if cfg.eval.batch_size > size:
        raise ConfigError(
            f"eval.batch_size={cfg.eval.batch_size} is larger than the test split "
            f"({size} examples); use at most {size}, a multiple of the device count"
        )
    keys = ("num_examples", "final_num_examples") if cfg.train.eval_every else ()
    for key in keys or ("final_num_examples",):
        n = cfg.eval[key]
        if n and num_eval_examples(test_split, cfg.eval.batch_size, n) == 0:
            raise ConfigError(
                f"eval.{key}={n} is fewer than one eval batch (eval.batch_size="
                f"{cfg.eval.batch_size}); use 0 (the whole test split) or at least "
                f"{cfg.eval.batch_size}"
            )


@register("held_out")
def held_out(setup, settings, test_split) -> Evaluation | None:
    del settings  # held-out settings live in the ``eval`` section
    if not setup.caps.held_out:
        return None
    cfg = setup.config
    check_held_out(cfg, test_split)
    eval_fn = compile_eval_step(setup)

    def run(state, final: bool):
        num = cfg.eval.final_num_examples if final else cfg.eval.num_examples
        return run_held_out(setup, eval_fn, state, test_split, num)

    return Evaluation(split="eval", every=cfg.train.eval_every, run=run)
