"""The shared train state: optimiser steps, EMA parameters, the step key."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgen.families.state import State, TrainState, ema_decay_at, ema_update, gradient_step


def test_ema_update_is_the_exponential_moving_average():
    ema = {"a": jnp.array([1.0, 2.0]), "b": {"c": jnp.array(4.0)}}
    params = {"a": jnp.array([3.0, 6.0]), "b": {"c": jnp.array(0.0)}}
    same = lambda x, y: jax.tree.map(np.testing.assert_allclose, x, y)  # noqa: E731
    same(ema_update(ema, params, 0.0), params)
    same(ema_update(ema, params, 1.0), ema)
    same(ema_update(ema, params, 0.5), {"a": jnp.array([2.0, 4.0]), "b": {"c": jnp.array(2.0)}})
    # Twice with decay 0.5 toward fixed params: 1/4 of the old value is left.
    twice = ema_update(ema_update(ema, params, 0.5), params, 0.5)
    same(twice, {"a": jnp.array([2.5, 5.0]), "b": {"c": jnp.array(1.0)}})


def test_ema_warmup_forgets_the_initial_parameters_early():
    assert ema_decay_at(0.999, 5) == 0.999  # no warm-up: the decay itself
    assert float(ema_decay_at(0.999, 0, warmup=True)) == pytest.approx(0.1)
    assert float(ema_decay_at(0.999, 90, warmup=True)) == pytest.approx(0.91)
    assert float(ema_decay_at(0.999, 10**6, warmup=True)) == pytest.approx(0.999)
    # Parameters that jump from 0 to 1 at the first step: after 2,000 steps a plain EMA of
    # decay 0.999 still holds 0.999 ** 2000 = 14% of the start; a warmed-up one under 1%.
    for warmup, left in ((False, 0.999**2000), (True, None)):
        ema = jnp.zeros(())
        for step in range(2000):
            ema = ema_update(ema, jnp.ones(()), ema_decay_at(0.999, step, warmup))
        if left is not None:
            assert 1 - float(ema) == pytest.approx(left, rel=1e-3)
        else:
            assert 1 - float(ema) < 0.01


def _quadratic():
    params = {"w": jnp.array([1.0, -2.0, 3.0])}
    return params, lambda p: (jnp.sum(p["w"] ** 2), {"w0": p["w"][0]})


def test_apply_gradients_is_one_optax_step_and_moves_ema_by_its_decay():
    params, objective = _quadratic()
    tx = optax.adam(0.1)
    player = TrainState.create(params, tx, ema=True)
    assert player.ema_params is not player.params  # a copy, not an alias
    new, aux, grad_norm = gradient_step(player, tx, objective, ema_decay=0.9)
    grads = jax.grad(lambda p: objective(p)[0])(params)
    updates, _ = tx.update(grads, tx.init(params), params)
    expected = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(new.params["w"], expected["w"])
    np.testing.assert_allclose(new.ema_params["w"], 0.9 * params["w"] + 0.1 * expected["w"])
    # The EMA weights lag: they are neither the old nor the new parameters.
    assert np.all(np.asarray(new.ema_params["w"]) != np.asarray(new.params["w"]))
    np.testing.assert_allclose(grad_norm, np.linalg.norm(2 * np.asarray(params["w"])))
    assert float(aux["w0"]) == 1.0
    assert new.inference_params is new.ema_params


def test_a_player_without_ema_has_none_and_infers_with_its_params():
    params, objective = _quadratic()
    tx = optax.sgd(0.5)
    player, _, _ = gradient_step(TrainState.create(params, tx), tx, objective)
    assert player.ema_params is None and player.inference_params is player.params
    np.testing.assert_allclose(player.params["w"], 0.0 * params["w"])  # w - 0.5 * 2w = 0
    with pytest.raises(ValueError, match="pass ema_decay"):
        TrainState.create(params, tx, ema=True).apply_gradients(params, tx)


def test_step_key_differs_per_step_and_advance_counts():
    params, _ = _quadratic()
    tx = optax.sgd(0.1)
    state = State.create(jax.random.PRNGKey(0), {"a": TrainState.create(params, tx)})
    later = state.advance()
    assert int(later.step) == 1 and later.players["a"] is state.players["a"]
    keys = {tuple(np.asarray(jax.random.key_data(s.step_key())).ravel()) for s in (state, later)}
    assert len(keys) == 2
