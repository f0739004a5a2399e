"""A masked bidirectional transformer prior over a tokenizer's codes (MaskGIT, Chang et al. 2022).

The codes of a trained tokenizer (``first_stage.workdir``) are a sequence of ``N = h w`` tokens;
the network (``jaxgen.nn.transformer.CodeTransformer``, not causal) sees the class at position 0
and the codes, some replaced by a ``[MASK]`` token (id ``K``, one past the codes), and predicts
every position at once.

Training (``jaxgen.tokens.random_mask``): per example, a masking rate ``gamma(r) = cos(pi/2 r)``
(``jaxgen.tokens.mask_rate``, the same gamma as decoding's) with ``r ~ U(0, 1)``, raised
to at least ``maskgit.min_mask_rate``; ``ceil(gamma N)`` positions chosen uniformly are masked
(at least one); the loss is the cross-entropy on the masked positions only, with label
smoothing ``maskgit.label_smoothing`` (0.1). The class is dropped to the null class for a share
``model.p_uncond`` of examples (classifier-free guidance). ``masked_nll_bits`` is the
unsmoothed cross-entropy on the masked codes in bits: a training signal, not a likelihood of
the codes (MaskGIT defines none).

Decoding (``jaxgen.tokens.maskgit_decode``): ``--steps`` (``maskgit.steps``, 12) parallel steps
in one ``lax.scan``; after step ``t`` ``floor(N cos(pi/2 (t+1)/T))`` codes stay masked (at least
one until the last step, at most one fewer than before); confidence is the drawn code's
log-probability plus Gumbel noise at ``choice_temperature (1 - (t+1)/T)`` (4.5, the reference's
annealing: no noise at the last step); CFG with ``--scale``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from jaxgen import tokens
from jaxgen.errors import ConfigError
from jaxgen.families import Family, SampleOption, tokenizers
from jaxgen.families import code_priors as cp
from jaxgen.families.common import example_keys, make_optimizer
from jaxgen.families.state import State, TrainState
from jaxgen.nn.transformer import CodeTransformer

SAMPLE_OPTIONS = (
    SampleOption("steps", 0, "Decoding steps T (0: the config's maskgit.steps).", minimum=0),
    SampleOption(
        "temperature", 1.0, "Softmax temperature of the drawn codes (> 0).", minimum=0.0, above=True
    ),
    SampleOption(
        "choice-temperature",
        None,
        "Gumbel noise on the confidences at t = 0, >= 0 (default: the config's).",
        type="float",
        minimum=0.0,
    ),
    SampleOption(
        "scale", None, "Classifier-free guidance w (1: the conditional model).", type="float"
    ),
)


def build_model(config) -> CodeTransformer:
    return cp.build_transformer(config, causal=False, extra_tokens=1)


def mask_id(config) -> int:
    return cp.num_codes(config)


def validate_config(config) -> None:
    cp.check_model(config)
    g = config.maskgit
    if not 0.0 <= g.min_mask_rate <= 1.0:
        raise ConfigError(f"maskgit.min_mask_rate={g.min_mask_rate!r} must be in [0, 1]")
    if not 0.0 <= g.label_smoothing < 1.0:
        raise ConfigError(f"maskgit.label_smoothing={g.label_smoothing!r} must be in [0, 1)")
    if not isinstance(g.steps, int) or g.steps < 1:
        raise ConfigError(f"maskgit.steps={g.steps!r} must be a positive integer")
    if not g.choice_temperature >= 0:
        raise ConfigError(f"maskgit.choice_temperature={g.choice_temperature!r} must be >= 0")


def capabilities(config):
    return cp.capabilities(config, likelihoods=())


def init(config, rng: jax.Array, example_batch) -> State:
    frozen = tokenizers.frozen_placeholder(config, rng, example_batch)
    b = example_batch["image"].shape[0]
    inputs = jnp.zeros((b, cp.seq_len(config)), jnp.int32)
    labels = jnp.zeros((b,), jnp.int32)
    params = build_model(config).init(jax.random.fold_in(rng, 0), inputs, labels)["params"]
    model = TrainState.create(params, make_optimizer(config.optimizer))
    return State.create(rng, {"model": model}, frozen=frozen)


def logits(config, params, inputs: jax.Array, labels: jax.Array) -> jax.Array:
    """``[B, N, K]`` for the code positions (the class position dropped)."""
    return build_model(config).apply({"params": params}, inputs, labels)[:, 1:]


def masked_losses(config, params, codes, mask, labels):
    """``(smoothed loss, unsmoothed bits per masked code)``, means over the masked positions."""
    k = cp.num_codes(config)
    inputs = jnp.where(mask, mask_id(config), codes)
    out = logits(config, params, inputs, labels)
    eps = config.maskgit.label_smoothing
    target = (
        optax.smooth_labels(jax.nn.one_hot(codes, k), eps) if eps > 0 else jax.nn.one_hot(codes, k)
    )
    smoothed = optax.softmax_cross_entropy(out, target)
    plain = optax.softmax_cross_entropy_with_integer_labels(out, codes)
    weight = mask.astype(jnp.float32)
    total = jnp.maximum(weight.sum(), 1.0)
    return (smoothed * weight).sum() / total, (plain * weight).sum() / total / math.log(2)


def train_step(config, state: State, batch) -> tuple[State, dict]:
    codes = cp.codes_of(config, state, batch["image"])
    k_labels, k_mask = jax.random.split(state.step_key())
    labels = cp.train_labels(config, batch["label"], k_labels)
    mask = tokens.random_mask(k_mask, codes.shape, config.maskgit.min_mask_rate)

    def objective(params):
        loss, bits = masked_losses(config, params, codes, mask, labels)
        return loss, {"loss": loss, "masked_nll_bits": bits}

    state, metrics = cp.train_step(config, state, objective)
    return state, {**metrics, "mask_rate": mask.mean()}


def eval_step(config, state: State, batch) -> dict:
    """``masked_nll_bits`` on test codes under training-distributed masks, drawn from each
    example's key (``example_keys``: the same masks in every eval)."""
    codes = cp.codes_of(config, state, batch["image"])
    min_rate = config.maskgit.min_mask_rate
    keys = example_keys(state.rng, batch["index"])
    mask = jax.vmap(lambda k: tokens.random_mask(k, (1, codes.shape[1]), min_rate)[0])(keys)
    labels = cp.eval_labels(config, batch["label"])
    _, bits = masked_losses(config, state.model.params, codes, mask, labels)
    return {"masked_nll_bits": bits}


def sample_codes(
    config,
    params,
    rng,
    labels,
    *,
    steps=None,
    temperature=1.0,
    choice_temperature=None,
    scale=None,
    trace=False,
):
    """Code sequences ``[B, N]`` for ``labels [B]`` by MaskGIT decoding (and, with ``trace``,
    the codes after every step)."""
    g = config.maskgit
    fn = lambda t, y: logits(config, params, t, y)  # noqa: E731
    return tokens.maskgit_decode(
        fn,
        labels,
        cp.seq_len(config),
        rng,
        mask_id=mask_id(config),
        steps=steps or g.steps,
        temperature=temperature,
        choice_temperature=g.choice_temperature
        if choice_temperature is None
        else choice_temperature,
        scale=scale,
        null_label=cp.null_label(config),
        trace=trace,
    )


def prepare_sample(config, options: dict) -> dict:
    """``sample``'s keyword arguments from the ``sample.py`` flags, checked; ``--steps=0`` and an
    absent ``--choice-temperature`` become the config's values."""
    cp.check_scale(config, options)
    n, steps = cp.seq_len(config), options["steps"]
    if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= n:
        raise ConfigError(f"--steps={steps!r} must be an integer in [1, {n}] (0: the config's)")
    choice = options["choice-temperature"]
    return {
        "steps": steps or config.maskgit.steps,
        "temperature": options["temperature"],
        "choice_temperature": config.maskgit.choice_temperature if choice is None else choice,
        "scale": options["scale"],
    }


def sample(
    config,
    state: State,
    rng,
    num,
    steps=None,
    temperature=1.0,
    choice_temperature=None,
    scale=None,
    label=None,
):
    """``Samples``: ``num`` images decoded by MaskGIT and the frozen tokenizer. ``steps`` and
    ``choice_temperature``: ``None`` for the config's. ``label``: an int, ``[num]`` ints, or
    ``None`` for classes 0, 1, .. in turn."""
    labels = cp.sample_labels(config, num, label)
    codes = sample_codes(
        config,
        state.model.params,
        rng,
        labels,
        steps=steps,
        temperature=temperature,
        choice_temperature=choice_temperature,
        scale=scale,
    )
    return cp.samples(config, state, codes, labels)


FAMILY = Family(
    name="maskgit",
    validate_config=validate_config,
    capabilities=capabilities,
    init=init,
    train_step=train_step,
    eval_step=eval_step,
    sample=sample,
    sample_options=SAMPLE_OPTIONS,
    prepare_sample=prepare_sample,
)
