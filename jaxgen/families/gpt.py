"""An autoregressive transformer prior over a tokenizer's codes (GPT-style, as in VQGAN).

The code grid of a trained tokenizer (``first_stage.workdir``: any VQ-VAE or VQ-GAN run) is read
in raster order as ``c_1 .. c_N`` (``N = h w``), and a causal transformer
(``jaxgen.nn.transformer.CodeTransformer``) learns ``p(c) = prod_i p(c_i | c_<i, y)``: position 0
holds the class ``y`` (or the null class), position ``i`` the code ``c_i``, and the logits at
position ``i - 1`` predict ``c_i``.

Training (VQGAN's, Esser et al. 2021, not plain teacher forcing): each input code is kept with
probability ``gpt.pkeep`` and otherwise replaced by a code drawn uniformly, while the targets stay
the true codes, so the model learns to predict from slightly wrong contexts like the ones its
own samples give it; ``pkeep = 1`` is plain teacher forcing. The class is dropped to the null
class for a share ``model.p_uncond`` of examples (classifier-free guidance). Loss: the
cross-entropy of the targets, reported in bits per code (``nll_bits``) and spread over the
image's dimensions (``bits_per_dim``, a bound on the codes only, as for the PixelCNN prior).

Sampling (``jaxgen.tokens.sample_autoregressive``): one ``lax.scan`` over the ``N`` positions with
a key-value cache, one new position per step; temperature, top-k, top-p, and CFG with
``--scale`` (``w``: 1 is the conditional model, 0 the unconditional one). ``--cache=false``
runs the full forward at every step instead (the benchmark's comparison).
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
from jaxgen.families.common import make_optimizer
from jaxgen.families.state import State, TrainState
from jaxgen.nn.transformer import CodeTransformer, init_cache

SAMPLE_OPTIONS = (
    SampleOption("temperature", 1.0, "Softmax temperature (> 0).", minimum=0.0, above=True),
    SampleOption("top-k", 0, "Keep only the k most likely codes at each step (0: all).", minimum=0),
    SampleOption(
        "top-p",
        1.0,
        "Keep the smallest set of codes with this probability (1: all).",
        minimum=0.0,
        above=True,
        maximum=1.0,
    ),
    SampleOption(
        "scale", None, "Classifier-free guidance w (1: the conditional model).", type="float"
    ),
    SampleOption("cache", True, "Keep a key-value cache (false: a full forward per step)."),
)


def build_model(config) -> CodeTransformer:
    return cp.build_transformer(config, causal=True)


def validate_config(config) -> None:
    cp.check_model(config)
    if not 0.0 < config.gpt.pkeep <= 1.0:
        raise ConfigError(
            f"gpt.pkeep={config.gpt.pkeep!r} must be in (0, 1]: the share of input codes kept "
            "(1: plain teacher forcing)"
        )


def capabilities(config):
    return cp.capabilities(config, likelihoods=("nll_bits", "bits_per_dim"))


def init(config, rng: jax.Array, example_batch) -> State:
    frozen = tokenizers.frozen_placeholder(config, rng, example_batch)
    b = example_batch["image"].shape[0]
    inputs = jnp.zeros((b, cp.seq_len(config) - 1), jnp.int32)
    labels = jnp.zeros((b,), jnp.int32)
    params = build_model(config).init(jax.random.fold_in(rng, 0), inputs, labels)["params"]
    return State.create(
        rng, {"model": TrainState.create(params, make_optimizer(config.optimizer))}, frozen=frozen
    )


def logits(config, params, inputs: jax.Array, labels: jax.Array) -> jax.Array:
    """``[B, N, K]``: the conditionals of ``c_1..c_N`` given ``inputs = c_1..c_{N-1}``."""
    return build_model(config).apply({"params": params}, inputs, labels)


def nll_bits(config, params, inputs, targets, labels) -> jax.Array:
    """Per-example cross-entropy of ``targets [B, N]`` in bits per code ``[B]``."""
    out = logits(config, params, inputs[:, :-1], labels)
    return optax.softmax_cross_entropy_with_integer_labels(out, targets).mean(axis=1) / math.log(2)


def train_step(config, state: State, batch) -> tuple[State, dict]:
    codes = cp.codes_of(config, state, batch["image"])
    k_labels, k_corrupt = jax.random.split(state.step_key())
    labels = cp.train_labels(config, batch["label"], k_labels)
    inputs = tokens.corrupt(codes, config.gpt.pkeep, k_corrupt, cp.num_codes(config))
    return cp.nll_train_step(config, state, lambda p: nll_bits(config, p, inputs, codes, labels))


def eval_step(config, state: State, batch) -> dict:
    """Test NLL of the true codes with clean inputs and the true classes."""
    codes = cp.codes_of(config, state, batch["image"])
    labels = cp.eval_labels(config, batch["label"])
    bits = nll_bits(config, state.model.params, codes, codes, labels).mean()
    return cp.nll_metrics(config, bits)


def sample_codes(
    config, params, rng, labels, *, temperature=1.0, top_k=0, top_p=1.0, scale=None, cache=True
):
    """Code sequences ``[B, N]`` for ``labels [B]`` (the null class for unconditional ones)."""
    model = build_model(config)
    n = cp.seq_len(config)
    options = dict(
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        scale=scale,
        null_label=cp.null_label(config),
    )
    if not cache:
        fn = lambda t, y: model.apply({"params": params}, t, y)  # noqa: E731
        return tokens.sample_autoregressive_uncached(fn, labels, n, rng, **options)

    def step_fn(prev, y, pos, kv):
        return model.apply({"params": params}, prev, y, pos, kv, method=CodeTransformer.decode_step)

    return tokens.sample_autoregressive(
        step_fn, lambda b: init_cache(model, b), labels, n, rng, **options
    )


def prepare_sample(config, options: dict) -> dict:
    """``sample``'s keyword arguments from the ``sample.py`` flags, checked."""
    cp.check_scale(config, options)
    top_k, top_p = options["top-k"], options["top-p"]
    return {
        "temperature": options["temperature"],
        "top_k": top_k,
        "top_p": top_p,
        "scale": options["scale"],
        "cache": options["cache"],
    }


def sample(
    config,
    state: State,
    rng,
    num,
    temperature=1.0,
    top_k=0,
    top_p=1.0,
    scale=None,
    cache=True,
    label=None,
):
    """``Samples``: ``num`` images drawn from the prior and decoded by the frozen tokenizer.
    ``label``: an int, ``[num]`` ints, or ``None`` for classes 0, 1, .. in turn."""
    labels = cp.sample_labels(config, num, label)
    codes = sample_codes(
        config,
        state.model.params,
        rng,
        labels,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        scale=scale,
        cache=cache,
    )
    return cp.samples(config, state, codes, labels)


FAMILY = Family(
    name="gpt",
    validate_config=validate_config,
    capabilities=capabilities,
    init=init,
    train_step=train_step,
    eval_step=eval_step,
    sample=sample,
    sample_options=SAMPLE_OPTIONS,
    prepare_sample=prepare_sample,
)
