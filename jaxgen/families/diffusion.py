"""Denoising diffusion (Ho et al. 2020) with a UNet, EMA weights and fast ODE/SDE samplers.

Training: ``x0`` (images scaled to [-1, 1]) is noised to ``x_t = alpha(t) x0 + sigma(t) eps``
and the UNet learns the *simple* loss, the mean squared error between its output and the
target of ``diffusion.prediction``: ``eps``, ``x0`` or ``v = alpha eps - sigma x0``. Times are
uniform over the discrete steps (``t = (n + 1) / N``, ``n`` uniform in ``0..N-1``) for the
``linear`` and ``cosine`` schedules and uniform in ``[t_min, 1]`` for ``linear_vp``.

With ``model.num_classes > 0`` the model is class-conditional, and each training label is
replaced by the null class (index ``num_classes``) with probability ``diffusion.p_uncond``, so
the same network also learns the unconditional model (for classifier-free guidance).

After every optimiser step the EMA weights move toward the parameters:
``ema = decay * ema + (1 - decay) * params``. Sampling uses the EMA weights and one of the
solvers of ``jaxgen.diffusion`` (``sampler`` section; ``dpm_solver++`` 2M with 20 steps by
default), ending with one denoising call at ``t_min``. Each x0 prediction is clipped to the
data range [-1, 1] (``sampler.thresholding``, as DDPM and guided-diffusion sample images): an
imperfect model's x0 at large ``t`` is ``(x - sigma eps) / alpha`` with ``1 / alpha(1)`` about
156 on the linear schedule, and unclipped errors of that size can wreck a sample.

``diffusion.mixed_precision`` computes the UNet in bfloat16; parameters, optimiser state, the
loss and the sampler's arithmetic stay float32.
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from jaxgen import diffusion as dfn
from jaxgen.diffusion.samplers import METHODS
from jaxgen.errors import ConfigError
from jaxgen.families.common import (
    check_choice,
    check_optimizer,
    example_keys,
    global_norm,
    make_optimizer,
)
from jaxgen.nn.unet import UNet

SCHEDULES = ("linear", "cosine", "linear_vp")
SAMPLE_OPTIONS = {
    "solver": ("", "diffusion: ddpm, ddim, dpm_solver or dpm_solver++ ('': config's sampler)."),
    "steps": (0, "diffusion: solver steps, = model calls (0: the config's sampler.steps)."),
    "order": (0, "diffusion: solver order 1-3 (0: the config's sampler.order)."),
    "method": ("", "diffusion: multistep or singlestep ('': the config's sampler.method)."),
    "eta": (-1.0, "diffusion: DDIM eta (< 0: the config's sampler.eta)."),
    "thresholding": ("", "diffusion: on or off: clip x0 predictions ('': sampler.thresholding)."),
}


@flax.struct.dataclass
class State:
    step: jax.Array
    rng: jax.Array
    params: Any
    ema_params: Any
    opt_state: Any


# ------------------------------------------------------------------------------------ pieces
def build_model(config) -> UNet:
    m = config.model
    return UNet(
        channels=m.channels,
        channel_mult=tuple(m.channel_mult),
        num_res_blocks=m.num_res_blocks,
        attention_resolutions=tuple(m.attention_resolutions),
        dropout=m.dropout,
        num_classes=m.num_classes,
        num_heads=m.num_heads,
        out_channels=config.data.image_shape[-1],
        dtype=jnp.bfloat16 if config.diffusion.mixed_precision else jnp.float32,
    )


def make_schedule(config) -> dfn.Schedule:
    return dfn.make_schedule(config.diffusion.schedule, config.diffusion.num_steps)


def to_model_range(images: jax.Array) -> jax.Array:
    """uint8 ``[0, 255]`` -> float32 ``[-1, 1]``."""
    return images.astype(jnp.float32) / 127.5 - 1.0


def ema_update(ema_params, params, decay):
    """``decay * ema + (1 - decay) * params``, leaf by leaf."""
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema_params, params)


def drop_labels(labels: jax.Array, rng: jax.Array, p_uncond: float, num_classes: int):
    """Each label becomes the null class ``num_classes`` with probability ``p_uncond``."""
    drop = jax.random.bernoulli(rng, p_uncond, labels.shape)
    return jnp.where(drop, num_classes, labels).astype(jnp.int32)


def sample_times(config, schedule: dfn.Schedule, rng: jax.Array, num: int) -> jax.Array:
    """Training times ``[num]``: discrete steps for DDPM schedules, uniform for ``linear_vp``."""
    if schedule.continuous:
        return jax.random.uniform(rng, (num,), jnp.float32, schedule.t_min, schedule.t_max)
    n = jax.random.randint(rng, (num,), 0, schedule.num_steps)
    return schedule.discrete_t(n)


def _bcast(a: jax.Array, x: jax.Array) -> jax.Array:
    return a.reshape(a.shape + (1,) * (x.ndim - a.ndim))


def target(prediction: str, x0: jax.Array, noise: jax.Array, alpha, sigma) -> jax.Array:
    """What the model should output for ``x_t = alpha x0 + sigma noise``."""
    if prediction == "eps":
        return noise
    if prediction == "x0":
        return x0
    return _bcast(alpha, x0) * noise - _bcast(sigma, x0) * x0


def loss_fn(config, params, x0, t, noise, labels, dropout_rng):
    """The simple loss (mean over examples and pixels) and per-example losses ``[B]``.

    ``dropout_rng = None`` runs the model deterministically (evaluation).
    """
    schedule = make_schedule(config)
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    x_t = _bcast(alpha, x0) * x0 + _bcast(sigma, x0) * noise
    rngs = {} if dropout_rng is None else {"dropout": dropout_rng}
    out = build_model(config).apply(
        {"params": params}, x_t, t, labels, deterministic=dropout_rng is None, rngs=rngs
    )
    err = jnp.square(out - target(config.diffusion.prediction, x0, noise, alpha, sigma))
    per_example = err.reshape(err.shape[0], -1).mean(axis=1)
    return per_example.mean(), per_example


def _train_labels(config, batch, rng):
    if config.model.num_classes == 0:
        return None
    labels = jnp.asarray(batch["label"], jnp.int32)
    return drop_labels(labels, rng, config.diffusion.p_uncond, config.model.num_classes)


# ------------------------------------------------------------------------------------ contract
def validate_config(config) -> None:
    m, d, s = config.model, config.diffusion, config.sampler
    _check_int(m.channels, "model.channels", 1)
    mult = tuple(m.channel_mult)
    if not mult or any(not isinstance(v, int) or v < 1 for v in mult):
        raise ConfigError(
            f"model.channel_mult={mult!r} must be a non-empty sequence of positive ints"
        )
    _check_int(m.num_res_blocks, "model.num_res_blocks", 1)
    _check_int(m.num_heads, "model.num_heads", 1)
    _check_int(m.num_classes, "model.num_classes", 0)
    if not 0 <= m.dropout < 1:
        raise ConfigError(f"model.dropout={m.dropout!r} must be in [0, 1)")
    widths = {m.channels * v for v in mult}
    bad = sorted(w for w in widths if w % m.num_heads)
    if bad:
        raise ConfigError(
            f"model.num_heads={m.num_heads!r} must divide every level's width; "
            f"{bad} (model.channels * model.channel_mult) do not split evenly"
        )
    h, w, _ = config.data.image_shape
    factor = 2 ** (len(mult) - 1)
    if h % factor or w % factor:
        raise ConfigError(
            f"model.channel_mult={mult} halves the image {len(mult) - 1} times, so "
            f"data.image_shape={(h, w)} must be divisible by {factor}; use a shorter channel_mult"
        )
    sizes = tuple(h // 2**i for i in range(len(mult)))
    for r in tuple(m.attention_resolutions):
        if r not in sizes:
            raise ConfigError(
                f"model.attention_resolutions={tuple(m.attention_resolutions)!r}: {r!r} is not "
                f"a feature-map size of this UNet; the sizes are {sizes}"
            )

    check_choice(config, "diffusion.schedule", SCHEDULES)
    check_choice(config, "diffusion.prediction", dfn.PREDICTIONS)
    _check_int(d.num_steps, "diffusion.num_steps", 2)
    if not 0 <= d.ema_decay <= 1:
        raise ConfigError(f"diffusion.ema_decay={d.ema_decay!r} must be in [0, 1]")
    if not isinstance(d.mixed_precision, bool):
        raise ConfigError(f"diffusion.mixed_precision={d.mixed_precision!r} must be True or False")
    if not 0 <= d.p_uncond <= 1:
        raise ConfigError(f"diffusion.p_uncond={d.p_uncond!r} must be in [0, 1]")

    check_choice(config, "sampler.solver", dfn.SOLVERS)
    check_choice(config, "sampler.method", METHODS)
    _check_int(s.steps, "sampler.steps", 1)
    if s.order not in (1, 2, 3) or isinstance(s.order, bool):
        raise ConfigError(f"sampler.order={s.order!r} is not one of (1, 2, 3)")
    if not s.eta >= 0:
        raise ConfigError(f"sampler.eta={s.eta!r} must be >= 0")
    _check_solver(s.solver, s.method, s.order, prefix="sampler.")
    # .get: runs saved before these keys existed take today's defaults.
    if not isinstance(s.get("thresholding", True), bool):
        raise ConfigError(f"sampler.thresholding={s.thresholding!r} must be True or False")
    if not s.get("threshold_max", 1.0) >= 1:
        raise ConfigError(f"sampler.threshold_max={s.threshold_max!r} must be >= 1")
    check_optimizer(config.optimizer)


def _check_int(value, key: str, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{key}={value!r} must be an integer >= {minimum}")


def _check_solver(solver, method, order, prefix="") -> None:
    if solver == "dpm_solver++" and method == "singlestep" and order == 3:
        raise ConfigError(
            f"{prefix}solver='dpm_solver++' with {prefix}method='singlestep' and "
            f"{prefix}order=3 is not offered; dpm_solver++ has 2S, 2M and 3M (use multistep)"
        )


def _init_key(rng: jax.Array) -> jax.Array:
    """An ``rbg`` key for parameter initialisation, derived from ``rng``.

    A UNet has ~100 random initialisers; with threefry keys XLA's CPU backend compiles each
    draw separately (~0.15 s apiece), with ``rbg`` (XLA's RngBitGenerator) about 4x faster.
    The initial weights are a pure function of ``rng`` on one backend, but may differ between
    CPU, GPU and TPU (RngBitGenerator's algorithm is the backend's choice).
    """
    data = jax.random.bits(jax.random.fold_in(rng, 0), (4,), jnp.uint32)
    return jax.random.wrap_key_data(data, impl="rbg")


def init(config, rng: jax.Array, example_batch) -> State:
    model = build_model(config)
    x = to_model_range(example_batch["image"])
    t = jnp.ones((x.shape[0],), jnp.float32)
    y = jnp.zeros((x.shape[0],), jnp.int32) if config.model.num_classes > 0 else None
    params = model.init(_init_key(rng), x, t, y)["params"]
    return State(
        step=jnp.zeros((), jnp.int32),
        rng=rng,
        params=params,
        ema_params=jax.tree.map(jnp.copy, params),
        opt_state=make_optimizer(config.optimizer).init(params),
    )


def train_step(config, state: State, batch) -> tuple[State, dict]:
    rng = jax.random.fold_in(state.rng, state.step)
    t_rng, noise_rng, label_rng, dropout_rng = jax.random.split(rng, 4)
    x0 = to_model_range(batch["image"])
    schedule = make_schedule(config)
    t = sample_times(config, schedule, t_rng, x0.shape[0])
    noise = jax.random.normal(noise_rng, x0.shape, jnp.float32)
    labels = _train_labels(config, batch, label_rng)
    grad_fn = jax.value_and_grad(functools.partial(loss_fn, config), has_aux=True)
    (loss, _), grads = grad_fn(state.params, x0, t, noise, labels, dropout_rng)
    updates, opt_state = make_optimizer(config.optimizer).update(
        grads, state.opt_state, state.params
    )
    params = optax.apply_updates(state.params, updates)
    ema_params = ema_update(state.ema_params, params, config.diffusion.ema_decay)
    metrics = {"loss": loss, "grad_norm": global_norm(grads)}
    new_state = state.replace(
        step=state.step + 1, params=params, ema_params=ema_params, opt_state=opt_state
    )
    return new_state, metrics


def eval_step(config, state: State, batch) -> dict:
    """The denoising loss on held-out images, each with a time and noise fixed by its index.

    ``loss`` uses the EMA weights (what sampling uses), ``loss_online`` the raw parameters;
    labels are the true ones (no label dropout) for conditional models.
    """
    keys = example_keys(state.rng, batch["index"])
    x0 = to_model_range(batch["image"])
    schedule = make_schedule(config)
    t = jax.vmap(lambda k: sample_times(config, schedule, jax.random.fold_in(k, 0), 1)[0])(keys)
    noise = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 1), x0.shape[1:]))(keys)
    labels = None
    if config.model.num_classes > 0:
        labels = jnp.asarray(batch["label"], jnp.int32)
    loss, _ = loss_fn(config, state.ema_params, x0, t, noise, labels, None)
    online, _ = loss_fn(config, state.params, x0, t, noise, labels, None)
    return {"loss": loss, "loss_online": online}


GUIDANCE = ("none", "cfg", "classifier")


def sample(
    config,
    state: State,
    rng: jax.Array,
    num: int,
    steps=None,
    eta=None,
    solver=None,
    method=None,
    order=None,
    label=None,
    guidance: str = "none",
    scale=1.0,
    negative_label=None,
    rescale: float = 0.0,
    interval=None,
    classifier=None,
    thresholding=None,
):
    """``num`` images ``[num, H, W, C]`` in ``[0, 1]`` from the EMA weights.

    Options left at ``None`` (or ``0`` for ``steps``/``order``, ``< 0`` for ``eta``, ``''``
    for strings) take the ``sampler`` section's value. ``thresholding`` (``sampler.thresholding``,
    on by default) clips every x0 prediction to [-1, 1]. ``label``: an int (every sample), an int
    array ``[num]``, or ``None``: classes ``0, 1, .., num_classes - 1, 0, ..`` in turn. The
    null class ``num_classes`` gives a conditional model's unconditional samples.

    Guidance (``jaxgen.diffusion.guidance``):
    - ``"cfg"``: classifier-free, ``w = scale``; needs a conditional model trained with label
      dropout (``diffusion.p_uncond > 0``). ``negative_label`` (int) replaces the null class in
      the unconditional half; ``rescale`` (phi) and ``interval`` ``(t_lo, t_hi)`` as there.
    - ``"classifier"``: ``classifier = (classifier_config, classifier_params)`` of a noise-aware
      classifier (family ``classifier``) trained on this model's noise schedule; ``ddpm`` uses
      the mean-shift form, every other solver ``eps - s sigma(t) grad log p(y | x_t)``.
    """
    s = config.sampler
    steps = int(steps) if steps else s.steps
    eta = s.eta if eta is None or eta < 0 else float(eta)
    solver = solver or s.solver
    method = method or s.method
    order = int(order) if order else s.order
    if thresholding in (None, ""):
        thresholding = s.get("thresholding", True)  # runs saved before the key existed
    elif thresholding in ("on", "off"):
        thresholding = thresholding == "on"
    if not isinstance(thresholding, bool):
        raise ConfigError(f"thresholding={thresholding!r} must be True/False or 'on'/'off'")
    if solver not in dfn.SOLVERS:
        raise ConfigError(f"solver={solver!r} is not one of {dfn.SOLVERS}")
    if method not in METHODS:
        raise ConfigError(f"method={method!r} is not one of {METHODS}")
    if steps < 1:
        raise ConfigError(f"steps={steps!r} must be >= 1")
    if order not in (1, 2, 3):
        raise ConfigError(f"order={order!r} is not one of (1, 2, 3)")
    _check_solver(solver, method, order)
    if guidance not in GUIDANCE:
        raise ConfigError(f"guidance={guidance!r} is not one of {GUIDANCE}")
    if negative_label is not None and guidance != "cfg":
        raise ConfigError("a negative class needs classifier-free guidance (guidance='cfg')")

    model = build_model(config)
    schedule = make_schedule(config)
    num_classes = config.model.num_classes
    labels = None
    if guidance == "classifier":
        label_classes = _check_classifier(config, classifier)
    else:
        label_classes = num_classes
    if label is not None and not (num_classes or guidance == "classifier"):
        raise ConfigError(
            "a class was given but the model is unconditional (model.num_classes=0); "
            "use guidance='classifier' with a noise-aware classifier to steer it"
        )
    # A conditional model also takes its null class ``num_classes`` (the unconditional model).
    top = label_classes - 1 + int(num_classes > 0 and guidance != "classifier")
    for name, value in (("label", label), ("negative_label", negative_label)):
        if isinstance(value, (int, float)) and not 0 <= value <= top:  # arrays: the caller's
            raise ConfigError(
                f"{name}={value} is not a class of this model; use 0..{top}"
                + (f" ({top} is the null class)" if top == num_classes else "")
            )
    if label is not None:
        labels = jnp.broadcast_to(jnp.asarray(label, jnp.int32), (num,))
    elif label_classes:
        labels = jnp.arange(num, dtype=jnp.int32) % label_classes
    params = state.ema_params

    def conditional(x, t, y):
        return model.apply({"params": params}, x, t, y)

    if guidance == "cfg":
        if num_classes == 0 or config.diffusion.p_uncond <= 0:
            raise ConfigError(
                "guidance='cfg' needs a class-conditional model trained with label dropout "
                f"(model.num_classes > 0 and diffusion.p_uncond > 0); this one has "
                f"num_classes={num_classes}, p_uncond={config.diffusion.p_uncond}"
            )
        if negative_label is None:
            uncond = jnp.full((num,), num_classes, jnp.int32)
        else:
            uncond = jnp.broadcast_to(jnp.asarray(negative_label, jnp.int32), (num,))
        model_fn = dfn.guidance.classifier_free(
            conditional, labels, uncond, scale, rescale=rescale, interval=interval
        )
    else:
        cond_labels = labels if num_classes else None

        def model_fn(x, t):
            return conditional(x, t, cond_labels)

    mean_shift = None
    if guidance == "classifier":
        clf_config, clf_params = classifier
        logits = classifier_family().logits_fn(clf_config, clf_params)
        if solver == "ddpm":
            mean_shift = dfn.guidance.classifier_mean_shift(logits, labels, scale)
        else:
            model_fn = dfn.guidance.classifier_guidance(
                model_fn, logits, labels, scale, schedule, config.diffusion.prediction
            )

    noise_rng, solver_rng = jax.random.split(rng)
    x_T = jax.random.normal(noise_rng, (num, *config.data.image_shape), jnp.float32)
    x = dfn.sample(
        model_fn,
        x_T,
        schedule,
        solver=solver,
        steps=steps,
        order=order,
        method=method,
        eta=eta,
        prediction=config.diffusion.prediction,
        rng=solver_rng,
        denoise_to_zero=True,
        mean_shift=mean_shift,
        thresholding=thresholding,
        threshold_max=s.get("threshold_max", 1.0),
    )
    return jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)


def classifier_family():
    from jaxgen.families import classifier

    return classifier


def _check_classifier(config, classifier) -> int:
    """The noise-aware classifier's class count, after checking it can guide this model."""
    if classifier is None:
        raise ConfigError("guidance='classifier' needs a noise-aware classifier (classifier=)")
    clf_config, _ = classifier
    if clf_config.family != "classifier" or not clf_config.classifier.noisy:
        raise ConfigError(
            "guidance='classifier' needs a noise-aware classifier (family 'classifier' with "
            f"classifier.noisy=True); got family={clf_config.family!r}"
            + (" with classifier.noisy=False" if clf_config.family == "classifier" else "")
        )
    ours = (config.diffusion.schedule, config.diffusion.num_steps)
    theirs = (clf_config.diffusion.schedule, clf_config.diffusion.num_steps)
    if ours != theirs:
        raise ConfigError(
            f"the classifier was trained on the schedule {theirs} (diffusion.schedule, "
            f"diffusion.num_steps) but this model uses {ours}; they must match"
        )
    if tuple(clf_config.data.image_shape) != tuple(config.data.image_shape):
        raise ConfigError(
            f"the classifier takes images {tuple(clf_config.data.image_shape)}, this model "
            f"makes {tuple(config.data.image_shape)}"
        )
    k = clf_config.model.num_classes
    if config.model.num_classes and config.model.num_classes != k:
        raise ConfigError(
            f"the classifier has {k} classes, this conditional model "
            f"{config.model.num_classes}; they must match"
        )
    return k


def add_defaults(c) -> None:
    """The diffusion family's sections (``model``, ``diffusion``, ``sampler``) on a base config.

    The model defaults are DDPM's CIFAR-10 UNet (35.7M parameters on 32x32x3).
    """
    import ml_collections

    c.family = "diffusion"
    c.model = ml_collections.ConfigDict()
    c.model.channels = 128
    c.model.channel_mult = (1, 2, 2, 2)  # one level per entry; a stride-2 conv between levels
    c.model.num_res_blocks = 2
    c.model.attention_resolutions = (16,)  # feature-map sides that get self-attention
    c.model.num_heads = 1
    c.model.dropout = 0.1
    c.model.num_classes = 0  # > 0: class-conditional, with a null class for guidance
    c.diffusion = ml_collections.ConfigDict()
    c.diffusion.schedule = "linear"  # linear | cosine | linear_vp
    c.diffusion.num_steps = 1000
    c.diffusion.prediction = "eps"  # eps | x0 | v
    c.diffusion.ema_decay = 0.9999
    c.diffusion.mixed_precision = False  # True: bfloat16 compute, float32 parameters
    c.diffusion.p_uncond = 0.1  # label dropout; used only when model.num_classes > 0
    c.sampler = ml_collections.ConfigDict()
    c.sampler.solver = "dpm_solver++"  # ddpm | ddim | dpm_solver | dpm_solver++
    c.sampler.steps = 20
    c.sampler.order = 2
    c.sampler.method = "multistep"  # multistep | singlestep
    c.sampler.eta = 0.0  # ddim only
    # Clip each x0 prediction to the data range [-1, 1] (DDPM's and guided-diffusion's default
    # for images); threshold_max > 1 makes it Imagen's dynamic thresholding instead.
    c.sampler.thresholding = True
    c.sampler.threshold_max = 1.0


def small_unet_28x28(c, variants) -> None:
    """The small DDPM UNet for 28x28x1 data (MNIST, Fashion-MNIST) that those configs share:
    widths 64/128/128 at 28/14/7 pixels, two residual blocks a level, attention at 7x7.
    ``variants`` may hold ``cond``, ``demo`` and ``cpu``; the caller sets ``data`` and applies
    ``tiny``."""
    c.data.image_shape = (28, 28, 1)
    c.model.channels = 64
    c.model.channel_mult = (1, 2, 2)  # 28 -> 14 -> 7
    c.model.num_res_blocks = 2
    c.model.attention_resolutions = (7,)
    c.model.dropout = 0.1
    c.train.batch_size = 128
    c.train.num_steps = 50_000
    c.train.eval_every = 5_000
    c.train.sample_every = 5_000
    c.train.checkpoint_every = 2_000
    c.optimizer.learning_rate = 2e-4
    c.optimizer.warmup_steps = 1_000
    c.optimizer.grad_clip = 1.0
    c.diffusion.ema_decay = 0.9995
    if "cond" in variants:
        c.model.num_classes = 10
        c.diffusion.p_uncond = 0.1
    if "demo" in variants:
        # About 0.4 s a step on a 2-core CPU (3 s at the default width and batch 128).
        c.model.channels = 16
        c.model.num_res_blocks = 1
        c.model.dropout = 0.0
        c.train.batch_size = 32
        c.train.num_steps = 1_200  # make demo: training and CFG sampling inside 10 minutes
        c.train.eval_every = 600
        c.train.sample_every = 600
        c.train.checkpoint_every = 600
        c.optimizer.learning_rate = 2e-3
        c.optimizer.warmup_steps = 100
        c.diffusion.ema_decay = 0.995
        c.eval.batch_size = 200
        c.eval.num_examples = 400
        c.eval.final_num_examples = 1_000
    if "cpu" in variants:
        # The README's 28x28 models: narrow at 28x28 where convolutions cost most, wider below
        # (16/32/64 channels), one residual block a level; about 0.4 s a step on a 2-core CPU,
        # so 9,000 steps take about an hour.
        c.model.channels = 16
        c.model.channel_mult = (1, 2, 4)
        c.model.num_res_blocks = 1
        c.model.dropout = 0.0
        c.train.batch_size = 32
        c.train.num_steps = 9_000
        c.train.eval_every = 3_000
        c.train.sample_every = 3_000
        c.train.checkpoint_every = 1_000
        c.optimizer.learning_rate = 1e-3
        c.optimizer.warmup_steps = 200
        c.diffusion.ema_decay = 0.999
        c.eval.batch_size = 200
        c.eval.num_examples = 400
        c.eval.final_num_examples = 1_000


def tiny_model(c) -> None:
    """The ``tiny`` variant's UNet and diffusion settings, shared by every diffusion config."""
    c.model.channels = 8
    c.model.channel_mult = (1,)  # no down-sampling: compiles in half the time
    c.model.num_res_blocks = 1
    c.model.attention_resolutions = ()  # the middle block keeps its attention
    c.model.dropout = 0.0
    c.optimizer.warmup_steps = 0
    c.diffusion.ema_decay = 0.9
    c.sampler.steps = 4
