"""The train state every family shares: one ``TrainState`` per player inside one ``State``.

A player is a network with its own optimiser: the one model of a VAE, or a GAN's generator and
discriminator. ``State`` is what goes in and out of ``train_step`` and into checkpoints::

    State(step, rng, players={"model": TrainState(params, opt_state, ema_params)},
          extra=<family-owned state>, frozen=<a trained first stage's parameters>,
          constants=<fixed arrays the family rebuilds from its config>)

The optimiser (an ``optax.GradientTransformation``) is not stored: the family rebuilds it from
its config in every step, so the state is a plain pytree of arrays that orbax saves as is,
less ``constants``: fixed arrays such as the VQ-GAN's LPIPS network, which the jitted step takes
as an argument (rather than compiling megabytes into the program) but which no checkpoint needs
to hold, because ``Family.constants(config)`` rebuilds them (``Setup.restore`` in the engine).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

# optax.global_norm is deprecated in favour of optax.tree.norm (newer optax).
global_norm = getattr(getattr(optax, "tree", None), "norm", None) or optax.global_norm


def ema_decay_at(decay, step, warmup: bool = False):
    """The EMA decay for the update after ``step`` steps: ``decay``, or with ``warmup``
    ``min(decay, (1 + step) / (10 + step))`` (TensorFlow's ``num_updates`` rule, which latent
    diffusion's EMA uses). An EMA that starts at the initial parameters keeps ``decay ** n`` of
    them after n steps (0.999 over 2,000 steps: 14%); warm-up lets it forget them early, which
    matters for short runs and for outputs nothing clips (a zero-initialised last layer shrinks
    every prediction by that share)."""
    if not warmup:
        return decay
    step = jnp.asarray(step, jnp.float32)
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def ema_update(ema_params, params, decay):
    """``decay * ema + (1 - decay) * params``, leaf by leaf."""
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema_params, params)


@flax.struct.dataclass
class TrainState:
    """One player's parameters, optimiser state and, when kept, EMA parameters."""

    params: Any
    opt_state: Any
    ema_params: Any = None

    @classmethod
    def create(cls, params, tx: optax.GradientTransformation, ema: bool = False) -> TrainState:
        ema_params = jax.tree.map(jnp.copy, params) if ema else None
        return cls(params=params, opt_state=tx.init(params), ema_params=ema_params)

    def apply_gradients(self, grads, tx: optax.GradientTransformation, ema_decay=None):
        """One optimiser step; with EMA parameters, ``ema_decay`` moves them toward the new
        parameters (``ema = decay * ema + (1 - decay) * params``)."""
        updates, opt_state = tx.update(grads, self.opt_state, self.params)
        params = optax.apply_updates(self.params, updates)
        ema_params = self.ema_params
        if ema_params is not None:
            if ema_decay is None:
                raise ValueError("this TrainState keeps EMA parameters: pass ema_decay")
            ema_params = ema_update(ema_params, params, ema_decay)
        return self.replace(params=params, opt_state=opt_state, ema_params=ema_params)

    @property
    def inference_params(self):
        """The EMA parameters where they are kept, else the parameters."""
        return self.params if self.ema_params is None else self.ema_params


@flax.struct.dataclass
class State:
    """``step`` and ``rng`` (a step's key is ``fold_in(rng, step)``), the players by name,
    ``extra`` state the family owns (an EMA codebook, code-usage counters), ``frozen``
    parameters of a trained first stage, which get no gradient, and ``constants``, which get
    no gradient either and are not checkpointed (``Family.constants`` rebuilds them)."""

    step: jax.Array
    rng: jax.Array
    players: dict[str, TrainState]
    extra: Any = None
    frozen: Any = None
    constants: Any = None

    @classmethod
    def create(
        cls,
        rng: jax.Array,
        players: dict[str, TrainState],
        extra=None,
        frozen=None,
        constants=None,
    ):
        return cls(jnp.zeros((), jnp.int32), rng, dict(players), extra, frozen, constants)

    @property
    def model(self) -> TrainState:
        """The player of a one-player family (named ``model``)."""
        return self.players["model"]

    def step_key(self) -> jax.Array:
        """This step's PRNG key: ``fold_in(rng, step)``."""
        return jax.random.fold_in(self.rng, self.step)

    def advance(self, **players: TrainState) -> State:
        """The next step's state with the given players replaced."""
        return self.replace(step=self.step + 1, players={**self.players, **players})


def gradient_step(
    player: TrainState,
    tx: optax.GradientTransformation,
    objective: Callable,
    ema_decay=None,
) -> tuple[TrainState, Any, jax.Array]:
    """Differentiate ``objective(params) -> (loss, aux)`` at the player's parameters and apply
    one optimiser step. Returns ``(player, aux, grad_norm)``."""
    grads, aux = jax.grad(objective, has_aux=True)(player.params)
    return player.apply_gradients(grads, tx, ema_decay), aux, global_norm(grads)
