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
from jaxgen.families import Capabilities, Family, Tokenizer, tokenizers
from jaxgen.families.common import check_optimizer, make_optimizer, to_unit_interval
from jaxgen.families.state import State, TrainState, gradient_step
from jaxgen.families.tokenizers import codebook_of, nets
from jaxgen.nn.vqvae import VQVAE

# State layout: players["model"].params holds the encoder, the decoder and, when
# vq.codebook == 'loss', the codebook; extra is the quantize.CodebookState (the EMA codebook
# when vq.codebook == 'ema', and the unused-step counters).


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


def validate_config(config) -> None:
    tokenizers.check_vq(config)
    check_optimizer(config.optimizer)
    factor = 2 ** len(config.model.channels)
    h, w, _ = config.data.image_shape
    if not config.model.channels or h % factor or w % factor:
        raise ConfigError(
            f"model.channels={tuple(config.model.channels)} halves the image "
            f"{len(config.model.channels)} times, so data.image_shape={(h, w)} must be "
            f"divisible by {factor}; use a non-empty channels tuple that fits"
        )


def capabilities(config) -> Capabilities:
    del config
    return Capabilities(reconstructs=True, is_tokenizer=True)


def init(config, rng: jax.Array, example_batch) -> State:
    x = to_unit_interval(example_batch["image"])
    params = dict(build_model(config).init(jax.random.fold_in(rng, 0), x)["params"])
    params, extra = tokenizers.codebook_init(config, params, jax.random.fold_in(rng, 1))
    model = TrainState.create(params, make_optimizer(config.optimizer))
    return State.create(rng, {"model": model}, extra=extra)


def encode(config, params, x: jax.Array) -> jax.Array:
    """``z_e: [B, h, w, D]`` for images ``x`` in ``[0, 1]``."""
    return build_model(config).apply({"params": nets(params)}, x, method=VQVAE.encode)


def decode(config, params, z_q: jax.Array) -> jax.Array:
    """Decoder output (pixel values on the ``[0, 1]`` scale, unclipped)."""
    return build_model(config).apply({"params": nets(params)}, z_q, method=VQVAE.decode)


def tokenizer(config) -> Tokenizer:
    """The VQ-VAE as a first stage: K codes on an ``(h, w)`` grid, pixels on ``[0, 1]``."""
    return tokenizers.vq_tokenizer(
        config,
        latent_shape(config),
        lambda params, x: encode(config, params, x),
        lambda params, z_q: decode(config, params, z_q),
        pixels="unit",
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


def train_step(config, state: State, batch) -> tuple[State, dict]:
    x = to_unit_interval(batch["image"])

    def objective(params):
        if tokenizers.uses_ema(config):  # the EMA codebook is a constant of the loss
            return loss_fn(config, params, jax.lax.stop_gradient(state.extra.ema.codebook), x)
        return loss_fn(config, params, params["codebook"], x)

    model, (metrics, z_e, indices, _), grad_norm = gradient_step(
        state.model, make_optimizer(config.optimizer), objective
    )
    params, extra, restarted = tokenizers.codebook_step(config, model.params, state, z_e, indices)
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
    metrics.update(tokenizers.reconstruction_figures(x, x_hat))
    metrics["codes"] = vq.code_counts(indices, config.vq.num_codes)
    return metrics


reconstruct = tokenizers.vq_reconstructor(tokenizer)

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
    tokenizer_params=tokenizers.vq_tokenizer_params,
)
