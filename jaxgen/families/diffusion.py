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

**Latent diffusion** (Rombach et al. 2022). With ``first_stage.workdir`` naming a trained first
stage that gives continuous latents (``configs/autoencoder_kl.py``, or a VQ model's
pre-quantisation latents), the model diffuses ``x0 = scale * encode_latents(images)`` of the
frozen first stage instead of pixels, and its samples are ``decode_latents(x / scale)``. The
scale is ``diffusion.latent_scale``, or with 0 (latent diffusion's ``scale_by_std``)
``1 / std`` of the first training batch's latents, measured in the first step and kept in
``State.extra`` (so checkpoints hold it and a resumed run does not measure again). x0 clipping
is for pixels and is off in latent space (``sampler.thresholding = False``).

**Text.** With ``text.width > 0`` the condition is a caption (``data.captions``; the batch's
``text`` tokens): a small transformer (``jaxgen.nn.text.TextEncoder``) encodes it and the UNet
attends to it by cross-attention at the feature-map sides ``model.context_resolutions``; the
two train jointly. In training a caption becomes the empty prompt (``<bos>`` alone) with
probability ``diffusion.p_uncond``; at sampling, classifier-free guidance is
``eps(neg) + w (eps(prompt) - eps(neg))``, ``neg`` the negative prompt or the empty one, in one
batched call.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen import diffusion as dfn
from jaxgen.data import captions
from jaxgen.errors import ConfigError
from jaxgen.families import Capabilities, Family, SampleOption, Samples, tokenizers
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
from jaxgen.families.state import State, TrainState, ema_decay_at, gradient_step
from jaxgen.nn.text import TextEncoder
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
def in_latent_space(config) -> bool:
    """Whether the model diffuses a first stage's latents (``first_stage.workdir`` is set)."""
    return bool(config.get("first_stage", {}).get("workdir", ""))


def text_conditional(config) -> bool:
    """Whether the condition is a caption (``text.width > 0``)."""
    return config.get("text", {}).get("width", 0) > 0


def space_shape(config) -> tuple[int, int, int]:
    """The shape of what is diffused: the first stage's latent, else the image."""
    if in_latent_space(config):
        return tokenizers.tokenizer_of(config).latent_shape
    return tuple(config.data.image_shape)


class TextUNet(nn.Module):
    """The UNet reading an encoded caption: ``(x, t, tokens) -> prediction``."""

    unet: UNet
    encoder: TextEncoder

    def __call__(self, x, t, tokens, deterministic: bool = True):
        context, mask = self.encoder(tokens)
        return self.unet(x, t, None, deterministic, context=context, context_mask=mask)


def build_model(config) -> UNet | TextUNet:
    m = config.model
    dtype = jnp.bfloat16 if config.diffusion.mixed_precision else jnp.float32
    text = text_conditional(config)
    unet = UNet(
        channels=m.channels,
        channel_mult=tuple(m.channel_mult),
        num_res_blocks=m.num_res_blocks,
        attention_resolutions=tuple(m.attention_resolutions),
        dropout=m.dropout,
        num_classes=m.num_classes,
        num_heads=m.num_heads,
        out_channels=space_shape(config)[-1],
        dtype=dtype,
        context_resolutions=tuple(m.get("context_resolutions", ())) if text else (),
        pooled_context=bool(m.get("pooled_context", False)) and text,
    )
    if not text:
        return unet
    t = config.text
    encoder = TextEncoder(
        vocab_size=t.vocab_size,
        max_len=config.data.caption_len,
        width=t.width,
        depth=t.depth,
        heads=t.heads,
        dtype=dtype,
    )
    return TextUNet(unet, encoder)


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


def _train_condition(config, batch, rng):
    """The step's conditions after dropout: caption tokens, class labels, or None."""
    if text_conditional(config):
        empty = captions.empty_prompt(config.data.caption_len)
        return dfn.guidance.drop_prompts(batch["text"], rng, config.diffusion.p_uncond, empty)
    if config.model.num_classes == 0:
        return None
    labels = jnp.asarray(batch["label"], jnp.int32)
    return dfn.guidance.drop_labels(
        labels, rng, config.diffusion.p_uncond, config.model.num_classes
    )


def _eval_condition(config, batch):
    """The true conditions of held-out examples (no dropout)."""
    if text_conditional(config):
        return batch["text"]
    if config.model.num_classes > 0:
        return jnp.asarray(batch["label"], jnp.int32)
    return None


def latent_scale(state: State, latents: jax.Array) -> jax.Array:
    """The state's latent scale; before the first step has measured it (0 in the state),
    ``1 / std`` of ``latents`` (``scale_by_std``)."""
    kept = state.extra["latent_scale"]
    measured = 1.0 / jnp.maximum(jnp.std(latents), 1e-8)
    return jnp.where(kept > 0, kept, measured)


def diffused_data(config, state: State, images: jax.Array):
    """``(x0, extra)``: what the model learns, from uint8 ``images``, and the state's ``extra``
    after it: pixels on ``[-1, 1]``, or the frozen first stage's scaled latents (the scale
    measured once, module docstring)."""
    if not in_latent_space(config):
        return to_model_range(images), state.extra
    z = tokenizers.encode_latents(config, state.frozen, images)
    scale = latent_scale(state, z)
    return scale * z, {**state.extra, "latent_scale": scale}


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
    if in_latent_space(config) and "family" not in config.first_stage.config:
        shape, what = None, ""  # checked once the engine has resolved the first stage
    elif in_latent_space(config):
        shape = space_shape(config)
        what = f"the first stage's latent shape {shape[:2]} (first_stage.workdir)"
    else:
        shape = tuple(config.data.image_shape)
        what = f"data.image_shape={shape[:2]}"
    if shape is not None:
        h, w, _ = shape
        factor = 2 ** (len(mult) - 1)
        if h % factor or w % factor:
            raise ConfigError(
                f"model.channel_mult={mult} halves its input {len(mult) - 1} times, so "
                f"{what} must be divisible by {factor}; use a shorter channel_mult"
            )
        sizes = tuple(h // 2**i for i in range(len(mult)))
        keys = ["attention_resolutions"] + ["context_resolutions"] * text_conditional(config)
        for key in keys:
            for r in tuple(m[key]):
                if r not in sizes:
                    raise ConfigError(
                        f"model.{key}={tuple(m[key])!r}: {r!r} is not a feature-map size of "
                        f"this UNet; the sizes are {sizes}"
                    )
    _check_condition(config)

    check_choice(config, "diffusion.schedule", SCHEDULES)
    check_choice(config, "diffusion.prediction", dfn.PREDICTIONS)
    check_int(d.num_steps, "diffusion.num_steps", 2)
    if not 0 <= d.ema_decay <= 1:
        raise ConfigError(f"diffusion.ema_decay={d.ema_decay!r} must be in [0, 1]")
    if not isinstance(d.get("ema_warmup", False), bool):
        raise ConfigError(f"diffusion.ema_warmup={d.ema_warmup!r} must be True or False")
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
        if not (m.num_classes or text_conditional(config)) or d.p_uncond == 0:
            raise ConfigError(
                "sample_defaults.guidance='cfg' needs a conditional model (classes or text) "
                f"trained with condition dropout (model.num_classes={m.num_classes}, "
                f"text.width={config.get('text', {}).get('width', 0)}, "
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
    if in_latent_space(config):
        if s.get("thresholding", True):
            raise ConfigError(
                "sampler.thresholding=True clips x0 to the pixel range [-1, 1], but this model "
                "diffuses a first stage's latents (first_stage.workdir); set it to False"
            )
        if not d.get("latent_scale", 0.0) >= 0:
            raise ConfigError(
                f"diffusion.latent_scale={d.latent_scale!r} must be >= 0 (0: 1 / std of the "
                "first batch's latents)"
            )
    check_optimizer(config.optimizer)


def _check_condition(config) -> None:
    """A text model's settings: captioned data, a vocabulary that covers it, no classes."""
    if not text_conditional(config):
        return
    t, m = config.text, config.model
    if m.num_classes:
        raise ConfigError(
            f"text.width={t.width} and model.num_classes={m.num_classes}: a model is conditioned "
            "on text or on classes; set one of them to 0"
        )
    name = config.data.get("captions", "")
    if not name:
        raise ConfigError(
            f"text.width={t.width} conditions on captions, but data.captions is empty; name a "
            f"caption set ({', '.join(sorted(captions.CAPTION_SETS))})"
        )
    for key in ("width", "depth", "heads", "vocab_size"):
        check_int(t[key], f"text.{key}", 1)
    if t.width % t.heads:
        raise ConfigError(f"text.heads={t.heads} must divide text.width={t.width}")
    need = captions.caption_set(name).vocabulary().size
    if t.vocab_size < need:
        raise ConfigError(
            f"text.vocab_size={t.vocab_size} is smaller than the vocabulary of "
            f"data.captions={name!r} ({need} tokens with <pad> and <bos>)"
        )
    if not tuple(m.get("context_resolutions", ())):
        raise ConfigError(
            "model.context_resolutions is empty: a text model's UNet must attend to the "
            "caption at one feature-map size at least (e.g. its lowest)"
        )


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
    text = text_conditional(config)
    return Capabilities(
        generates=True,
        num_classes=None if text else config.model.num_classes,
        label_classes=config.model.num_classes,
        first_stage=in_latent_space(config),
        first_stage_gives="latents",
        text=text,
        unconditional_hint="steer it with --guidance=classifier and a noise-aware classifier",
    )


def init(config, rng: jax.Array, example_batch) -> State:
    model = build_model(config)
    n = example_batch["image"].shape[0]
    x = jnp.zeros((n, *space_shape(config)), jnp.float32)
    t = jnp.ones((n,), jnp.float32)
    if text_conditional(config):
        y = jnp.zeros((n, config.data.caption_len), jnp.int32)
    else:
        y = jnp.zeros((n,), jnp.int32) if config.model.num_classes > 0 else None
    params = model.init(_init_key(rng), x, t, y)["params"]
    player = TrainState.create(params, make_optimizer(config.optimizer), ema=True)
    extra = frozen = None
    if in_latent_space(config):
        frozen = tokenizers.frozen_placeholder(config, rng, example_batch)
        fixed = config.diffusion.get("latent_scale", 0.0)  # 0: measured in the first step
        extra = {"latent_scale": jnp.asarray(fixed, jnp.float32)}
    return State.create(rng, {"model": player}, extra=extra, frozen=frozen)


def train_step(config, state: State, batch) -> tuple[State, dict]:
    t_rng, noise_rng, label_rng, dropout_rng = jax.random.split(state.step_key(), 4)
    x0, extra = diffused_data(config, state, batch["image"])
    t = dfn.sample_training_times(make_schedule(config), t_rng, x0.shape[0])
    noise = jax.random.normal(noise_rng, x0.shape, jnp.float32)
    labels = _train_condition(config, batch, label_rng)

    def objective(params):
        loss, _ = loss_fn(config, params, x0, t, noise, labels, dropout_rng)
        return loss, loss

    model, loss, grad_norm = gradient_step(
        state.model,
        make_optimizer(config.optimizer),
        objective,
        ema_decay_at(config.diffusion.ema_decay, state.step, config.diffusion.get("ema_warmup")),
    )
    metrics = {"loss": loss, "grad_norm": grad_norm}
    if in_latent_space(config):
        metrics["latent_scale"] = extra["latent_scale"]
    return state.advance(model=model).replace(extra=extra), metrics


def eval_step(config, state: State, batch) -> dict:
    """The denoising loss on held-out images, each with a time and noise fixed by its index.

    ``loss`` uses the EMA weights (what sampling uses), ``loss_online`` the raw parameters;
    conditions are the true ones (no dropout) for conditional models. A latent model's loss is
    on its scaled latents.
    """
    keys = example_keys(state.rng, batch["index"])
    x0, _ = diffused_data(config, state, batch["image"])
    schedule = make_schedule(config)
    t = jax.vmap(lambda k: dfn.sample_training_times(schedule, jax.random.fold_in(k, 0), 1)[0])(
        keys
    )
    noise = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 1), x0.shape[1:]))(keys)
    labels = _eval_condition(config, batch)
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
    text=None,
    negative_text=None,
):
    """``Samples``: ``num`` images ``[num, H, W, C]`` in ``[0, 1]`` from the EMA weights, and
    their labels (``None`` for an unconditional, unguided model, or a text model).

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

    A text model (``text.width > 0``) takes prompts as tokens (``jaxgen.data.captions``):
    ``text`` int32 ``[num, L]`` (``None``: the empty prompt, the unconditional model) and, with
    ``"cfg"``, ``negative_text`` ``[num, L]`` in place of the empty prompt. A latent model's
    samples are decoded by its first stage.
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
    latent = in_latent_space(config)
    if latent and thresholding:
        raise ConfigError(
            "thresholding clips x0 to the pixel range, but this model diffuses latents; "
            "leave it off"
        )
    _check_sampler(solver, method, order, steps, eta)
    if guidance not in GUIDANCE:
        raise ConfigError(f"guidance={guidance!r} is not one of {GUIDANCE}")
    if negative_label is not None and guidance != "cfg":
        raise ConfigError("a negative class needs classifier-free guidance (guidance='cfg')")
    if negative_text is not None and guidance != "cfg":
        raise ConfigError("a negative prompt needs classifier-free guidance (guidance='cfg')")
    if latent and guidance == "classifier":
        raise ConfigError(
            "classifier guidance needs a noise-aware classifier of this model's latents, which "
            "jaxgen does not train; use guidance='cfg' with a conditional model"
        )
    solver_options = dict(solver=solver, steps=steps, order=order, method=method, eta=eta)
    if text_conditional(config):
        if label is not None or negative_label is not None:
            raise ConfigError(
                "a class was given, but this model is conditioned on text (text.width > 0); "
                "give a prompt instead"
            )
        guide = dict(scale=scale, rescale=rescale, interval=interval)
        model_fn = _text_model_fn(config, state, num, text, negative_text, guidance, **guide)
        return Samples(_solve(config, state, rng, num, model_fn, solver_options), None)
    if text is not None or negative_text is not None:
        raise ConfigError(
            "a prompt was given, but this model is not conditioned on text (text.width=0); "
            + ("give a class instead" if config.model.num_classes else "it is unconditional")
        )

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

    images = _solve(config, state, rng, num, model_fn, solver_options, mean_shift, thresholding)
    return Samples(images, labels)


def _solve(config, state, rng, num, model_fn, solver_options, mean_shift=None, thresholding=False):
    """Run the solver from noise in the model's space and return images in ``[0, 1]``: the
    decoded latents of a latent model (divided by the scale first), else the pixels."""
    noise_rng, solver_rng = jax.random.split(rng)
    x_T = jax.random.normal(noise_rng, (num, *space_shape(config)), jnp.float32)
    x = dfn.sample(
        model_fn,
        x_T,
        make_schedule(config),
        **solver_options,
        prediction=config.diffusion.prediction,
        rng=solver_rng,
        denoise_to_zero=True,
        mean_shift=mean_shift,
        thresholding=thresholding,
        threshold_max=config.sampler.get("threshold_max", 1.0),
    )
    if in_latent_space(config):
        return tokenizers.decode_latents(config, state.frozen, x / state.extra["latent_scale"])
    return jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)


def _text_model_fn(config, state, num, text, negative_text, guidance, scale, rescale, interval):
    """A text model's ``model_fn(x, t)``: the prompt's prediction, or with ``"cfg"`` the
    guided one against the negative prompt (the empty one when none is given)."""
    length = config.data.caption_len
    empty = jnp.broadcast_to(jnp.asarray(captions.empty_prompt(length)), (num, length))

    def tokens(value, name):
        if value is None:
            return empty
        value = jnp.asarray(value, jnp.int32)
        if value.shape != (num, length):
            raise ConfigError(f"{name}: tokens of shape {value.shape}, expected {(num, length)}")
        return value

    prompt = tokens(text, "text")
    params = state.model.ema_params
    model = build_model(config)

    def conditional(x, t, y):
        return model.apply({"params": params}, x, t, y)

    if guidance == "cfg":
        if config.diffusion.p_uncond <= 0:
            raise ConfigError(
                "guidance='cfg' needs a model trained with prompt dropout (diffusion.p_uncond "
                f"> 0); this one has p_uncond={config.diffusion.p_uncond}"
            )
        negative = tokens(negative_text, "negative_text")
        model_fn = dfn.guidance.classifier_free(
            conditional, prompt, negative, scale, rescale=rescale, interval=interval
        )
    else:

        def model_fn(x, t):
            return conditional(x, t, prompt)

    return model_fn


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
