"""GAN, WGAN and WGAN-GP (Goodfellow et al. 2014; Arjovsky et al. 2017; Gulrajani et al. 2017).

Two players, each a ``TrainState`` with its own optimiser: ``generator`` (``optimizer``) and
``discriminator`` (``optimizer_d``; for a Wasserstein loss it is the critic). One train step:

1. with the generator fixed, ``gan.n_critic`` discriminator updates, one per data batch of the
   step (the engine hands ``[n_critic, B, ...]``), as one unrolled ``lax.scan`` (a direct
   call for one); each draws fresh noise, and with ``gan.clip > 0`` clips every critic weight to
   ``[-clip, clip]`` after its update;
2. with the discriminator fixed, one generator update on fresh noise.

Packing (PacGAN, Lin et al. 2018): with ``gan.pack = m > 1`` the discriminator judges ``m``
samples at once, concatenated along the last (channel or feature) axis, all real or all fake;
a generator that drops modes makes packs whose members look alike, which one sample alone
cannot show. Every penalty then acts on packs, the discriminator's real examples.

Losses (``gan.loss``, ``jaxgen.losses.gan``): ``minimax``, ``nonsaturating``, ``hinge``,
``lsgan``, ``wasserstein``. Penalties on the discriminator: WGAN-GP's
``gp_weight * E (|grad f(x_hat)| - 1)^2`` and R1's ``r1_gamma / 2 * E |grad D(x)|^2``; both need
each example's own input gradient, so a batch-normed discriminator is refused with them.

Keys: the step's key is ``fold_in(rng, step)``; discriminator update ``j`` uses
``fold_in(key, j)`` and the generator update ``fold_in(key, n_critic)``, so the scan equals
``n_critic`` separate ``discriminator_update`` calls followed by ``generator_update``.

Generator EMA (``gan.ema_decay > 0``; Yazici et al. 2019, used by ProGAN and StyleGAN): the
generator also keeps an exponential moving average of its weights, updated after each generator
update, and ``sample`` draws from it. Its batch-norm statistics are not the running ones (those
track the live generator): ``sample`` measures them for the averaged weights on a fixed batch of
``CALIBRATION`` noise vectors (SWA's batch-norm update), so they depend on neither the sampling
key nor the other images of a batch.

``adversarial_step`` works on float samples of any shape, so the 2-D benchmark
(``bench/gan_modes.py``) trains the same step on points; ``train_step`` feeds it images scaled to
``[-1, 1]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxgen.errors import ConfigError
from jaxgen.families import Capabilities, Family, SampleOption, Samples
from jaxgen.families.common import (
    check_choice,
    check_int,
    check_optimizer,
    make_optimizer,
    to_model_range,
)
from jaxgen.families.state import State, TrainState, gradient_step
from jaxgen.losses import gan as gan_losses
from jaxgen.nn.gan import ConvDiscriminator, ConvGenerator, MLPDiscriminator, MLPGenerator
from jaxgen.nn.layers import BN_MOMENTUM, NORMS

MODEL_KINDS = ("conv", "mlp")
CALIBRATION = 1024  # noise vectors that measure the EMA generator's batch-norm statistics
SAMPLE_OPTIONS = (
    SampleOption(
        "temperature", 1.0, "Noise scale: z ~ N(0, t^2 I) (> 0).", minimum=0.0, above=True
    ),
)


def _is_image(config) -> bool:
    return len(tuple(config.data.image_shape)) == 3


def build_generator(config):
    m = config.model
    shape = tuple(config.data.image_shape)
    if m.kind == "conv":
        return ConvGenerator(shape, tuple(m.g_channels), m.g_norm, m.init_std)
    return MLPGenerator(shape, tuple(m.g_hidden), m.g_norm, tanh=_is_image(config))


def build_discriminator(config):
    m = config.model
    if m.kind == "conv":
        return ConvDiscriminator(tuple(m.d_channels), m.d_norm, m.init_std)
    return MLPDiscriminator(tuple(m.d_hidden), m.d_norm)


def validate_config(config) -> None:
    m, g = config.model, config.gan
    check_choice(config, "model.kind", MODEL_KINDS)
    check_choice(config, "model.g_norm", NORMS)
    check_choice(config, "model.d_norm", NORMS)
    check_choice(config, "gan.loss", gan_losses.LOSSES)
    check_int(m.noise_dim, "model.noise_dim", 1)
    check_int(g.n_critic, "gan.n_critic", 1)
    check_int(g.pack, "gan.pack", 1)
    if config.train.batch_size % g.pack:
        raise ConfigError(
            f"gan.pack={g.pack} must divide train.batch_size={config.train.batch_size}: the "
            "discriminator sees the batch as batch_size / pack packs"
        )
    check_optimizer(config.optimizer)
    check_optimizer(config.optimizer_d, "optimizer_d")
    for key in ("clip", "gp_weight", "r1_gamma"):
        if not g[key] >= 0:
            raise ConfigError(f"gan.{key}={g[key]!r} must be >= 0")
    if not 0 <= _ema_decay(config) < 1:
        raise ConfigError(
            f"gan.ema_decay={g.ema_decay!r} must be in [0, 1) (0: no generator EMA; 0.999 "
            "averages over about 1,000 generator updates)"
        )
    if not m.init_std >= 0:
        raise ConfigError(f"model.init_std={m.init_std!r} must be >= 0 (0: Flax's defaults)")
    penalties = [k for k in ("gp_weight", "r1_gamma") if g[k] > 0]
    if penalties and m.d_norm == "batch":
        raise ConfigError(
            f"gan.{penalties[0]}={g[penalties[0]]!r} penalises each example's own input "
            "gradient, but model.d_norm='batch' mixes the examples of a batch (a batch-normed "
            "critic breaks the penalty); use model.d_norm='layer' (the WGAN-GP paper's choice) "
            "or 'none'"
        )
    if g.loss == "wasserstein" and g.clip == 0 and g.gp_weight == 0:
        raise ConfigError(
            "gan.loss='wasserstein' needs a Lipschitz critic: set gan.clip > 0 (WGAN, 0.01) or "
            "gan.gp_weight > 0 (WGAN-GP, 10)"
        )
    shape = tuple(config.data.image_shape)
    if m.kind == "conv":
        if len(shape) != 3:
            raise ConfigError(
                f"model.kind='conv' needs images: data.image_shape={shape} must be (H, W, C); "
                "use model.kind='mlp' for vectors"
            )
        factor = 2 ** len(m.g_channels)
        if not m.g_channels or shape[0] % factor or shape[1] % factor:
            raise ConfigError(
                f"model.g_channels={tuple(m.g_channels)} doubles the resolution "
                f"{len(m.g_channels)} times, so data.image_shape={shape[:2]} must be divisible "
                f"by {factor}"
            )
        if not m.d_channels:
            raise ConfigError("model.d_channels must name at least one convolution width")


def capabilities(config) -> Capabilities:
    return Capabilities(
        generates=True,
        held_out=False,
        batches_per_step=config.gan.n_critic,
        progress_metric="g_loss",
    )


def _batch_stats(config) -> bool:
    return config.model.g_norm == "batch"


def _ema_decay(config) -> float:
    """``gan.ema_decay`` (runs saved before it existed have none: 0)."""
    return config.gan.get("ema_decay", 0.0)


def init(config, rng: jax.Array, example_batch=None) -> State:
    """Both players, initialised from ``fold_in(rng, 0)`` (generator) and ``(rng, 1)``
    (discriminator). ``example_batch`` is unused: the shapes come from the config."""
    del example_batch
    shape = tuple(config.data.image_shape)
    z = jnp.zeros((2, config.model.noise_dim), jnp.float32)
    g_vars = build_generator(config).init(jax.random.fold_in(rng, 0), z, train=False)
    d_vars = build_discriminator(config).init(
        jax.random.fold_in(rng, 1), pack(config, jnp.zeros((2 * config.gan.pack, *shape)))
    )
    players = {
        "generator": TrainState.create(
            g_vars["params"], make_optimizer(config.optimizer), ema=_ema_decay(config) > 0
        ),
        "discriminator": TrainState.create(d_vars["params"], make_optimizer(config.optimizer_d)),
    }
    extra = {"generator_stats": g_vars["batch_stats"]} if _batch_stats(config) else None
    return State.create(rng, players, extra=extra)


def generate(config, g_params, g_stats, z: jax.Array, train: bool):
    """``(samples, new batch statistics)``; ``train`` normalises by the batch's statistics."""
    model = build_generator(config)
    if g_stats is None:
        return model.apply({"params": g_params}, z, train=train), None
    if not train:
        return model.apply({"params": g_params, "batch_stats": g_stats}, z, train=False), g_stats
    out, updates = model.apply(
        {"params": g_params, "batch_stats": g_stats}, z, train=True, mutable=["batch_stats"]
    )
    return out, updates["batch_stats"]


def pack(config, x: jax.Array) -> jax.Array:
    """``[B, ..., C]`` samples as ``[B / m, ..., m C]`` packs for ``m = gan.pack``: consecutive
    samples side by side along the last axis (PacGAN). The identity for ``m = 1``."""
    m = config.gan.pack
    if m == 1:
        return x
    b, *rest = x.shape
    x = jnp.moveaxis(x.reshape(b // m, m, *rest), 1, -2)
    return x.reshape(b // m, *rest[:-1], m * rest[-1])


def _scores(config, d_params, packs):
    return build_discriminator(config).apply({"params": d_params}, packs)


def _noise(config, key, n):
    return jax.random.normal(key, (n, config.model.noise_dim), jnp.float32)


def _confidence(config, scores):
    """What ``d_real`` / ``d_fake`` report: D's probability for the logit losses, else the
    raw score."""
    if config.gan.loss in ("minimax", "nonsaturating"):
        return jnp.mean(jax.nn.sigmoid(scores))
    return jnp.mean(scores)


def discriminator_update(config, state: State, real: jax.Array, key: jax.Array):
    """One discriminator (critic) update on ``real [B, ...]`` (in the generator's output range)
    with the generator fixed. Returns ``(discriminator TrainState, metrics)``."""
    g = config.gan
    gen = state.players["generator"]
    g_stats = state.extra["generator_stats"] if state.extra else None
    z = _noise(config, jax.random.fold_in(key, 0), real.shape[0])
    fake, _ = generate(config, gen.params, g_stats, z, train=True)
    fake = pack(config, jax.lax.stop_gradient(fake))
    real = pack(config, real.astype(jnp.float32))

    def objective(d_params):
        loss, parts = gan_losses.discriminator_objective(
            g.loss,
            lambda x: _scores(config, d_params, x),
            real,
            fake,
            gp_weight=g.gp_weight,
            r1_gamma=g.r1_gamma,
            rng=jax.random.fold_in(key, 1),
        )
        real_scores, fake_scores = parts.pop("real_scores"), parts.pop("fake_scores")
        aux = {
            **parts,
            "d_real": _confidence(config, real_scores),
            "d_fake": _confidence(config, fake_scores),
        }
        if g.loss == "wasserstein":
            aux["wasserstein"] = jnp.mean(real_scores) - jnp.mean(fake_scores)
        return loss, aux

    disc, aux, grad_norm = gradient_step(
        state.players["discriminator"], make_optimizer(config.optimizer_d), objective
    )
    if g.clip > 0:
        disc = disc.replace(params=gan_losses.clip_weights(disc.params, g.clip))
    aux["d_grad_norm"] = grad_norm
    return disc, aux


def generator_update(config, state: State, batch_size: int, key: jax.Array):
    """One generator update with the discriminator fixed. Returns
    ``(generator TrainState, new generator batch statistics or None, metrics)``."""
    g_stats = state.extra["generator_stats"] if state.extra else None
    d_params = state.players["discriminator"].params
    z = _noise(config, key, batch_size)

    def objective(g_params):
        fake, new_stats = generate(config, g_params, g_stats, z, train=True)
        fake_scores = _scores(config, d_params, pack(config, fake))
        loss = gan_losses.generator_loss(config.gan.loss, fake_scores)
        return loss, {"g_loss": loss, "new_stats": new_stats}

    decay = _ema_decay(config) or None
    gen, aux, grad_norm = gradient_step(
        state.players["generator"], make_optimizer(config.optimizer), objective, decay
    )
    new_stats = aux.pop("new_stats")
    aux["g_grad_norm"] = grad_norm
    return gen, new_stats, aux


def adversarial_step(config, state: State, real: jax.Array) -> tuple[State, dict]:
    """The whole step on float samples ``real [n_critic, B, ...]``: the critic scan, then the
    generator update. Metrics of the critic are means over its ``n_critic`` updates."""
    n = config.gan.n_critic
    if real.shape[0] != n:
        raise ValueError(f"adversarial_step: real has {real.shape[0]} batches, n_critic={n}")
    key = state.step_key()

    def critic(disc, inputs):
        batch, j = inputs
        view = state.replace(players={**state.players, "discriminator": disc})
        return discriminator_update(config, view, batch, jax.random.fold_in(key, j))

    # Fully unrolled: XLA's CPU backend runs a rolled scan (a while loop) of conv updates
    # several times slower than the same updates unrolled (docs/notes/cpu.md, "Scans of
    # convolutions"). n_critic is small, so the program stays small.
    # JAX (0.10) still emits a while loop for a scan of length one, even with unroll=True, so
    # one update is a direct call.
    if n == 1:
        disc, d_metrics = critic(state.players["discriminator"], (real[0], 0))
        d_metrics = jax.tree.map(lambda v: v[None], d_metrics)
    else:
        disc, d_metrics = jax.lax.scan(
            critic, state.players["discriminator"], (real, jnp.arange(n)), unroll=True
        )
    state_d = state.replace(players={**state.players, "discriminator": disc})
    gen, new_stats, g_metrics = generator_update(
        config, state_d, real.shape[1], jax.random.fold_in(key, n)
    )
    extra = state.extra if new_stats is None else {**state.extra, "generator_stats": new_stats}
    new_state = state_d.advance(generator=gen).replace(extra=extra)
    metrics = {k: jnp.mean(v) for k, v in d_metrics.items()}
    metrics.update(g_metrics)
    return new_state, metrics


def train_step(config, state: State, batch) -> tuple[State, dict]:
    images = to_model_range(batch["image"])
    if config.gan.n_critic == 1:
        images = images[None]
    return adversarial_step(config, state, images)


def calibrate(config, g_params, g_stats):
    """The batch-norm statistics of generator ``g_params`` itself: each layer's mean and
    variance over ``CALIBRATION`` noise vectors of a fixed key. One train-mode pass from zero
    running statistics leaves ``(1 - BN_MOMENTUM)`` times those of the batch in each."""
    z = _noise(config, jax.random.PRNGKey(0), CALIBRATION)
    zero = jax.tree.map(jnp.zeros_like, g_stats)
    _, stats = generate(config, g_params, zero, z, train=True)
    return jax.tree.map(lambda v: v / (1.0 - BN_MOMENTUM), stats)


def sample(config, state: State, rng: jax.Array, num: int, temperature: float = 1.0) -> Samples:
    """``num`` generator samples for ``z ~ N(0, temperature^2 I)``, mapped from ``[-1, 1]`` to
    ``[0, 1]``: from the EMA weights where the generator keeps them (with their own batch-norm
    statistics, ``calibrate``), else from the weights and their running statistics."""
    gen = state.players["generator"]
    g_stats = state.extra["generator_stats"] if state.extra else None
    if g_stats is not None and gen.ema_params is not None:
        g_stats = calibrate(config, gen.ema_params, g_stats)
    z = temperature * _noise(config, rng, num)
    x, _ = generate(config, gen.inference_params, g_stats, z, train=False)
    if _is_image(config):
        x = jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)
    return Samples(x)


FAMILY = Family(
    name="gan",
    validate_config=validate_config,
    capabilities=capabilities,
    init=init,
    train_step=train_step,
    sample=sample,
    sample_options=SAMPLE_OPTIONS,
)
