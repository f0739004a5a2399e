"""VQ-VAE (van den Oord et al. 2017): a conv autoencoder with a discrete latent grid.

The encoder maps an image to ``z_e: [B, h, w, D]``; each vector is replaced by its nearest code
of a ``[K, D]`` codebook (``jaxgen.quantize``); the decoder reconstructs from the codes, its input
being the straight-through ``z_e + stop_gradient(codes - z_e)``. Loss per batch::

    mean (x_hat - x)^2  +  [mean |sg(z_e) - e|^2]  +  beta * mean |z_e - sg(e)|^2

with pixels on the ``[0, 1]`` scale and every term a mean over its elements (so beta is relative
to a per-pixel-mean reconstruction loss; with summed losses it would mean something else).
The bracketed codebook (VQ) term is used when ``vq.codebook = 'loss'``; with ``'ema'`` the
codebook gets no gradient and follows exponential moving averages of the encoder outputs
assigned to it (``quantize.ema_update``, an explicit state transform after each step).

Codebook health: ``vq.restart_after > 0`` re-seeds every code unused for that many steps from
the current batch's encoder outputs (``quantize.restart_dead_codes``). Eval reports the
reconstruction MSE and PSNR, the VQ and commitment losses, the batch perplexity, and over the
whole eval pass the fraction of codes used (``codes_used``) and the pass's perplexity.

This family does not generate on its own (``sample.py`` shows reconstructions); it is a
tokenizer (``tokenizer``: images <-> a 7x7 grid of code indices for 28x28 images), and a prior
trained on its codes (``family = 'pixelcnn'``) generates.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxgen import quantize as vq
from jaxgen.errors import ConfigError
from jaxgen.families import Capabilities, Family, Tokenizer
from jaxgen.families.common import (
    check_choice,
    check_optimizer,
    make_optimizer,
    to_unit_interval,
)
from jaxgen.families.state import State, TrainState, gradient_step
from jaxgen.nn.vqvae import VQVAE

CODEBOOKS = ("ema", "loss")

# State layout: players["model"].params holds the encoder, the decoder and, when
# vq.codebook == 'loss', the codebook; extra = {"ema": quantize.EmaCodebook (vq.codebook ==
# 'ema') or None, "unused": [K] int32 steps since each code was last chosen}.


def build_model(config) -> VQVAE:
    m = config.model
    return VQVAE(
        image_channels=config.data.image_shape[-1],
        latent_dim=config.vq.dim,
        channels=tuple(m.channels),
        num_res_blocks=m.num_res_blocks,
        res_hidden=m.res_hidden,
    )


def latent_shape(config) -> tuple[int, int]:
    """``(h, w)`` of the code grid."""
    factor = 2 ** len(config.model.channels)
    h, w, _ = config.data.image_shape
    return h // factor, w // factor


def check_vq(config) -> None:
    """The ``vq`` section's checks, shared with the VQ-GAN."""
    check_choice(config, "vq.codebook", CODEBOOKS)
    for key in ("num_codes", "dim"):
        if not isinstance(config.vq[key], int) or config.vq[key] < 1:
            raise ConfigError(f"vq.{key}={config.vq[key]!r} must be a positive integer")
    if config.vq.beta < 0:
        raise ConfigError(f"vq.beta={config.vq.beta!r} must be >= 0 (0.25 in the paper)")
    if not 0 <= config.vq.ema_decay < 1:
        raise ConfigError(f"vq.ema_decay={config.vq.ema_decay!r} must be in [0, 1) (e.g. 0.99)")
    if not config.vq.ema_eps > 0:
        raise ConfigError(f"vq.ema_eps={config.vq.ema_eps!r} must be > 0 (e.g. 1e-5)")
    seed = config.vq.get("seed_from_data", False)  # absent in runs saved before 2026-12-03
    if not isinstance(seed, bool):
        raise ConfigError(f"vq.seed_from_data={seed!r} must be True or False")
    if not isinstance(config.vq.restart_after, int) or config.vq.restart_after < 0:
        raise ConfigError(
            f"vq.restart_after={config.vq.restart_after!r} must be an integer >= 0 "
            "(0: no dead-code restarts)"
        )


def validate_config(config) -> None:
    check_vq(config)
    check_optimizer(config.optimizer)
    factor = 2 ** len(config.model.channels)
    h, w, _ = config.data.image_shape
    if not config.model.channels or h % factor or w % factor:
        raise ConfigError(
            f"model.channels={tuple(config.model.channels)} halves the image "
            f"{len(config.model.channels)} times, so data.image_shape={(h, w)} must be "
            f"divisible by {factor}; use a non-empty channels tuple that fits"
        )


def _init_codebook(config, rng: jax.Array) -> jax.Array:
    k = config.vq.num_codes
    return jax.random.uniform(rng, (k, config.vq.dim), jnp.float32, -1.0 / k, 1.0 / k)


def capabilities(config) -> Capabilities:
    del config
    return Capabilities(reconstructs=True, is_tokenizer=True)


def with_codebook(config, params: dict, rng: jax.Array) -> tuple[dict, dict]:
    """A new codebook for ``params`` (the networks' parameters): ``(params, extra)``, the
    codebook in ``params["codebook"]`` when the loss learns it, else in ``extra["ema"]``, and
    ``extra["unused"]`` the zeroed counters. The VQ-GAN shares it."""
    codebook = _init_codebook(config, rng)
    ema = None
    if config.vq.codebook == "ema":
        ema = vq.ema_init(codebook)
    else:
        params = {**params, "codebook": codebook}
    unused = jnp.zeros((config.vq.num_codes,), jnp.int32)
    return params, {"ema": ema, "unused": unused}


def init(config, rng: jax.Array, example_batch) -> State:
    x = to_unit_interval(example_batch["image"])
    params = dict(build_model(config).init(jax.random.fold_in(rng, 0), x)["params"])
    params, extra = with_codebook(config, params, jax.random.fold_in(rng, 1))
    model = TrainState.create(params, make_optimizer(config.optimizer))
    return State.create(rng, {"model": model}, extra=extra)


def codebook_of(state: State) -> jax.Array:
    """The ``[K, D]`` codebook in use."""
    ema = state.extra["ema"]
    return ema.codebook if ema is not None else state.model.params["codebook"]


def nets(params) -> dict:
    """The networks' parameters without the codebook."""
    return {k: v for k, v in params.items() if k != "codebook"}


def encode(config, params, x: jax.Array) -> jax.Array:
    """``z_e: [B, h, w, D]`` for images ``x`` in ``[0, 1]``."""
    return build_model(config).apply({"params": nets(params)}, x, method=VQVAE.encode)


def decode(config, params, z_q: jax.Array) -> jax.Array:
    """Decoder output (pixel values on the ``[0, 1]`` scale, unclipped)."""
    return build_model(config).apply({"params": nets(params)}, z_q, method=VQVAE.decode)


def tokenizer_params(config, state: State) -> dict:
    """What the tokenizer needs of a trained state: ``{"params": nets, "codebook": [K, D]}``."""
    del config
    return {"params": nets(state.model.params), "codebook": codebook_of(state)}


def encode_to_indices(config, frozen: dict, images: jax.Array) -> jax.Array:
    """uint8 images -> int32 code indices ``[B, h, w]`` (``frozen``: ``tokenizer_params``)."""
    z_e = encode(config, frozen["params"], to_unit_interval(images))
    return vq.nearest_code(z_e, frozen["codebook"])[0]


def decode_indices(config, frozen: dict, indices: jax.Array) -> jax.Array:
    """Code indices ``[B, h, w]`` -> images in ``[0, 1]`` (``frozen``: ``tokenizer_params``)."""
    codes = jnp.take(frozen["codebook"], indices, axis=0)
    return jnp.clip(decode(config, frozen["params"], codes), 0.0, 1.0)


def tokenizer(config) -> Tokenizer:
    """The VQ-VAE as a first stage: K codes on an ``(h, w)`` grid."""
    return Tokenizer(
        num_codes=config.vq.num_codes,
        grid_shape=latent_shape(config),
        image_shape=tuple(config.data.image_shape),
        encode=lambda frozen, images: encode_to_indices(config, frozen, images),
        decode=lambda frozen, codes: decode_indices(config, frozen, codes),
    )


def loss_fn(config, params, codebook: jax.Array, x: jax.Array):
    """Scalar loss and ``(metrics, z_e, indices, x_hat)`` for targets ``x: [B, H, W, C]``.

    ``codebook`` is ``params['codebook']`` (learned by the VQ term) or the EMA codebook, which
    the caller passes through ``stop_gradient``.
    """
    z_e = encode(config, params, x)
    q = vq.quantize(z_e, codebook)
    x_hat = decode(config, params, q.z_q)
    mse = jnp.mean((x_hat - x) ** 2)
    commit = vq.commitment_loss(z_e, q.codes, beta=config.vq.beta)
    codebook_term = vq.codebook_loss(z_e, q.codes)
    loss = mse + commit
    if config.vq.codebook == "loss":
        loss = loss + codebook_term
    metrics = {
        "loss": loss,
        "mse": mse,
        "vq_loss": codebook_term,
        "commit_loss": commit,
        "perplexity": vq.perplexity(q.indices, config.vq.num_codes),
    }
    return loss, (metrics, z_e, q.indices, x_hat)


def codebook_step(config, params, state: State, z_e: jax.Array, indices: jax.Array):
    """The codebook's explicit state transforms after a gradient step: at step 0 with
    ``vq.seed_from_data``, every code seeded from the batch's encoder outputs; the EMA update
    (with ``vq.codebook == 'ema'``), the unused-step counters and dead-code restarts. ``z_e`` and
    ``indices`` are the step's encoder outputs and codes; ``params`` the updated parameters
    (holding the codebook when it is learned by the loss). Returns ``(params, extra,
    restarted)``, ``extra`` being ``{"ema", "unused"}``. The VQ-GAN shares it."""
    ema = config.vq.codebook == "ema"
    ema_state = state.extra["ema"]
    if ema:
        ema_state = vq.ema_update(
            ema_state, z_e, indices, decay=config.vq.ema_decay, eps=config.vq.ema_eps
        )
    if config.vq.get("seed_from_data", False):
        # Step 0: every code becomes one of the first batch's encoder outputs (the restart
        # transform with every code counted dead), so the codebook starts on the encoder's scale.
        first = jnp.where(state.step == 0, 1, 0) * jnp.ones_like(state.extra["unused"])
        key = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), 1)
        if ema:
            ema_state, _ = vq.restart_dead_codes_ema(ema_state, first, z_e, key, 1)
        else:
            codebook, _ = vq.restart_dead_codes(params["codebook"], first, z_e, key, 1)
            params = {**params, "codebook": codebook}
    unused = vq.update_unused(state.extra["unused"], indices)
    restarted = jnp.zeros((), jnp.float32)
    if config.vq.restart_after > 0:
        rng = jax.random.fold_in(state.rng, state.step)
        restarted = jnp.sum(unused >= config.vq.restart_after).astype(jnp.float32)
        if ema:
            ema_state, unused = vq.restart_dead_codes_ema(
                ema_state, unused, z_e, rng, config.vq.restart_after
            )
        else:
            codebook, unused = vq.restart_dead_codes(
                params["codebook"], unused, z_e, rng, config.vq.restart_after
            )
            params = {**params, "codebook": codebook}
    return params, {"ema": ema_state, "unused": unused}, restarted


def train_step(config, state: State, batch) -> tuple[State, dict]:
    x = to_unit_interval(batch["image"])
    ema = config.vq.codebook == "ema"
    if ema:

        def objective(params):
            return loss_fn(config, params, jax.lax.stop_gradient(state.extra["ema"].codebook), x)
    else:

        def objective(params):
            return loss_fn(config, params, params["codebook"], x)

    model, (metrics, z_e, indices, _), grad_norm = gradient_step(
        state.model, make_optimizer(config.optimizer), objective
    )
    params, extra, restarted = codebook_step(config, model.params, state, z_e, indices)
    metrics["grad_norm"] = grad_norm
    metrics["restarted"] = restarted
    new_state = state.advance(model=model.replace(params=params))
    return new_state.replace(extra=extra), metrics


def eval_step(config, state: State, batch) -> dict:
    """Batch means of the reconstruction and codebook figures; ``codes`` is the batch's code
    histogram ``[K]``, which the engine sums over the eval pass (``codes_used``)."""
    x = to_unit_interval(batch["image"])
    _, (metrics, _, indices, x_hat) = loss_fn(config, state.model.params, codebook_of(state), x)
    metrics = {k: v for k, v in metrics.items() if k != "loss"}
    metrics.update(reconstruction_figures(x, x_hat))
    metrics["codes"] = vq.code_counts(indices, config.vq.num_codes)
    return metrics


def reconstruction_figures(x: jax.Array, x_hat: jax.Array) -> dict:
    """``mse`` and ``psnr`` (mean over images of each image's PSNR) of reconstructions on the
    ``[0, 1]`` scale, clipped to it first, as an image viewer sees them. Shared by the
    tokenizers so their figures mean the same."""
    per_image = jnp.mean((jnp.clip(x_hat, 0.0, 1.0) - x) ** 2, axis=(1, 2, 3))
    return {
        "mse": per_image.mean(),
        "psnr": jnp.mean(-10.0 * jnp.log10(jnp.maximum(per_image, 1e-10))),
    }


def reconstruct(config, state: State, images: jax.Array) -> jax.Array:
    """Reconstructions through the codebook: ``[B, H, W, C]`` in ``[0, 1]``."""
    frozen = tokenizer_params(config, state)
    return decode_indices(config, frozen, encode_to_indices(config, frozen, images))


FAMILY = Family(
    name="vqvae",
    validate_config=validate_config,
    capabilities=capabilities,
    init=init,
    train_step=train_step,
    eval_step=eval_step,
    eval_reductions={"codes": "histogram"},
    reconstruct=reconstruct,
    tokenizer=tokenizer,
    tokenizer_params=tokenizer_params,
)
