"""A gated PixelCNN prior over the code grid of a trained tokenizer (a VQ-VAE): the second stage.

The first stage is named by ``first_stage.workdir``; the engine embeds that run's config in
``first_stage.config`` and, when this run starts fresh, copies the tokenizer's parameters into
this state (``frozen``), where they get no gradient and no optimiser. A prior's checkpoint is
therefore self-contained: ``sample.py`` needs only its workdir. The prior sees the first stage
only through the ``Tokenizer`` interface (``jaxgen.families.tokenizers``).

Training: each batch of images is encoded to code indices ``[B, h, w]`` by the frozen tokenizer,
and the PixelCNN (``jaxgen.nn.pixelcnn``) learns ``p(c) = prod_i p(c_i | c_<i [, y])`` in raster
order by cross-entropy. Metrics are in bits per code (``nll_bits``) and, for comparison with
pixel models, the same total spread over the image's dimensions (``bits_per_dim`` =
bits per code x h w / (H W C); a bound on the codes, not a pixel likelihood).

Sampling draws the grid position by position in one ``lax.scan`` (``sample_codes``), with a
temperature, and decodes it with the frozen tokenizer. With ``model.num_classes > 0`` the prior is
class-conditional on the data's labels.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from jaxgen.errors import ConfigError
from jaxgen.families import Capabilities, Family, SampleOption, tokenizers
from jaxgen.families import code_priors as cp
from jaxgen.families.common import check_optimizer, make_optimizer
from jaxgen.families.state import State, TrainState
from jaxgen.nn.pixelcnn import GatedPixelCNN, sample_codes

SAMPLE_OPTIONS = (
    SampleOption(
        "temperature", 1.0, "Softmax temperature of the prior (> 0).", minimum=0.0, above=True
    ),
)


def build_model(config) -> GatedPixelCNN:
    m = config.model
    return GatedPixelCNN(
        num_codes=tokenizers.tokenizer_of(config).num_codes,
        channels=m.channels,
        num_layers=m.num_layers,
        kernel_size=m.kernel_size,
        num_classes=m.num_classes,
    )


def validate_config(config) -> None:
    check_optimizer(config.optimizer)
    m = config.model
    for key in ("channels", "num_layers"):
        if not isinstance(m[key], int) or m[key] < 1:
            raise ConfigError(f"model.{key}={m[key]!r} must be a positive integer")
    if not isinstance(m.kernel_size, int) or m.kernel_size < 3 or m.kernel_size % 2 == 0:
        raise ConfigError(f"model.kernel_size={m.kernel_size!r} must be an odd integer >= 3")
    if not isinstance(m.num_classes, int) or m.num_classes < 0:
        raise ConfigError(f"model.num_classes={m.num_classes!r} must be an integer >= 0")


def capabilities(config) -> Capabilities:
    return cp.capabilities(config, likelihoods=("nll_bits", "bits_per_dim"))


def init(config, rng: jax.Array, example_batch) -> State:
    frozen = tokenizers.frozen_placeholder(config, rng, example_batch)
    h, w = tokenizers.tokenizer_of(config).grid_shape
    codes = jnp.zeros((example_batch["image"].shape[0], h, w), jnp.int32)
    labels = _labels(config, example_batch["label"])
    params = build_model(config).init(jax.random.fold_in(rng, 0), codes, labels)["params"]
    model = TrainState.create(params, make_optimizer(config.optimizer))
    return State.create(rng, {"model": model}, frozen=frozen)


def _labels(config, labels: jax.Array):
    """The network's class input: the data's classes (``code_priors.eval_labels``), or ``None``
    for an unconditional PixelCNN (it has no null class)."""
    return cp.eval_labels(config, labels) if config.model.num_classes > 0 else None


def _codes(config, state: State, images: jax.Array) -> jax.Array:
    return tokenizers.encode(config, state.frozen, images)


def nll_bits(config, params, codes: jax.Array, labels) -> jax.Array:
    """Per-example negative log-likelihood of ``codes [B, h, w]`` in bits per code ``[B]``."""
    logits = build_model(config).apply({"params": params}, codes, labels)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, codes)
    return nll.mean(axis=(1, 2)) / math.log(2.0)


def train_step(config, state: State, batch) -> tuple[State, dict]:
    codes = _codes(config, state, batch["image"])
    labels = _labels(config, batch["label"])
    return cp.nll_train_step(config, state, lambda p: nll_bits(config, p, codes, labels))


def eval_step(config, state: State, batch) -> dict:
    codes = _codes(config, state, batch["image"])
    bits = nll_bits(config, state.model.params, codes, _labels(config, batch["label"])).mean()
    return cp.nll_metrics(config, bits)


def prepare_sample(config, options: dict) -> dict:
    """``sample``'s keyword arguments from the ``sample.py`` flags, checked."""
    del config
    return {"temperature": options["temperature"]}


def sample(config, state: State, rng: jax.Array, num: int, temperature=1.0, label=None):
    """``Samples``: ``num`` images ``[num, H, W, C]`` in ``[0, 1]`` (codes drawn from the prior
    at ``temperature``, decoded by the frozen tokenizer) and their labels. ``label``
    (conditional priors): an int, an int array ``[num]``, or ``None`` for classes ``0, 1, ..``
    in turn."""
    labels = cp.sample_labels(config, num, label)
    net_labels = labels if config.model.num_classes > 0 else None
    model = build_model(config)

    def logits_fn(codes):
        return model.apply({"params": state.model.params}, codes, net_labels)

    h, w = tokenizers.tokenizer_of(config).grid_shape
    codes = sample_codes(logits_fn, (num, h, w), rng, temperature)
    return cp.samples(config, state, codes, labels)


FAMILY = Family(
    name="pixelcnn",
    validate_config=validate_config,
    capabilities=capabilities,
    init=init,
    train_step=train_step,
    eval_step=eval_step,
    sample=sample,
    sample_options=SAMPLE_OPTIONS,
    prepare_sample=prepare_sample,
)
