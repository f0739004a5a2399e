"""Training-time diffusion math, as pure functions: what a denoiser is trained on.

For ``x0`` and ``noise ~ N(0, I)`` at a time ``t``, the model sees
``x_t = alpha(t) x0 + sigma(t) noise`` (``add_noise``) and learns to output the target of its
prediction type (``prediction_target``: ``eps`` is ``noise``, ``x0`` is ``x0``,
``v = alpha noise - sigma x0``); ``denoising_loss`` is the *simple* loss of Ho et al. (2020),
the mean squared error to that target. ``sample_training_times`` draws the times: uniform over
the discrete steps ``t = (n + 1) / N`` for DDPM schedules, uniform in ``[t_min, t_max]`` for
continuous ones. Label dropout for classifier-free guidance is ``guidance.drop_labels``.

``t`` is a scalar or one time per example ``[B]``, broadcast over the remaining axes of
``x0: [B, ...]``. The same functions noise the inputs of a noise-aware classifier.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.checks import same_shape
from jaxgen.diffusion.predictions import PREDICTIONS, _check_per_example
from jaxgen.diffusion.schedules import Schedule


def _bcast(a: jax.Array, x: jax.Array) -> jax.Array:
    """A scalar or per-example ``a: [B]`` reshaped to broadcast against ``x: [B, ...]``."""
    a = jnp.asarray(a)
    return a.reshape(a.shape + (1,) * (x.ndim - a.ndim))


def add_noise(schedule: Schedule, x0: jax.Array, t, noise: jax.Array) -> jax.Array:
    """``x_t = alpha(t) x0 + sigma(t) noise`` with ``t`` a scalar or ``[B]``."""
    same_shape("add_noise", x0=x0, noise=noise)
    _check_per_example("add_noise", "t", t, "x0", x0)
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    return _bcast(alpha, x0) * x0 + _bcast(sigma, x0) * noise


def sample_training_times(schedule: Schedule, rng: jax.Array, num: int) -> jax.Array:
    """Training times ``[num]`` (float32): for a discrete schedule, steps ``n`` uniform in
    ``0..N-1`` at ``t = (n + 1) / N``; for a continuous one, uniform in ``[t_min, t_max]``."""
    if not isinstance(num, int | np.integer) or isinstance(num, bool) or num < 0:
        raise ValueError(f"sample_training_times: num must be an integer >= 0, got {num!r}")
    if schedule.continuous:
        return jax.random.uniform(rng, (num,), jnp.float32, schedule.t_min, schedule.t_max)
    n = jax.random.randint(rng, (num,), 0, schedule.num_steps)
    return schedule.discrete_t(n)


def prediction_target(prediction: str, x0: jax.Array, noise: jax.Array, alpha, sigma) -> jax.Array:
    """What a model of type ``prediction`` should output for ``x_t = alpha x0 + sigma noise``:
    ``noise`` (``eps``), ``x0`` (``x0``) or ``alpha noise - sigma x0`` (``v``). ``alpha`` and
    ``sigma`` are ``schedule.alpha(t)``, ``schedule.sigma(t)`` (scalars or ``[B]``)."""
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction={prediction!r} is not one of {PREDICTIONS}")
    same_shape("prediction_target", x0=x0, noise=noise)
    _check_per_example("prediction_target", "alpha", alpha, "x0", x0)
    _check_per_example("prediction_target", "sigma", sigma, "x0", x0)
    if prediction == "eps":
        return noise
    if prediction == "x0":
        return x0
    return _bcast(alpha, x0) * noise - _bcast(sigma, x0) * x0  # "v"


def denoising_loss(
    model_out: jax.Array, prediction: str, x0: jax.Array, noise: jax.Array, alpha, sigma
) -> tuple[jax.Array, jax.Array]:
    """The simple loss: ``(mean, per_example [B])`` of the squared error between ``model_out``
    and ``prediction_target(...)``, each example's error averaged over its pixels."""
    same_shape("denoising_loss", model_out=model_out, x0=x0, noise=noise)
    _check_per_example("denoising_loss", "alpha", alpha, "x0", x0)
    _check_per_example("denoising_loss", "sigma", sigma, "x0", x0)
    if jnp.ndim(x0) < 1:
        raise ValueError(f"denoising_loss: x0 must be [B, ...], got shape {jnp.shape(x0)}")
    err = jnp.square(model_out - prediction_target(prediction, x0, noise, alpha, sigma))
    per_example = err.reshape(err.shape[0], -1).mean(axis=1)
    return per_example.mean(), per_example
