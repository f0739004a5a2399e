"""The adversarial losses, weight clipping and gradient penalties of jaxgen.losses.gan."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.losses import gan as L

REAL = jnp.array([2.0, -1.0, 0.5, 30.0])
FAKE = jnp.array([-3.0, 0.2, 1.5, -40.0])


def _sig(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def test_losses_equal_their_closed_forms_on_hand_made_logits():
    r, f = np.asarray(REAL, np.float64), np.asarray(FAKE, np.float64)
    # log terms written out from the probabilities (float64, moderate logits only).
    rm, fm = r[:3], f[:3]
    d_bce = -np.mean(np.log(_sig(rm))) - np.mean(np.log(1 - _sig(fm)))
    np.testing.assert_allclose(L.bce_discriminator_loss(REAL[:3], FAKE[:3]), d_bce, rtol=1e-5)
    np.testing.assert_allclose(
        L.minimax_generator_loss(FAKE[:3]), np.mean(np.log(1 - _sig(fm))), rtol=1e-5
    )
    np.testing.assert_allclose(
        L.nonsaturating_generator_loss(FAKE[:3]), -np.mean(np.log(_sig(fm))), rtol=1e-5
    )
    hinge_d = np.mean(np.maximum(0, 1 - r)) + np.mean(np.maximum(0, 1 + f))
    np.testing.assert_allclose(L.hinge_discriminator_loss(REAL, FAKE), hinge_d, rtol=1e-6)
    np.testing.assert_allclose(L.hinge_generator_loss(FAKE), -np.mean(f), rtol=1e-6)
    ls_d = 0.5 * (np.mean((r - 1) ** 2) + np.mean(f**2))
    np.testing.assert_allclose(L.lsgan_discriminator_loss(REAL, FAKE), ls_d, rtol=1e-6)
    np.testing.assert_allclose(L.lsgan_generator_loss(FAKE), 0.5 * np.mean((f - 1) ** 2), rtol=1e-6)
    np.testing.assert_allclose(
        L.wasserstein_critic_loss(REAL, FAKE), f.mean() - r.mean(), rtol=1e-6
    )
    np.testing.assert_allclose(L.wasserstein_generator_loss(FAKE), -f.mean(), rtol=1e-6)
    # The dispatchers route each kind to its pair.
    assert L.discriminator_loss("minimax", REAL, FAKE) == L.bce_discriminator_loss(REAL, FAKE)
    assert L.generator_loss("hinge", FAKE) == L.hinge_generator_loss(FAKE)
    with pytest.raises(ValueError, match=r"kind='wgan' is not one of"):
        L.generator_loss("wgan", FAKE)


def test_logit_losses_are_stable_at_extreme_logits():
    big = jnp.array([80.0, -80.0, 200.0])
    for value in (
        L.bce_discriminator_loss(big, -big),
        L.minimax_generator_loss(big),
        L.nonsaturating_generator_loss(-big),
    ):
        assert np.isfinite(float(value))
    # A confident, correct discriminator has (almost) zero loss; a fooled one a large one.
    assert float(L.bce_discriminator_loss(jnp.array([50.0]), jnp.array([-50.0]))) < 1e-20
    np.testing.assert_allclose(L.nonsaturating_generator_loss(jnp.array([-50.0])), 50.0, rtol=1e-6)


def test_minimax_generator_gradient_vanishes_where_d_is_confident_and_nonsaturating_does_not():
    """The notes' 'diminished gradient': with D rejecting the fakes confidently (logit -10,
    D = 4.5e-5), d/dlogit of log(1 - D) is -D (about 0) while that of -log D is D - 1 (about -1)."""
    confident = jnp.array([-10.0])
    g_minimax = jax.grad(lambda f: L.minimax_generator_loss(f))(confident)
    g_ns = jax.grad(lambda f: L.nonsaturating_generator_loss(f))(confident)
    np.testing.assert_allclose(g_minimax, -_sig(-10.0), rtol=1e-4)
    np.testing.assert_allclose(g_ns, _sig(-10.0) - 1.0, rtol=1e-4)
    assert abs(float(g_minimax[0])) < 1e-4 < 0.99 < abs(float(g_ns[0]))
    # Where D is fooled (logit +10) it is the other way round.
    fooled = jnp.array([10.0])
    assert abs(float(jax.grad(L.minimax_generator_loss)(fooled)[0])) > 0.99
    assert abs(float(jax.grad(L.nonsaturating_generator_loss)(fooled)[0])) < 1e-4


def test_clipping_puts_every_weight_in_range():
    params = {
        "a": {"kernel": jnp.linspace(-1, 1, 12).reshape(3, 4), "bias": jnp.array([0.5, -0.002])},
        "b": jnp.array(7.0),
    }
    out = L.clip_weights(params, 0.01)
    for leaf in jax.tree.leaves(out):
        assert float(jnp.max(jnp.abs(leaf))) <= 0.01
    np.testing.assert_array_equal(out["a"]["bias"], np.float32([0.01, -0.002]))  # -0.002 kept
    with pytest.raises(ValueError, match=r"c=0 must be > 0"):
        L.clip_weights(params, 0)


def _linear_critic(w):
    return lambda x: x.reshape(x.shape[0], -1) @ w.reshape(-1)


def test_penalty_is_zero_for_a_unit_norm_linear_critic_and_positive_otherwise():
    key = jax.random.PRNGKey(0)
    real = jax.random.normal(jax.random.fold_in(key, 1), (16, 4, 4, 2))
    fake = jax.random.normal(jax.random.fold_in(key, 2), (16, 4, 4, 2))
    w = jax.random.normal(jax.random.fold_in(key, 3), (4, 4, 2))
    unit = w / jnp.linalg.norm(w)
    penalty, norms = L.gradient_penalty(_linear_critic(unit), real, fake, key)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
    assert float(penalty) < 1e-9
    for scale in (0.5, 2.0):
        penalty, norms = L.gradient_penalty(_linear_critic(scale * unit), real, fake, key)
        np.testing.assert_allclose(norms, scale, rtol=1e-5)
        np.testing.assert_allclose(penalty, (scale - 1.0) ** 2, rtol=1e-4)


def test_penalty_uses_one_coefficient_per_example_and_per_example_norms():
    """A critic f(x) = sum(x^2) / 2 has gradient x, so the norms are |x_hat_b| and reveal the
    interpolation: with real = 0 and fake = 1, x_hat_b = 1 - eps_b everywhere in example b."""
    key = jax.random.PRNGKey(3)
    real = jnp.zeros((64, 3, 3, 1))
    fake = jnp.ones((64, 3, 3, 1))
    critic = lambda x: 0.5 * jnp.sum(jnp.square(x).reshape(x.shape[0], -1), axis=-1)  # noqa: E731
    _, norms = L.gradient_penalty(critic, real, fake, key)
    one_minus_eps = np.asarray(norms) / 3.0  # |x_hat_b| = (1 - eps_b) * sqrt(9)
    assert np.all((one_minus_eps >= 0) & (one_minus_eps <= 1 + 1e-6))
    # One coefficient per example: they differ across the batch (a shared one would not) and
    # spread over [0, 1] like U[0, 1].
    assert np.unique(np.round(one_minus_eps, 6)).size == 64
    assert 0.15 < np.std(one_minus_eps) < 0.45


def test_penalty_grads_do_not_mix_examples():
    """The per-example gradient of a critic whose examples interact (a batch-mean term) is
    taken on each example alone, so it equals the single-example gradient."""
    key = jax.random.PRNGKey(1)
    x = jax.random.normal(key, (5, 3))
    critic = lambda x: jnp.sum(x, axis=-1) - jnp.mean(x)  # noqa: E731
    grads = L.per_example_input_grads(critic, x)
    # A batch of one: d/dx (sum x - mean x) = 1 - 1/3 per entry.
    np.testing.assert_allclose(grads, np.full((5, 3), 1 - 1 / 3), rtol=1e-6)


def test_r1_is_the_mean_squared_input_gradient_on_real_data():
    w = jnp.array([3.0, 4.0])
    real = jnp.ones((8, 2))
    np.testing.assert_allclose(L.r1_penalty(_linear_critic(w), real), 25.0, rtol=1e-6)
    quad = lambda x: jnp.sum(jnp.square(x), axis=-1)  # noqa: E731  grad 2x
    x = jnp.array([[1.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(L.r1_penalty(quad, x), (4.0 + 16.0) / 2, rtol=1e-6)


def test_penalties_of_a_patch_map_do_not_grow_with_the_number_of_patches():
    """A PatchGAN whose map repeats one logit P times is, to the losses (which average the
    map), the same discriminator as that logit: R1 and the gradient penalty agree too."""
    key = jax.random.PRNGKey(5)
    real = jax.random.normal(jax.random.fold_in(key, 1), (6, 4, 4, 2))
    fake = jax.random.normal(jax.random.fold_in(key, 2), (6, 4, 4, 2))
    w = jax.random.normal(jax.random.fold_in(key, 3), (4, 4, 2))
    one = _linear_critic(w)
    for side in (1, 5):
        patches = lambda x, s=side: jnp.broadcast_to(one(x)[:, None, None], (x.shape[0], s, s))  # noqa: E731
        np.testing.assert_allclose(L.r1_penalty(patches, real), L.r1_penalty(one, real), rtol=1e-5)
        np.testing.assert_allclose(
            L.gradient_penalty(patches, real, fake, key)[0],
            L.gradient_penalty(one, real, fake, key)[0],
            rtol=1e-5,
        )


def test_discriminator_objective_adds_each_penalty_with_its_weight():
    """A linear critic with |w| = 5 has input gradient norm 5 everywhere: GP = (5 - 1)^2 = 16
    and R1 = 25, whatever the interpolation, so the total is known in closed form."""
    w = jnp.array([3.0, 4.0])
    real = jnp.array([[1.0, 0.0], [0.0, -1.0], [0.5, 0.5]])
    fake = jnp.array([[-1.0, 0.0], [0.2, 0.1], [0.0, 0.0]])
    critic = _linear_critic(w)
    hinge = np.mean(np.maximum(0, 1 - critic(real))) + np.mean(np.maximum(0, 1 + critic(fake)))
    key = jax.random.PRNGKey(0)
    loss, parts = L.discriminator_objective("hinge", critic, real, fake)
    np.testing.assert_allclose(loss, hinge, rtol=1e-6)
    assert sorted(parts) == ["d_loss", "fake_scores", "real_scores"]
    np.testing.assert_allclose(parts["real_scores"], critic(real))
    loss, parts = L.discriminator_objective(
        "hinge", critic, real, fake, gp_weight=10.0, r1_gamma=2.0, rng=key
    )
    np.testing.assert_allclose(loss, hinge + 10.0 * 16.0 + 0.5 * 2.0 * 25.0, rtol=1e-5)
    np.testing.assert_allclose(parts["d_loss"], hinge, rtol=1e-6)
    np.testing.assert_allclose([parts["gp"], parts["critic_grad_norm"], parts["r1"]], [16, 5, 25])
    with pytest.raises(ValueError, match="gp_weight > 0 needs rng"):
        L.discriminator_objective("wasserstein", critic, real, fake, gp_weight=10.0)
