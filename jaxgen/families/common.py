"""Pieces every family shares: optimisers, pixel scaling, per-example eval keys, config checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxgen.errors import ConfigError

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")


def to_unit_interval(images: jax.Array) -> jax.Array:
    """uint8 ``[0, 255]`` -> float32 ``[0, 1]``."""
    return images.astype(jnp.float32) / 255.0


def to_model_range(images: jax.Array) -> jax.Array:
    """uint8 ``[0, 255]`` -> float32 ``[-1, 1]`` (the diffusion models' and classifiers' scale)."""
    return images.astype(jnp.float32) / 127.5 - 1.0


_EVAL_SALT = 0x7FFFFFFF  # folds eval keys away from every training step's key


def example_keys(rng: jax.Array, index: jax.Array) -> jax.Array:
    """One PRNG key per held-out example, fixed by its index (``batch["index"]``), so eval
    noise does not depend on batching, device count or how many evals ran before."""
    base = jax.random.fold_in(rng, _EVAL_SALT)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(index)


def make_optimizer(opt) -> optax.GradientTransformation:
    """Optimiser from ``config.optimizer``: name, learning_rate, warmup_steps, decay_steps
    (cosine decay to 0 after warm-up when > 0), weight_decay, grad_clip (0: none), b1, b2
    (adam/adamw betas; sgd and rmsprop momentum is b1)."""
    lr = opt.learning_rate
    if opt.decay_steps > 0:
        schedule = optax.warmup_cosine_decay_schedule(
            0.0, lr, max(opt.warmup_steps, 1), opt.warmup_steps + opt.decay_steps
        )
    elif opt.warmup_steps > 0:
        schedule = optax.linear_schedule(0.0, lr, opt.warmup_steps)
    else:
        schedule = lr
    if opt.name == "adam":
        tx = optax.adam(schedule, b1=opt.b1, b2=opt.b2)
    elif opt.name == "adamw":
        tx = optax.adamw(schedule, b1=opt.b1, b2=opt.b2, weight_decay=opt.weight_decay)
    elif opt.name == "rmsprop":
        # PyTorch's RMSprop defaults (smoothing 0.99, eps 1e-8 outside the root), which the WGAN
        # paper's code used; b1 > 0 adds momentum.
        tx = optax.rmsprop(
            schedule, decay=0.99, eps=1e-8, momentum=opt.b1 or None, eps_in_sqrt=False
        )
    else:
        tx = optax.sgd(schedule, momentum=opt.b1)
    if opt.grad_clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(opt.grad_clip), tx)
    return tx


def check_optimizer(opt, prefix: str = "optimizer") -> None:
    if opt.name not in OPTIMIZERS:
        raise ConfigError(f"{prefix}.name={opt.name!r} is not one of {OPTIMIZERS}")
    if not opt.learning_rate > 0:
        raise ConfigError(f"{prefix}.learning_rate={opt.learning_rate!r} must be > 0")
    for key in ("warmup_steps", "decay_steps", "weight_decay", "grad_clip"):
        if opt[key] < 0:
            raise ConfigError(f"{prefix}.{key}={opt[key]!r} must be >= 0")
    for key in ("b1", "b2"):
        if not 0 <= opt[key] < 1:
            raise ConfigError(f"{prefix}.{key}={opt[key]!r} must be in [0, 1)")


def check_choice(config, key: str, choices) -> None:
    """Raise unless ``config[key]`` (a dotted key) is one of ``choices``."""
    value = config
    for part in key.split("."):
        value = value[part]
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not one of {tuple(choices)}")


def check_int(value, key: str, minimum: int) -> None:
    """Raise unless ``value`` (config key ``key``) is an int (not a bool) >= ``minimum``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{key}={value!r} must be an integer >= {minimum}")
