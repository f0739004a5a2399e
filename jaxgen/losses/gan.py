"""Adversarial losses: discriminator and generator objectives, weight clipping, gradient penalties.

Conventions, everywhere in this module:
- a discriminator (or critic) returns one real score per example, ``[B]`` (``[B, ...]`` for a
  PatchGAN map: every function here averages over all of it);
- GAN losses take *logits* ``l`` with ``D = sigmoid(l)`` and are computed from them in a
  numerically stable way (``log D = -softplus(-l)``, ``log(1 - D) = -softplus(l)``), never
  from probabilities;
- every loss is a scalar that its player *minimises*.

The pairs (discriminator loss, generator loss):

==============  ===============================================  ==============================
kind            discriminator                                    generator
==============  ===============================================  ==============================
minimax         ``-E log D(x) - E log(1 - D(G(z)))``            ``E log(1 - D(G(z)))``
nonsaturating   the same                                         ``-E log D(G(z))``
hinge           ``E relu(1 - l(x)) + E relu(1 + l(G(z)))``       ``-E l(G(z))`` (unbounded)
lsgan           ``(E (l(x) - 1)^2 + E l(G(z))^2) / 2``           ``E (l(G(z)) - 1)^2 / 2``
wasserstein     ``E f(G(z)) - E f(x)``                           ``-E f(G(z))``
==============  ===============================================  ==============================

The hinge and Wasserstein generator losses are unbounded below, so a total loss that goes
negative is not a bug. The Wasserstein critic needs a Lipschitz constraint: weight clipping
(``clip_weights``) or a gradient penalty (``gradient_penalty``).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

LOSSES = ("minimax", "nonsaturating", "hinge", "lsgan", "wasserstein")


def _mean(x: jax.Array) -> jax.Array:
    return jnp.mean(jnp.asarray(x, jnp.float32))


def bce_discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """``-E log D(x) - E log(1 - D(G(z)))``: binary cross-entropy, real labelled 1, fake 0."""
    return _mean(jax.nn.softplus(-real_logits)) + _mean(jax.nn.softplus(fake_logits))


def minimax_generator_loss(fake_logits: jax.Array) -> jax.Array:
    """``E log(1 - D(G(z)))``, the generator's side of the original minimax game.

    Its gradient in the logit is ``-D(G(z))``, which vanishes when the discriminator confidently
    rejects the fakes (``D -> 0``): the saturation that early in training stalls the generator.
    """
    return -_mean(jax.nn.softplus(fake_logits))


def nonsaturating_generator_loss(fake_logits: jax.Array) -> jax.Array:
    """``-E log D(G(z))``: the same fixed point as minimax, but its logit gradient
    ``D(G(z)) - 1`` is largest where the discriminator rejects the fakes."""
    return _mean(jax.nn.softplus(-fake_logits))


def hinge_discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """``E relu(1 - l(x)) + E relu(1 + l(G(z)))``."""
    return _mean(jax.nn.relu(1.0 - real_logits)) + _mean(jax.nn.relu(1.0 + fake_logits))


def hinge_generator_loss(fake_logits: jax.Array) -> jax.Array:
    """``-E l(G(z))`` (unbounded below)."""
    return -_mean(fake_logits)


def lsgan_discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """Least squares with targets 1 (real) and 0 (fake): ``(E (l - 1)^2 + E l_fake^2) / 2``."""
    return 0.5 * (_mean(jnp.square(real_logits - 1.0)) + _mean(jnp.square(fake_logits)))


def lsgan_generator_loss(fake_logits: jax.Array) -> jax.Array:
    """``E (l(G(z)) - 1)^2 / 2``."""
    return 0.5 * _mean(jnp.square(fake_logits - 1.0))


def wasserstein_critic_loss(real_scores: jax.Array, fake_scores: jax.Array) -> jax.Array:
    """``E f(G(z)) - E f(x)``: minus the critic's estimate of the Wasserstein-1 distance."""
    return _mean(fake_scores) - _mean(real_scores)


def wasserstein_generator_loss(fake_scores: jax.Array) -> jax.Array:
    """``-E f(G(z))`` (unbounded below)."""
    return -_mean(fake_scores)


_DISCRIMINATOR = {
    "minimax": bce_discriminator_loss,
    "nonsaturating": bce_discriminator_loss,
    "hinge": hinge_discriminator_loss,
    "lsgan": lsgan_discriminator_loss,
    "wasserstein": wasserstein_critic_loss,
}
_GENERATOR = {
    "minimax": minimax_generator_loss,
    "nonsaturating": nonsaturating_generator_loss,
    "hinge": hinge_generator_loss,
    "lsgan": lsgan_generator_loss,
    "wasserstein": wasserstein_generator_loss,
}


def _check_kind(kind: str) -> None:
    if kind not in LOSSES:
        raise ValueError(f"GAN loss kind={kind!r} is not one of {LOSSES}")


def discriminator_loss(kind: str, real: jax.Array, fake: jax.Array) -> jax.Array:
    """The discriminator's (critic's) loss of ``kind`` (one of ``LOSSES``) on its outputs."""
    _check_kind(kind)
    return _DISCRIMINATOR[kind](real, fake)


def generator_loss(kind: str, fake: jax.Array) -> jax.Array:
    """The generator's loss of ``kind`` (one of ``LOSSES``) on the discriminator's outputs for
    its samples."""
    _check_kind(kind)
    return _GENERATOR[kind](fake)


def discriminator_objective(
    kind: str,
    score: Callable[[jax.Array], jax.Array],
    real: jax.Array,
    fake: jax.Array,
    *,
    gp_weight: float = 0.0,
    r1_gamma: float = 0.0,
    rng: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The discriminator's (critic's) whole objective on a batch of ``real`` and ``fake`` inputs::

        L_D = discriminator_loss(kind) + gp_weight * GP + r1_gamma / 2 * R1

    ``score`` is the discriminator with its parameters bound (``[B, ...] -> [B]`` or a PatchGAN
    map ``[B, ...]``); ``fake`` should already be ``stop_gradient``-ed. The gradient penalty
    (``gradient_penalty``, needs ``rng``) is used when ``gp_weight > 0``, R1 (``r1_penalty``)
    when ``r1_gamma > 0``. Returns ``(L_D, parts)``: ``d_loss`` (the adversarial term alone),
    ``real_scores`` and ``fake_scores`` (the discriminator's outputs), and ``gp`` with
    ``critic_grad_norm`` (the per-example norms' mean) or ``r1`` when those terms are on."""
    real_scores, fake_scores = score(real), score(fake)
    d_loss = discriminator_loss(kind, real_scores, fake_scores)
    parts = {"d_loss": d_loss, "real_scores": real_scores, "fake_scores": fake_scores}
    loss = d_loss
    if gp_weight > 0:
        if rng is None:
            raise ValueError("discriminator_objective: gp_weight > 0 needs rng")
        penalty, norms = gradient_penalty(score, real, fake, rng)
        loss = loss + gp_weight * penalty
        parts.update(gp=penalty, critic_grad_norm=jnp.mean(norms))
    if r1_gamma > 0:
        r1 = r1_penalty(score, real)
        loss = loss + 0.5 * r1_gamma * r1
        parts["r1"] = r1
    return loss, parts


def clip_weights(params, c: float):
    """WGAN's Lipschitz constraint as a parameter transform: every leaf clipped to ``[-c, c]``.

    Apply it after each critic update. It clips biases and normalisation scales too, as the
    WGAN paper's code does (it clamps every parameter)."""
    if not c > 0:
        raise ValueError(f"clip_weights: c={c!r} must be > 0")
    return jax.tree.map(lambda w: jnp.clip(w, -c, c), params)


def per_example_input_grads(score: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
    """``d score(x_b) / d x_b`` for each example ``b``: ``[B, ...]`` like ``x``.

    ``score`` maps a batch ``[B, ...]`` to ``[B]`` (or ``[B, ...]``, a PatchGAN's map: averaged
    per example, as the losses here average it, so that the penalties' strength does not grow
    with the number of patches). Each example is differentiated on its own (``vmap`` of the
    gradient of a batch of one), so the result is the per-example gradient even for a network
    whose examples interact."""

    def one(xb):
        return jnp.mean(score(xb[None]))

    return jax.vmap(jax.grad(one))(x)


def _per_example_norm(g: jax.Array) -> jax.Array:
    flat = g.reshape(g.shape[0], -1).astype(jnp.float32)
    # sqrt of (sum of squares + tiny): finite gradient at an exactly zero input gradient.
    return jnp.sqrt(jnp.sum(jnp.square(flat), axis=-1) + 1e-12)


def gradient_penalty(
    score: Callable[[jax.Array], jax.Array],
    real: jax.Array,
    fake: jax.Array,
    rng: jax.Array,
    target: float = 1.0,
) -> tuple[jax.Array, jax.Array]:
    """WGAN-GP's penalty ``E (|grad_x f(x_hat)|_2 - target)^2`` (multiply by lambda yourself).

    ``x_hat = eps * real + (1 - eps) * fake`` with **one** ``eps ~ U[0, 1]`` **per example**,
    and the norm is taken over each example's flattened gradient (of the mean of a score map).
    Returns ``(penalty, per-example gradient norms [B])``.
    """
    if real.shape != fake.shape:
        raise ValueError(
            f"gradient_penalty: real {real.shape} and fake {fake.shape} must have the same shape"
        )
    eps = jax.random.uniform(rng, (real.shape[0],) + (1,) * (real.ndim - 1), real.dtype)
    x_hat = eps * real + (1.0 - eps) * fake
    norms = _per_example_norm(per_example_input_grads(score, x_hat))
    return jnp.mean(jnp.square(norms - target)), norms


def r1_penalty(score: Callable[[jax.Array], jax.Array], real: jax.Array) -> jax.Array:
    """R1 (Mescheder et al. 2018): ``E_b |grad_x D(x_b)|^2`` on real data; the usual term is
    ``gamma / 2`` times this. For a map of patch logits ``D(x_b)`` is their mean (the logit the
    losses see), so gamma means what it does for one logit per image."""
    g = per_example_input_grads(score, real)
    return jnp.mean(jnp.sum(jnp.square(g.reshape(g.shape[0], -1).astype(jnp.float32)), axis=-1))
