"""Guidance as wrappers: each turns a model function into another ``model_fn(x, t)`` that any
solver in ``jaxgen.diffusion.sample`` accepts.

Classifier-free guidance (Ho & Salimans 2022). A conditional model ``model_fn(x, t, y)`` trained
with its labels dropped to a null class now and then (``drop_labels``) predicts both
``p(x | y)`` and ``p(x)``. ``classifier_free`` evaluates the two in one batched call (inputs
concatenated, outputs split) and extrapolates::

    guided = cond + (w - 1) (cond - uncond)      # = uncond + w (cond - uncond)

so ``w = 1`` is the conditional model bit for bit and ``w = 0`` the unconditional one (a
Python ``w`` of exactly 1, or of exactly 0 without rescale or interval, skips the half it does
not need; an array ``w`` always takes the batched call, whose rows XLA may round slightly
differently from a call on half the batch). The
"uncond" half may use a negative class instead of the null class, which steers samples away
from it. Options: guidance rescale ``phi`` (Lin et al. 2024: scale the guided prediction to the
per-example standard deviation of the conditional one, then mix ``phi`` of that with
``1 - phi`` of the plain guided prediction), and a guidance interval (Kynkäänniemi et al. 2024:
``w`` applies only for ``t`` in ``[t_lo, t_hi]``, the plain conditional model elsewhere).

Classifier guidance (Dhariwal & Nichol 2021) with a noise-aware classifier
``classifier_fn(x, t) -> logits`` trained on ``x_t``:

- ``classifier_guidance`` is the DDIM / DPM-Solver form, ``eps_hat = eps - s sigma(t) g`` with
  ``g = grad_x log p(y | x_t)``: the model's prediction is turned into noise, shifted, and turned
  back into the model's prediction type, so every solver can take it;
- ``classifier_mean_shift`` gives ``s g`` for the DDPM solver's mean-shift form
  (``sample(..., solver="ddpm", mean_shift=...)`` adds ``variance * s g`` to the posterior
  mean).

Scales may be Python floats or traced arrays (scalar or one per example), so a jitted sampler can
sweep them without compiling again. All guidance arithmetic is float32.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxgen.diffusion.predictions import PREDICTIONS, _bcast, to_eps, to_v, to_x0
from jaxgen.diffusion.schedules import Schedule

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]


def _per_example_std(x: jax.Array) -> jax.Array:
    return jnp.std(x, axis=tuple(range(1, x.ndim)), keepdims=True)


# Static shape checks (trace time): a batch that does not match the labels or the scale fails
# here with the names and shapes instead of in a concatenate or broadcast inside the model.
def _check_batch(fn: str, x, labels) -> None:
    if jnp.ndim(x) < 1 or jnp.shape(x)[0] != jnp.shape(labels)[0]:
        raise ValueError(
            f"{fn}: x must be [B, ...] with B = len(labels) = {jnp.shape(labels)[0]}, "
            f"got x {jnp.shape(x)} and labels {jnp.shape(labels)}"
        )


def _check_scale(fn: str, scale, n: int) -> None:
    if jnp.ndim(scale) != 0 and jnp.shape(scale) != (n,):
        raise ValueError(
            f"{fn}: scale must be a scalar or [B] = ({n},), got scale {jnp.shape(scale)}"
        )


def _check_labels(fn: str, labels) -> None:
    if jnp.ndim(labels) != 1:
        raise ValueError(f"{fn}: labels must be [B], got shape {jnp.shape(labels)}")


def classifier_free(
    model_fn: Callable[[jax.Array, jax.Array, jax.Array], jax.Array],
    labels: jax.Array,
    uncond_labels: jax.Array,
    scale,
    *,
    rescale: float = 0.0,
    interval: tuple[float, float] | None = None,
) -> ModelFn:
    """Classifier-free guidance of a conditional ``model_fn(x, t, y)``.

    ``labels``: the conditions to generate, one row per example: ``[B]`` int classes, or
    ``[B, L]`` int tokens of a prompt. ``uncond_labels``: the same shape, the null condition
    (for our UNet the null class ``num_classes``; for a text model the empty prompt) or a
    negative one per example (a negative class or prompt), so the guided prediction is
    ``eps(neg) + w (eps(cond) - eps(neg))``. ``scale``: ``w``.
    ``rescale``: ``phi`` in ``[0, 1]`` (0: off). ``interval``: ``(t_lo, t_hi)`` or ``None``.
    The wrapped function makes one model call on a batch of ``2 B``.
    """
    if not 0.0 <= rescale <= 1.0:
        raise ValueError(f"rescale={rescale!r} must be in [0, 1]")
    if interval is not None and not (0.0 <= interval[0] <= interval[1]):
        raise ValueError(f"interval={interval!r} must be (t_lo, t_hi) with 0 <= t_lo <= t_hi")
    labels = jnp.asarray(labels, jnp.int32)
    uncond_labels = jnp.asarray(uncond_labels, jnp.int32)
    if labels.shape != uncond_labels.shape or labels.ndim < 1:
        raise ValueError(
            f"classifier_free: labels {labels.shape} and uncond_labels {uncond_labels.shape} "
            "must both be [B] (classes) or both [B, L] (prompt tokens)"
        )

    # A Python scale of exactly 1 (or 0 without an interval or rescale) needs one half of the
    # batch only. (With rescale, w = 0 is the unconditional prediction rescaled to the
    # conditional one's standard deviation, which needs both halves.)
    static = scale if isinstance(scale, (int, float)) else None
    if static == 1.0:
        return lambda x, t: model_fn(x, t, labels).astype(jnp.float32)
    if static == 0.0 and interval is None and rescale == 0.0:
        return lambda x, t: model_fn(x, t, uncond_labels).astype(jnp.float32)

    _check_scale("classifier_free", scale, labels.shape[0])

    def guided(x: jax.Array, t: jax.Array) -> jax.Array:
        _check_batch("classifier_free", x, labels)
        n = x.shape[0]
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (n,))
        out = model_fn(
            jnp.concatenate([x, x]),
            jnp.concatenate([t, t]),
            jnp.concatenate([labels, uncond_labels]),
        )
        if jnp.ndim(out) < 1 or jnp.shape(out)[0] != 2 * n:
            raise ValueError(
                f"classifier_free: model_fn got a batch of {2 * n} (x {x.shape} twice) and "
                f"must return {2 * n} rows, got shape {jnp.shape(out)}"
            )
        cond, uncond = out[:n].astype(jnp.float32), out[n:].astype(jnp.float32)
        w = jnp.broadcast_to(jnp.asarray(scale, jnp.float32), (n,))
        if interval is not None:
            inside = (t >= interval[0]) & (t <= interval[1])
            w = jnp.where(inside, w, 1.0)
        result = cond + _bcast(w - 1.0, cond) * (cond - uncond)
        if rescale > 0.0:
            # A constant guided prediction (std 0, e.g. w = 1 on a constant conditional one)
            # has no spread to rescale: leave it as it is rather than scale it by 0 or 1e12.
            spread = _per_example_std(result)
            ratio = jnp.where(
                spread > 1e-12, _per_example_std(cond) / jnp.maximum(spread, 1e-12), 1.0
            )
            result = rescale * (result * ratio) + (1.0 - rescale) * result
        return result

    return guided


def drop_labels(labels: jax.Array, rng: jax.Array, p_uncond: float, num_classes: int):
    """Condition dropout for classifier-free guidance training: each label becomes the null class
    ``num_classes`` with probability ``p_uncond`` (int32, the shape of ``labels``)."""
    if isinstance(p_uncond, int | float) and not 0.0 <= p_uncond <= 1.0:
        raise ValueError(f"drop_labels: p_uncond={p_uncond!r} must be in [0, 1]")
    drop = jax.random.bernoulli(rng, p_uncond, labels.shape)
    return jnp.where(drop, num_classes, labels).astype(jnp.int32)


def drop_prompts(tokens: jax.Array, rng: jax.Array, p_uncond: float, empty: jax.Array):
    """Condition dropout for a text model: each row of ``tokens [B, L]`` becomes the empty
    prompt ``empty [L]`` (``<bos>`` then padding) with probability ``p_uncond``, so the model
    also learns the unconditional prediction that guidance extrapolates from."""
    if isinstance(p_uncond, int | float) and not 0.0 <= p_uncond <= 1.0:
        raise ValueError(f"drop_prompts: p_uncond={p_uncond!r} must be in [0, 1]")
    drop = jax.random.bernoulli(rng, p_uncond, tokens.shape[:1])
    return jnp.where(drop[:, None], jnp.asarray(empty, tokens.dtype)[None], tokens)


def classifier_log_prob_grad(
    classifier_fn: Callable[[jax.Array, jax.Array], jax.Array], labels: jax.Array
) -> ModelFn:
    """``(x, t) -> grad_x log p(labels | x, t)`` (float32, the shape of ``x``).

    The classifier must treat examples independently (no batch statistics), so that the gradient
    of the summed log-probabilities is each example's own gradient.
    """
    labels = jnp.asarray(labels, jnp.int32)
    _check_labels("classifier_log_prob_grad", labels)

    def total_log_prob(x, t):
        logits = classifier_fn(x, t).astype(jnp.float32)
        if jnp.shape(logits)[:1] != labels.shape or jnp.ndim(logits) != 2:
            raise ValueError(
                f"classifier_log_prob_grad: classifier_fn must return logits [B, num_classes] "
                f"with B = len(labels) = {labels.shape[0]}, got {jnp.shape(logits)}"
            )
        log_p = jax.nn.log_softmax(logits, axis=-1)
        return jnp.sum(jnp.take_along_axis(log_p, labels[:, None], axis=-1))

    def grad(x, t):
        _check_batch("classifier_log_prob_grad", x, labels)
        x = x.astype(jnp.float32)
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (x.shape[0],))
        return jax.grad(total_log_prob)(x, t)

    return grad


def classifier_guidance(
    model_fn: ModelFn,
    classifier_fn: Callable[[jax.Array, jax.Array], jax.Array],
    labels: jax.Array,
    scale,
    schedule: Schedule,
    prediction: str = "eps",
) -> ModelFn:
    """Classifier guidance in the DDIM / DPM-Solver form: ``eps - s sigma(t) grad log p(y|x_t)``.

    ``model_fn`` predicts ``prediction`` (``eps``, ``x0`` or ``v``); the wrapped function
    predicts the same type, so pass the same ``prediction`` to ``sample``.
    """
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction={prediction!r} is not one of {PREDICTIONS}")
    grad_fn = classifier_log_prob_grad(classifier_fn, labels)
    _check_scale("classifier_guidance", scale, jnp.shape(labels)[0])

    def guided(x: jax.Array, t: jax.Array) -> jax.Array:
        _check_batch("classifier_guidance", x, labels)
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (x.shape[0],))
        alpha, sigma = schedule.alpha(t), schedule.sigma(t)
        eps = to_eps(model_fn(x, t), x, alpha, sigma, prediction)
        s = jnp.broadcast_to(jnp.asarray(scale, jnp.float32), (x.shape[0],))
        eps = eps - _bcast(s * sigma, eps) * grad_fn(x, t)
        if prediction == "eps":
            return eps
        if prediction == "x0":
            return to_x0(eps, x, alpha, sigma, "eps")
        return to_v(eps, x, alpha, sigma, "eps")

    return guided


def classifier_mean_shift(
    classifier_fn: Callable[[jax.Array, jax.Array], jax.Array], labels: jax.Array, scale
) -> ModelFn:
    """``(x, t) -> s grad_x log p(y | x_t)``, for ``sample(..., solver="ddpm", mean_shift=...)``:
    the DDPM form of classifier guidance shifts each posterior mean by its variance times this."""
    grad_fn = classifier_log_prob_grad(classifier_fn, labels)
    _check_scale("classifier_mean_shift", scale, jnp.shape(labels)[0])

    def shift(x: jax.Array, t: jax.Array) -> jax.Array:
        g = grad_fn(x, t)
        s = jnp.broadcast_to(jnp.asarray(scale, jnp.float32), (x.shape[0],))
        return _bcast(s, g) * g

    return shift
