"""Image classifiers: the noise-aware classifier behind classifier guidance, and the evaluator.

``classifier.noisy = True`` (the noise-aware classifier of Dhariwal & Nichol 2021): each
training image is noised to ``x_t = alpha(t) x0 + sigma(t) eps`` with ``t`` drawn like the
diffusion family draws it, on the schedule named in the ``diffusion`` section (which must match
the diffusion model it will guide), and the classifier sees ``(x_t, t)``. Guidance runs through
the whole sampling path, so the classifier must be useful at every noise level; ``eval_step``
reports its accuracy at a set of fixed times (``classifier.eval_times``), ``acc_t0.50`` etc.

``classifier.noisy = False``: a plain classifier of clean images (``t = 0``), used as the
evaluator that scores generated samples (the share classified as the requested class) and gives
the features for a diversity figure. Keep it a separate run from the noise-aware one.

The network is ``jaxgen.nn.classifier.Classifier`` (the UNet's down path with a pooled head).
Loss: softmax cross-entropy. No ``sample``: this family does not generate.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from jaxgen import diffusion as dfn
from jaxgen.errors import ConfigError
from jaxgen.families import diffusion
from jaxgen.families.common import (
    check_choice,
    check_optimizer,
    example_keys,
    global_norm,
    make_optimizer,
)
from jaxgen.nn.classifier import Classifier

SCHEDULES = ("linear", "cosine", "linear_vp")
SAMPLE_OPTIONS: dict = {}


@flax.struct.dataclass
class State:
    step: jax.Array
    rng: jax.Array
    params: Any
    opt_state: Any


def build_model(config) -> Classifier:
    m = config.model
    return Classifier(
        num_classes=m.num_classes,
        channels=m.channels,
        channel_mult=tuple(m.channel_mult),
        num_res_blocks=m.num_res_blocks,
        dropout=m.dropout,
    )


# The noise schedule and training times are the diffusion family's, read from the same keys.
make_schedule = diffusion.make_schedule
sample_times = diffusion.sample_times


def noise_images(schedule: dfn.Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array):
    shape = (-1,) + (1,) * (x0.ndim - 1)
    return schedule.alpha(t).reshape(shape) * x0 + schedule.sigma(t).reshape(shape) * noise


def logits_fn(config, params):
    """``(x, t) -> logits`` for ``x`` in [-1, 1]: what ``jaxgen.diffusion.guidance`` takes."""
    model = build_model(config)
    return lambda x, t: model.apply({"params": params}, x, t)


def features_fn(config, params):
    """``(x, t) -> (logits, pooled features)``: the evaluator's outputs."""
    model = build_model(config)
    return lambda x, t: model.apply({"params": params}, x, t, features=True)


def _inputs(config, x0, rng):
    """``(x, t)`` the classifier trains on: noised at random times, or clean at ``t = 0``."""
    if not config.classifier.noisy:
        return x0, jnp.zeros((x0.shape[0],), jnp.float32)
    t_rng, n_rng = jax.random.split(rng)
    schedule = make_schedule(config)
    t = sample_times(config, schedule, t_rng, x0.shape[0])
    noise = jax.random.normal(n_rng, x0.shape, jnp.float32)
    return noise_images(schedule, x0, t, noise), t


def _cross_entropy(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def loss_fn(config, params, x, t, labels, dropout_rng):
    rngs = {} if dropout_rng is None else {"dropout": dropout_rng}
    logits = build_model(config).apply(
        {"params": params}, x, t, deterministic=dropout_rng is None, rngs=rngs
    )
    loss = _cross_entropy(logits, labels)
    return loss, _acc(logits, labels)


# ------------------------------------------------------------------------------------ contract
def validate_config(config) -> None:
    m, c = config.model, config.classifier
    for key, value, minimum in [
        ("model.channels", m.channels, 1),
        ("model.num_res_blocks", m.num_res_blocks, 1),
        ("model.num_classes", m.num_classes, 2),
        ("diffusion.num_steps", config.diffusion.num_steps, 2),
    ]:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ConfigError(f"{key}={value!r} must be an integer >= {minimum}")
    mult = tuple(m.channel_mult)
    if not mult or any(not isinstance(v, int) or v < 1 for v in mult):
        raise ConfigError(f"model.channel_mult={mult!r} must be a non-empty sequence of ints >= 1")
    if not 0 <= m.dropout < 1:
        raise ConfigError(f"model.dropout={m.dropout!r} must be in [0, 1)")
    if not isinstance(c.noisy, bool):
        raise ConfigError(f"classifier.noisy={c.noisy!r} must be True or False")
    times = tuple(c.eval_times)
    if any(not 0 <= v <= 1 for v in times):
        raise ConfigError(f"classifier.eval_times={times!r} must lie in [0, 1]")
    check_choice(config, "diffusion.schedule", SCHEDULES)
    check_optimizer(config.optimizer)


def init(config, rng: jax.Array, example_batch) -> State:
    x = diffusion.to_model_range(example_batch["image"])
    t = jnp.zeros((x.shape[0],), jnp.float32)
    params = build_model(config).init(jax.random.fold_in(rng, 0), x, t)["params"]
    return State(
        step=jnp.zeros((), jnp.int32),
        rng=rng,
        params=params,
        opt_state=make_optimizer(config.optimizer).init(params),
    )


def train_step(config, state: State, batch) -> tuple[State, dict]:
    rng = jax.random.fold_in(state.rng, state.step)
    in_rng, dropout_rng = jax.random.split(rng)
    x, t = _inputs(config, diffusion.to_model_range(batch["image"]), in_rng)
    labels = jnp.asarray(batch["label"], jnp.int32)
    grad_fn = jax.value_and_grad(
        lambda p: loss_fn(config, p, x, t, labels, dropout_rng), has_aux=True
    )
    (loss, acc), grads = grad_fn(state.params)
    updates, opt_state = make_optimizer(config.optimizer).update(
        grads, state.opt_state, state.params
    )
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, {"loss": loss, "accuracy": acc, "grad_norm": global_norm(grads)}


def eval_step(config, state: State, batch) -> dict:
    """Held-out loss and accuracy on the inputs it trains on (noise fixed by each example's
    index); a noise-aware classifier also reports accuracy at each of ``classifier.eval_times``
    (clean images at ``t = 0``)."""
    x0 = diffusion.to_model_range(batch["image"])
    labels = jnp.asarray(batch["label"], jnp.int32)
    keys = example_keys(state.rng, batch["index"])
    model = build_model(config)
    apply = lambda x, t: model.apply({"params": state.params}, x, t)  # noqa: E731
    if not config.classifier.noisy:
        logits = apply(x0, jnp.zeros((x0.shape[0],), jnp.float32))
        return {"loss": _cross_entropy(logits, labels), "accuracy": _acc(logits, labels)}
    schedule = make_schedule(config)
    noise = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 1), x0.shape[1:]))(keys)
    t = jax.vmap(lambda k: sample_times(config, schedule, jax.random.fold_in(k, 0), 1)[0])(keys)
    logits = apply(noise_images(schedule, x0, t, noise), t)
    out = {"loss": _cross_entropy(logits, labels), "accuracy": _acc(logits, labels)}
    for value in tuple(config.classifier.eval_times):
        t = jnp.full((x0.shape[0],), value, jnp.float32)
        x = x0 if value == 0 else noise_images(schedule, x0, t, noise)
        out[f"acc_t{value:.2f}"] = _acc(apply(x, t), labels)
    return out


def _acc(logits, labels):
    return jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))


def add_defaults(c) -> None:
    """The classifier family's sections on a base config (a small network for 28x28 data)."""
    import ml_collections

    c.family = "classifier"
    c.model = ml_collections.ConfigDict()
    c.model.channels = 32
    c.model.channel_mult = (1, 2, 2)
    c.model.num_res_blocks = 1
    c.model.dropout = 0.0
    c.model.num_classes = 10
    c.classifier = ml_collections.ConfigDict()
    c.classifier.noisy = True
    c.classifier.eval_times = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
    c.diffusion = ml_collections.ConfigDict()  # the noise schedule of the model to guide
    c.diffusion.schedule = "linear"
    c.diffusion.num_steps = 1000
    c.train.sample_every = 0


def defaults_28x28(c, variants) -> None:
    """Training settings for 28x28x1 data (MNIST, Fashion-MNIST) that those configs share.
    ``variants`` may hold ``clean`` (the evaluator); the caller sets ``data``."""
    c.data.image_shape = (28, 28, 1)
    c.classifier.noisy = "clean" not in variants
    c.train.batch_size = 64
    c.train.num_steps = 2_500
    if not c.classifier.noisy:
        # the evaluator: annealed, since its accuracy bounds what it can tell apart
        c.optimizer.decay_steps = c.train.get_ref("num_steps") - c.optimizer.get_ref("warmup_steps")
    c.train.eval_every = 1_000
    c.train.checkpoint_every = 1_000
    c.optimizer.learning_rate = 1e-3
    c.optimizer.warmup_steps = 100
    c.optimizer.weight_decay = 0.0
    c.eval.batch_size = 400
    c.eval.num_examples = 2_000
    c.eval.final_num_examples = 10_000


def tiny_model(c) -> None:
    """The ``tiny`` variant's network, shared by the classifier configs."""
    c.model.channels = 8
    c.model.channel_mult = (1, 2)
    c.optimizer.warmup_steps = 0
    c.optimizer.decay_steps = 0  # a constant rate: the tests' short runs
