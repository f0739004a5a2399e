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

import jax
import jax.numpy as jnp

from jaxgen import diffusion as dfn
from jaxgen.errors import ConfigError
from jaxgen.families import Capabilities, Family, SampleOption, Samples
from jaxgen.families.classifier import check_guide
from jaxgen.families.classifier import logits_fn as classifier_logits_fn
from jaxgen.families.common import (
    check_choice,
    check_int,
    check_optimizer,
    example_keys,
    make_optimizer,
    to_model_range,
)
from jaxgen.families.state import State, TrainState, gradient_step
from jaxgen.nn.unet import UNet

SCHEDULES = ("linear", "cosine", "linear_vp")
GUIDANCE = ("none", "cfg", "classifier")

# ``sample.py`` flags while a diffusion run is sampled (their values reach ``prepare_sample``).
SAMPLE_OPTIONS = (
    SampleOption(
        "solver",
        "",
        "ddpm, ddim, dpm_solver or dpm_solver++ ('': the config's sampler.solver).",
        aliases=("sampler",),
    ),
    SampleOption(
        "steps", 0, "Solver steps, = model calls (0: the config's sampler.steps).", minimum=0
    ),
    SampleOption(
        "order", 0, "Solver order 1-3 (0: the config's sampler.order).", minimum=0, maximum=3
    ),
    SampleOption("method", "", "multistep or singlestep ('': the config's sampler.method)."),
    SampleOption(
        "eta", None, "DDIM eta >= 0 (default: the config's sampler.eta).", type="float", minimum=0.0
    ),
    SampleOption("thresholding", "", "on or off: clip x0 predictions ('': sampler.thresholding)."),
    SampleOption(
        "guidance", "none", "Classifier-free guidance (cfg) or classifier guidance (classifier)."
    ),
    SampleOption(
        "scale",
        None,
        "Guidance strength: CFG's w (1: the plain conditional model) or classifier s.",
        type="float",
    ),
    SampleOption(
        "negative-class",
        None,
        "CFG: steer away from this class (replaces the null class).",
        type="int",
    ),
    SampleOption(
        "rescale", 0.0, "CFG: guidance rescale phi in [0, 1] (0: off).", minimum=0.0, maximum=1.0
    ),
    SampleOption(
        "interval",
        None,
        "CFG: t_lo,t_hi; guidance applies only for t in [t_lo, t_hi].",
        type="list",
    ),
    SampleOption(
        "classifier-workdir",
        None,
        "Classifier guidance: a noise-aware classifier's workdir.",
        type="workdir",
    ),
)


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


def loss_fn(config, params, x0, t, noise, labels, dropout_rng):
    """The simple loss (mean over examples and pixels) and per-example losses ``[B]``.

    ``dropout_rng = None`` runs the model deterministically (evaluation).
    """
    schedule = make_schedule(config)
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    x_t = dfn.add_noise(schedule, x0, t, noise)
    rngs = {} if dropout_rng is None else {"dropout": dropout_rng}
    out = build_model(config).apply(
        {"params": params}, x_t, t, labels, deterministic=dropout_rng is None, rngs=rngs
    )
    return dfn.denoising_loss(out, config.diffusion.prediction, x0, noise, alpha, sigma)


def _train_labels(config, batch, rng):
    if config.model.num_classes == 0:
        return None
    labels = jnp.asarray(batch["label"], jnp.int32)
    return dfn.guidance.drop_labels(
        labels, rng, config.diffusion.p_uncond, config.model.num_classes
    )


# ------------------------------------------------------------------------------------ contract
def validate_config(config) -> None:
    m, d, s = config.model, config.diffusion, config.sampler
    check_int(m.channels, "model.channels", 1)
    mult = tuple(m.channel_mult)
    if not mult or any(not isinstance(v, int) or v < 1 for v in mult):
        raise ConfigError(
            f"model.channel_mult={mult!r} must be a non-empty sequence of positive ints"
        )
    check_int(m.num_res_blocks, "model.num_res_blocks", 1)
    check_int(m.num_heads, "model.num_heads", 1)
    check_int(m.num_classes, "model.num_classes", 0)
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
    check_int(d.num_steps, "diffusion.num_steps", 2)
    if not 0 <= d.ema_decay <= 1:
        raise ConfigError(f"diffusion.ema_decay={d.ema_decay!r} must be in [0, 1]")
    if not isinstance(d.mixed_precision, bool):
        raise ConfigError(f"diffusion.mixed_precision={d.mixed_precision!r} must be True or False")
    if not 0 <= d.p_uncond <= 1:
        raise ConfigError(f"diffusion.p_uncond={d.p_uncond!r} must be in [0, 1]")
    defaults = config.get("sample_defaults", {})
    if defaults.get("guidance", "none") not in ("none", "cfg"):
        raise ConfigError(
            f"sample_defaults.guidance={defaults.guidance!r} must be 'none' or 'cfg' (classifier "
            "guidance needs another run: give it with --guidance=classifier)"
        )
    if defaults.get("guidance") == "cfg":
        if m.num_classes == 0 or d.p_uncond == 0:
            raise ConfigError(
                "sample_defaults.guidance='cfg' needs a class-conditional model trained with "
                f"label dropout (model.num_classes={m.num_classes}, "
                f"diffusion.p_uncond={d.p_uncond})"
            )
        if defaults.get("scale") is None:
            raise ConfigError("sample_defaults.guidance='cfg' needs sample_defaults.scale (e.g. 2)")

    if isinstance(s.order, bool):
        raise ConfigError(f"sampler.order={s.order!r} is not one of (1, 2, 3)")
    _check_sampler(s.solver, s.method, s.order, s.steps, s.eta, prefix="sampler.")
    # .get: runs saved before these keys existed take today's defaults.
    if not isinstance(s.get("thresholding", True), bool):
        raise ConfigError(f"sampler.thresholding={s.thresholding!r} must be True or False")
    if not s.get("threshold_max", 1.0) >= 1:
        raise ConfigError(f"sampler.threshold_max={s.threshold_max!r} must be >= 1")
    check_optimizer(config.optimizer)


def _check_sampler(solver, method, order, steps, eta, prefix="") -> None:
    """The library's one validator for solver options, its ValueError as a ConfigError."""
    try:
        dfn.check_sampler_options(
            solver=solver, method=method, order=order, steps=steps, eta=eta, prefix=prefix
        )
    except ValueError as e:
        raise ConfigError(str(e)) from e


def _init_key(rng: jax.Array) -> jax.Array:
    """An ``rbg`` key for parameter initialisation, derived from ``rng``.

    A UNet has ~100 random initialisers; with threefry keys XLA's CPU backend compiles each
    draw slowly, with ``rbg`` (XLA's RngBitGenerator) several times faster
    (docs/notes/cpu.md#threefry-compile-time).
    The initial weights are a pure function of ``rng`` on one backend, but may differ between
    CPU, GPU and TPU (RngBitGenerator's algorithm is the backend's choice).
    """
    data = jax.random.bits(jax.random.fold_in(rng, 0), (4,), jnp.uint32)
    return jax.random.wrap_key_data(data, impl="rbg")


def capabilities(config) -> Capabilities:
    return Capabilities(
        generates=True,
        num_classes=config.model.num_classes,
        label_classes=config.model.num_classes,
        unconditional_hint="steer it with --guidance=classifier and a noise-aware classifier",
    )


def init(config, rng: jax.Array, example_batch) -> State:
    model = build_model(config)
    x = to_model_range(example_batch["image"])
    t = jnp.ones((x.shape[0],), jnp.float32)
    y = jnp.zeros((x.shape[0],), jnp.int32) if config.model.num_classes > 0 else None
    params = model.init(_init_key(rng), x, t, y)["params"]
    player = TrainState.create(params, make_optimizer(config.optimizer), ema=True)
    return State.create(rng, {"model": player})


def train_step(config, state: State, batch) -> tuple[State, dict]:
    t_rng, noise_rng, label_rng, dropout_rng = jax.random.split(state.step_key(), 4)
    x0 = to_model_range(batch["image"])
    t = dfn.sample_training_times(make_schedule(config), t_rng, x0.shape[0])
    noise = jax.random.normal(noise_rng, x0.shape, jnp.float32)
    labels = _train_labels(config, batch, label_rng)

    def objective(params):
        loss, _ = loss_fn(config, params, x0, t, noise, labels, dropout_rng)
        return loss, loss

    model, loss, grad_norm = gradient_step(
        state.model, make_optimizer(config.optimizer), objective, config.diffusion.ema_decay
    )
    return state.advance(model=model), {"loss": loss, "grad_norm": grad_norm}


def eval_step(config, state: State, batch) -> dict:
    """The denoising loss on held-out images, each with a time and noise fixed by its index.

    ``loss`` uses the EMA weights (what sampling uses), ``loss_online`` the raw parameters;
    labels are the true ones (no label dropout) for conditional models.
    """
    keys = example_keys(state.rng, batch["index"])
    x0 = to_model_range(batch["image"])
    schedule = make_schedule(config)
    t = jax.vmap(lambda k: dfn.sample_training_times(schedule, jax.random.fold_in(k, 0), 1)[0])(
        keys
    )
    noise = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 1), x0.shape[1:]))(keys)
    labels = None
    if config.model.num_classes > 0:
        labels = jnp.asarray(batch["label"], jnp.int32)
    loss, _ = loss_fn(config, state.model.ema_params, x0, t, noise, labels, None)
    online, _ = loss_fn(config, state.model.params, x0, t, noise, labels, None)
    return {"loss": loss, "loss_online": online}


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
    """``Samples``: ``num`` images ``[num, H, W, C]`` in ``[0, 1]`` from the EMA weights, and
    their labels (``None`` for an unconditional, unguided model).

    Options left at ``None`` (or ``0`` for ``steps``/``order``, ``''`` for strings) take the
    ``sampler`` section's value. ``thresholding`` (``sampler.thresholding``, on by default)
    clips every x0 prediction to [-1, 1]. ``label``: an int (every sample), an int
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
    eta = s.eta if eta is None else float(eta)  # a negative one is refused below
    solver = solver or s.solver
    method = method or s.method
    order = int(order) if order else s.order
    if thresholding in (None, ""):
        thresholding = s.get("thresholding", True)  # runs saved before the key existed
    elif thresholding in ("on", "off"):
        thresholding = thresholding == "on"
    if not isinstance(thresholding, bool):
        raise ConfigError(f"thresholding={thresholding!r} must be True/False or 'on'/'off'")
    _check_sampler(solver, method, order, steps, eta)
    if guidance not in GUIDANCE:
        raise ConfigError(f"guidance={guidance!r} is not one of {GUIDANCE}")
    if negative_label is not None and guidance != "cfg":
        raise ConfigError("a negative class needs classifier-free guidance (guidance='cfg')")

    model = build_model(config)
    schedule = make_schedule(config)
    num_classes = config.model.num_classes
    labels = None
    if guidance == "classifier":
        if classifier is None:
            raise ConfigError("guidance='classifier' needs a noise-aware classifier (classifier=)")
        label_classes = _check_classifier(config, classifier[0])
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
    params = state.model.ema_params  # sampling uses the EMA weights

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
        logits = classifier_logits_fn(clf_config, clf_params)
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
    return Samples(jnp.clip((x + 1.0) / 2.0, 0.0, 1.0), labels)


def _check_classifier(config, clf_config) -> int:
    """The noise-aware classifier's class count, after checking it can guide this model."""
    schedule = (config.diffusion.schedule, config.diffusion.num_steps)
    k = check_guide(clf_config, config.data.image_shape, schedule)
    if config.model.num_classes and config.model.num_classes != k:
        raise ConfigError(
            f"the classifier has {k} classes, this conditional model "
            f"{config.model.num_classes}; they must match"
        )
    return k


def prepare_sample(config, options: dict) -> dict:
    """``sample``'s keyword arguments from the flags of ``SAMPLE_OPTIONS`` (their parsed
    values; ``classifier-workdir`` arrives restored as ``(config, state)``)."""
    guidance, scale = options["guidance"], options["scale"]
    if guidance not in GUIDANCE:
        raise ConfigError(f"--guidance={guidance!r} is not one of {GUIDANCE}")
    if guidance != "none" and scale is None:
        raise ConfigError(f"--guidance={guidance} needs --scale (e.g. --scale=3)")
    classifier = options["classifier-workdir"]
    if guidance != "classifier" and classifier is not None:
        raise ConfigError("--classifier-workdir is only used with --guidance=classifier")
    if guidance != "cfg":
        given = {"negative-class": options["negative-class"] is not None}
        given["interval"] = options["interval"] is not None
        given["rescale"] = options["rescale"] != 0.0
        for name, present in given.items():
            if present:
                raise ConfigError(f"--{name} is an option of --guidance=cfg")
    kwargs = {
        key: options[key] for key in ("solver", "steps", "order", "method", "eta", "thresholding")
    }
    kwargs["guidance"] = guidance
    if guidance == "classifier":
        if classifier is None:
            raise ConfigError("--guidance=classifier needs --classifier-workdir=<a classifier run>")
        clf_config, clf_state = classifier
        _check_classifier(config, clf_config)
        kwargs.update(classifier=(clf_config, clf_state.model.params))
    if guidance != "none":
        kwargs["scale"] = scale
    if guidance == "cfg":
        k = config.model.num_classes
        negative = options["negative-class"]
        if negative is not None and not 0 <= negative < k:
            raise ConfigError(
                f"--negative-class={negative} is not a class of this model; use 0..{k - 1}"
            )
        interval = options["interval"]
        if interval is not None:
            try:
                interval = tuple(float(v) for v in interval)
            except ValueError:
                interval = ()
            if len(interval) != 2 or not 0 <= interval[0] <= interval[1] <= 1:
                raise ConfigError(
                    f"--interval={','.join(options['interval'])} must be t_lo,t_hi with "
                    "0 <= t_lo <= t_hi <= 1"
                )
        kwargs.update(negative_label=negative, rescale=options["rescale"], interval=interval)
    return kwargs


def sample_classes(config, kwargs: dict) -> int:
    """Classes a sample may be asked for: the guiding classifier's, else the model's."""
    if kwargs.get("guidance") == "classifier":
        return int(kwargs["classifier"][0].model.num_classes)
    return config.model.num_classes


FAMILY = Family(
    name="diffusion",
    validate_config=validate_config,
    capabilities=capabilities,
    init=init,
    train_step=train_step,
    eval_step=eval_step,
    sample=sample,
    sample_options=SAMPLE_OPTIONS,
    prepare_sample=prepare_sample,
    sample_classes=sample_classes,
)
