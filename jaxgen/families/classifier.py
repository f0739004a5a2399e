"""Image classifiers: the noise-aware classifier behind classifier guidance, and the evaluator.

``classifier.noisy = True`` (the noise-aware classifier of Dhariwal & Nichol 2021): each
training image is noised to ``x_t = alpha(t) x0 + sigma(t) eps`` with ``t`` drawn like the
diffusion family draws it, on the schedule named in the ``diffusion`` section (which must match
the diffusion model it will guide), and the classifier sees ``(x_t, t)``. Guidance runs through
the whole sampling path, so the classifier must be useful at every noise level; ``eval_step``
reports its accuracy at a set of fixed times (``classifier.eval_times``), ``acc_t0.50`` etc.

``classifier.noisy = False``: a plain classifier of clean images (``t = 0``). The evaluator of
``jaxgen.eval`` is one (``configs/classifier.py:<data set>,evaluator``): its penultimate
features serve the Frechet distance, KID and precision/recall, and its verdicts the class
accuracy of conditional samples. Keep it a separate run from the noise-aware one.

Networks (``model.arch``): ``"unet"``, ``jaxgen.nn.classifier.Classifier`` (the UNet's down path
with a pooled head, time-aware: the guide); ``"cnn"``, ``jaxgen.nn.evaluator_cnn.EvaluatorCNN`` (a
small plain CNN of clean images: the evaluator). Augmentation of training images (clean
classifiers): ``classifier.augment_shift`` pixels of random translation (background-filled) and
``classifier.augment_flip`` random left-right flips. Loss: softmax cross-entropy. It does not
generate; a diffusion model takes a noise-aware classifier's run as its
``--classifier-workdir`` sampling option.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxgen import diffusion as dfn
from jaxgen.errors import ConfigError
from jaxgen.families import Capabilities, Family
from jaxgen.families.common import (
    check_choice,
    check_int,
    check_optimizer,
    example_keys,
    make_optimizer,
    to_model_range,
)
from jaxgen.families.state import State, TrainState, gradient_step
from jaxgen.nn.classifier import Classifier
from jaxgen.nn.evaluator_cnn import EvaluatorCNN

SCHEDULES = ("linear", "cosine", "linear_vp")
ARCHS = ("unet", "cnn")


def build_model(config):
    m = config.model
    if m.arch == "cnn":
        return EvaluatorCNN(
            num_classes=m.num_classes,
            widths=tuple(m.widths),
            features=m.features,
            dropout=m.dropout,
        )
    return Classifier(
        num_classes=m.num_classes,
        channels=m.channels,
        channel_mult=tuple(m.channel_mult),
        num_res_blocks=m.num_res_blocks,
        dropout=m.dropout,
    )


def make_schedule(config) -> dfn.Schedule:
    """The noise schedule of the diffusion model to guide (``diffusion`` section)."""
    return dfn.make_schedule(config.diffusion.schedule, config.diffusion.num_steps)


def logits_fn(config, params):
    """``(x, t) -> logits`` for ``x`` in [-1, 1]: what ``jaxgen.diffusion.guidance`` takes."""
    model = build_model(config)
    return lambda x, t: model.apply({"params": params}, x, t)


def features_fn(config, params):
    """``(x, t) -> (logits, pooled features)``: the evaluator's outputs."""
    model = build_model(config)
    return lambda x, t: model.apply({"params": params}, x, t, features=True)


def augment(x, rng, shift: int, flip: bool):
    """Random translations of up to ``shift`` pixels each way (the border filled with the
    background, -1) and, with ``flip``, random left-right flips, independently per image of
    ``x: [B, H, W, C]`` in [-1, 1]."""
    b, h, w, _ = x.shape
    s_rng, f_rng = jax.random.split(rng)
    if shift > 0:
        padded = jnp.pad(x, ((0, 0), (shift, shift), (shift, shift), (0, 0)), constant_values=-1.0)
        offsets = jax.random.randint(s_rng, (b, 2), 0, 2 * shift + 1)
        crop = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, x.shape[-1]))  # noqa: E731
        x = jax.vmap(crop)(padded, offsets)
    if flip:
        flips = jax.random.bernoulli(f_rng, 0.5, (b, 1, 1, 1))
        x = jnp.where(flips, x[:, :, ::-1, :], x)
    return x


def _inputs(config, x0, rng):
    """``(x, t)`` the classifier trains on: noised at random times, or clean at ``t = 0``
    (augmented as ``classifier.augment_*`` asks)."""
    c = config.classifier
    if not c.noisy:
        if c.augment_shift > 0 or c.augment_flip:
            x0 = augment(x0, rng, c.augment_shift, c.augment_flip)
        return x0, jnp.zeros((x0.shape[0],), jnp.float32)
    t_rng, n_rng = jax.random.split(rng)
    schedule = make_schedule(config)
    t = dfn.sample_training_times(schedule, t_rng, x0.shape[0])
    noise = jax.random.normal(n_rng, x0.shape, jnp.float32)
    return dfn.add_noise(schedule, x0, t, noise), t


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
    check_choice(config, "model.arch", ARCHS)
    checks = [
        ("model.num_classes", m.num_classes, 2),
        ("diffusion.num_steps", config.diffusion.num_steps, 2),
        ("classifier.augment_shift", c.augment_shift, 0),
    ]
    if m.arch == "unet":
        checks += [("model.channels", m.channels, 1), ("model.num_res_blocks", m.num_res_blocks, 1)]
        seq_key, seq = "model.channel_mult", tuple(m.channel_mult)
    else:
        checks += [("model.features", m.features, 1)]
        seq_key, seq = "model.widths", tuple(m.widths)
    for key, value, minimum in checks:
        check_int(value, key, minimum)
    if not seq or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in seq):
        raise ConfigError(f"{seq_key}={seq!r} must be a non-empty sequence of ints >= 1")
    if m.arch == "cnn" and c.noisy:
        raise ConfigError(
            "model.arch='cnn' is a clean-image network (it ignores t); a noise-aware "
            "classifier (classifier.noisy=True) needs model.arch='unet'"
        )
    if not isinstance(c.augment_flip, bool):
        raise ConfigError(f"classifier.augment_flip={c.augment_flip!r} must be True or False")
    if c.noisy and (c.augment_shift or c.augment_flip):
        raise ConfigError(
            "classifier.augment_shift and augment_flip are for clean classifiers "
            "(classifier.noisy=False)"
        )
    if not 0 <= m.dropout < 1:
        raise ConfigError(f"model.dropout={m.dropout!r} must be in [0, 1)")
    if not isinstance(c.noisy, bool):
        raise ConfigError(f"classifier.noisy={c.noisy!r} must be True or False")
    times = tuple(c.eval_times)
    if any(not 0 <= v <= 1 for v in times):
        raise ConfigError(f"classifier.eval_times={times!r} must lie in [0, 1]")
    check_choice(config, "diffusion.schedule", SCHEDULES)
    check_optimizer(config.optimizer)


def capabilities(config) -> Capabilities:
    return Capabilities(label_classes=config.model.num_classes)


def init(config, rng: jax.Array, example_batch) -> State:
    x = to_model_range(example_batch["image"])
    t = jnp.zeros((x.shape[0],), jnp.float32)
    params = build_model(config).init(jax.random.fold_in(rng, 0), x, t)["params"]
    return State.create(rng, {"model": TrainState.create(params, make_optimizer(config.optimizer))})


def train_step(config, state: State, batch) -> tuple[State, dict]:
    in_rng, dropout_rng = jax.random.split(state.step_key())
    x, t = _inputs(config, to_model_range(batch["image"]), in_rng)
    labels = jnp.asarray(batch["label"], jnp.int32)

    def objective(params):
        loss, acc = loss_fn(config, params, x, t, labels, dropout_rng)
        return loss, (loss, acc)

    model, (loss, acc), grad_norm = gradient_step(
        state.model, make_optimizer(config.optimizer), objective
    )
    return state.advance(model=model), {"loss": loss, "accuracy": acc, "grad_norm": grad_norm}


def eval_step(config, state: State, batch) -> dict:
    """Held-out loss and accuracy on the inputs it trains on (noise fixed by each example's
    index); a noise-aware classifier also reports accuracy at each of ``classifier.eval_times``
    (clean images at ``t = 0``)."""
    x0 = to_model_range(batch["image"])
    labels = jnp.asarray(batch["label"], jnp.int32)
    keys = example_keys(state.rng, batch["index"])
    model = build_model(config)
    apply = lambda x, t: model.apply({"params": state.model.params}, x, t)  # noqa: E731
    if not config.classifier.noisy:
        logits = apply(x0, jnp.zeros((x0.shape[0],), jnp.float32))
        return {"loss": _cross_entropy(logits, labels), "accuracy": _acc(logits, labels)}
    schedule = make_schedule(config)
    noise = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 1), x0.shape[1:]))(keys)
    t = jax.vmap(lambda k: dfn.sample_training_times(schedule, jax.random.fold_in(k, 0), 1)[0])(
        keys
    )
    logits = apply(dfn.add_noise(schedule, x0, t, noise), t)
    out = {"loss": _cross_entropy(logits, labels), "accuracy": _acc(logits, labels)}
    for value in tuple(config.classifier.eval_times):
        t = jnp.full((x0.shape[0],), value, jnp.float32)
        x = x0 if value == 0 else dfn.add_noise(schedule, x0, t, noise)
        out[f"acc_t{value:.2f}"] = _acc(apply(x, t), labels)
    return out


def _acc(logits, labels):
    return jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))


def check_guide(clf_config, image_shape, schedule: tuple[str, int]) -> int:
    """The number of classes of a classifier run that is to guide a diffusion model with
    images ``image_shape`` on ``schedule = (diffusion.schedule, diffusion.num_steps)``; raise
    ConfigError unless it is a noise-aware classifier made for that model."""
    if clf_config.family != "classifier" or not clf_config.classifier.noisy:
        raise ConfigError(
            "guidance='classifier' needs a noise-aware classifier (family 'classifier' with "
            f"classifier.noisy=True); got family={clf_config.family!r}"
            + (" with classifier.noisy=False" if clf_config.family == "classifier" else "")
        )
    theirs = (clf_config.diffusion.schedule, clf_config.diffusion.num_steps)
    if tuple(schedule) != theirs:
        raise ConfigError(
            f"the classifier was trained on the schedule {theirs} (diffusion.schedule, "
            f"diffusion.num_steps) but this model uses {tuple(schedule)}; they must match"
        )
    if tuple(clf_config.data.image_shape) != tuple(image_shape):
        raise ConfigError(
            f"the classifier takes images {tuple(clf_config.data.image_shape)}, this model "
            f"makes {tuple(image_shape)}"
        )
    return int(clf_config.model.num_classes)


FAMILY = Family(
    name="classifier",
    validate_config=validate_config,
    capabilities=capabilities,
    init=init,
    train_step=train_step,
    eval_step=eval_step,
)
