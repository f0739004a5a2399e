"""A gated PixelCNN prior over the code grid of a trained VQ-VAE: the VQ-VAE's second stage.

The first stage is named by ``first_stage.workdir``; the engine embeds that run's config in
``first_stage.config`` and, when this run starts fresh, copies the VQ-VAE's encoder, decoder and
codebook into this state (``frozen``), where they get no gradient and no optimiser. A prior's
checkpoint is therefore self-contained: ``sample.py`` needs only its workdir.

Training: each batch of images is encoded to code indices ``[B, h, w]`` by the frozen VQ-VAE,
and the PixelCNN (``jaxgen.nn.pixelcnn``) learns ``p(c) = prod_i p(c_i | c_<i [, y])`` in raster
order by cross-entropy. Metrics are in bits per code (``nll_bits``) and, for comparison with
pixel models, the same total spread over the image's dimensions (``bits_per_dim`` =
bits per code x h w / (H W C); a bound on the codes, not a pixel likelihood).

Sampling draws the grid position by position in one ``lax.scan`` (``sample_codes``), with a
temperature, and decodes it with the frozen decoder. With ``model.num_classes > 0`` the prior is
class-conditional on the data's labels.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxgen import quantize
from jaxgen.errors import ConfigError
from jaxgen.families import vqvae
from jaxgen.families.common import (
    check_optimizer,
    global_norm,
    make_optimizer,
    schedule_28x28,
)
from jaxgen.nn.pixelcnn import GatedPixelCNN, sample_codes

SAMPLE_OPTIONS = {
    "temperature": (1.0, "VAE: prior noise scale; PixelCNN prior: softmax temperature."),
}


@flax.struct.dataclass
class State:
    step: jax.Array
    rng: jax.Array
    params: Any  # the PixelCNN's
    opt_state: Any
    frozen: Any  # the VQ-VAE's parameters and codebook: {"params": ..., "codebook": [K, D]}


def first_stage_config(config):
    fs = config.first_stage.config
    if "family" not in fs:
        raise ConfigError(
            f"first_stage.workdir={config.first_stage.workdir!r} has not been resolved to a "
            "trained VQ-VAE run; the engine does this when the run starts"
        )
    return fs


def build_model(config) -> GatedPixelCNN:
    m = config.model
    return GatedPixelCNN(
        num_codes=first_stage_config(config).vq.num_codes,
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
    fs = config.first_stage.config
    if "family" in fs:  # resolved (always, once a run starts)
        if fs.family != "vqvae":
            raise ConfigError(
                f"first_stage.workdir={config.first_stage.workdir!r} holds a {fs.family!r} "
                "run; the PixelCNN prior needs a VQ-VAE run (family 'vqvae')"
            )
        if tuple(fs.data.image_shape) != tuple(config.data.image_shape):
            raise ConfigError(
                f"data.image_shape={tuple(config.data.image_shape)} differs from the VQ-VAE's "
                f"{tuple(fs.data.image_shape)} (first_stage.workdir="
                f"{config.first_stage.workdir!r}); train the prior on the VQ-VAE's data"
            )


def init(config, rng: jax.Array, example_batch) -> State:
    fs = first_stage_config(config)
    # Zeros of the VQ-VAE's shapes: the engine copies the trained weights in (attach_first_stage)
    # and tracing the VQ-VAE's own initialisers would only slow down compilation.
    shapes = jax.eval_shape(functools.partial(vqvae.init, fs), rng, example_batch)
    first = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    h, w = vqvae.latent_shape(fs)
    codes = jnp.zeros((example_batch["image"].shape[0], h, w), jnp.int32)
    labels = _labels(config, example_batch["label"])
    params = build_model(config).init(jax.random.fold_in(rng, 0), codes, labels)["params"]
    return State(
        step=jnp.zeros((), jnp.int32),
        rng=rng,
        params=params,
        opt_state=make_optimizer(config.optimizer).init(params),
        frozen=_frozen_of(first),
    )


def _frozen_of(first_state) -> dict:
    nets = {k: v for k, v in first_state.params.items() if k != "codebook"}
    return {"params": nets, "codebook": vqvae.codebook_of(first_state)}


def attach_first_stage(config, state: State, first_state) -> State:
    """``state`` with the trained VQ-VAE's weights and codebook in ``frozen``."""
    del config
    frozen = _frozen_of(first_state)
    shapes = jax.tree.map(jnp.shape, state.frozen)
    if jax.tree.map(jnp.shape, frozen) != shapes:
        raise ConfigError("the first stage's checkpoint does not match its config.json")
    return state.replace(frozen=frozen)


def _first_state(config, frozen) -> vqvae.State:
    """A VQ-VAE ``State`` view of ``frozen``, enough for its encode/decode helpers."""
    fs = first_stage_config(config)
    params, ema = dict(frozen["params"]), None
    if fs.vq.codebook == "ema":
        ema = quantize.EmaCodebook(frozen["codebook"], None, None)
    else:
        params["codebook"] = frozen["codebook"]
    return vqvae.State(None, None, params, None, ema, None)


def _labels(config, labels):
    return labels.astype(jnp.int32) if config.model.num_classes > 0 else None


def _codes(config, state: State, images: jax.Array) -> jax.Array:
    frozen = jax.lax.stop_gradient(state.frozen)
    return vqvae.encode_to_indices(first_stage_config(config), _first_state(config, frozen), images)


def nll_bits(config, params, codes: jax.Array, labels) -> jax.Array:
    """Per-example negative log-likelihood of ``codes [B, h, w]`` in bits per code ``[B]``."""
    logits = build_model(config).apply({"params": params}, codes, labels)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, codes)
    return nll.mean(axis=(1, 2)) / math.log(2.0)


def _bits_per_dim(config, bits_per_code: jax.Array) -> jax.Array:
    h, w = vqvae.latent_shape(first_stage_config(config))
    return bits_per_code * (h * w) / float(np.prod(config.data.image_shape))


def train_step(config, state: State, batch) -> tuple[State, dict]:
    codes = _codes(config, state, batch["image"])
    labels = _labels(config, batch["label"])

    def objective(params):
        bits = nll_bits(config, params, codes, labels).mean()
        return bits, bits

    grads, bits = jax.grad(objective, has_aux=True)(state.params)
    updates, opt_state = make_optimizer(config.optimizer).update(
        grads, state.opt_state, state.params
    )
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss": bits,
        "nll_bits": bits,
        "bits_per_dim": _bits_per_dim(config, bits),
        "grad_norm": global_norm(grads),
    }
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def eval_step(config, state: State, batch) -> dict:
    codes = _codes(config, state, batch["image"])
    bits = nll_bits(config, state.params, codes, _labels(config, batch["label"])).mean()
    return {"nll_bits": bits, "bits_per_dim": _bits_per_dim(config, bits)}


def sample(config, state: State, rng: jax.Array, num: int, temperature=1.0, label=None):
    """``num`` images ``[num, H, W, C]`` in ``[0, 1]``: codes drawn from the prior at
    ``temperature``, decoded by the frozen VQ-VAE. ``label`` (conditional priors): an int, an
    int array ``[num]``, or ``None`` for classes ``0, 1, ..`` in turn."""
    if isinstance(temperature, (int, float)) and not temperature > 0:
        raise ConfigError(f"temperature={temperature!r} must be > 0")
    fs = first_stage_config(config)
    k = config.model.num_classes
    labels = None
    if k > 0:
        if label is None:
            labels = jnp.arange(num, dtype=jnp.int32) % k
        else:
            labels = jnp.broadcast_to(jnp.asarray(label, jnp.int32), (num,))
    elif label is not None:
        raise ConfigError("label was given but this prior is unconditional (model.num_classes=0)")
    model = build_model(config)

    def logits_fn(codes):
        return model.apply({"params": state.params}, codes, labels)

    h, w = vqvae.latent_shape(fs)
    codes = sample_codes(logits_fn, (num, h, w), rng, temperature)
    return vqvae.decode_indices(fs, _first_state(config, state.frozen), codes)


def add_defaults(c) -> None:
    """The prior's config sections (``first_stage``, ``model``) on a base config."""
    import ml_collections

    c.family = "pixelcnn"
    c.first_stage = ml_collections.ConfigDict()
    c.first_stage.workdir = ""  # a trained VQ-VAE run
    c.first_stage.config = ml_collections.ConfigDict()  # filled from its config.json
    c.model = ml_collections.ConfigDict()
    c.model.channels = 128
    c.model.num_layers = 12
    c.model.kernel_size = 3
    c.model.num_classes = 0  # > 0: class-conditional


def tiny_model(c) -> None:
    """The ``tiny`` variant's network and schedule, shared by the prior configs."""
    c.model.channels = 8
    c.model.num_layers = 2
    c.optimizer.warmup_steps = 0
    c.optimizer.decay_steps = 0


def defaults_28x28(c, variants, first_stage_workdir: str) -> None:
    """Settings shared by the 28x28 priors; ``cond`` in ``variants`` conditions on the label."""
    c.data.image_shape = (28, 28, 1)
    c.first_stage.workdir = first_stage_workdir
    c.model.channels = 64
    c.model.num_layers = 10
    if "cond" in variants:
        c.model.num_classes = 10
    schedule_28x28(c)
