"""A family that lives in the tests, not in jaxgen: two players with two optimisers, three data
batches a step, no held-out metrics and no ``loss`` metric. It exists to show that such a family
(a GAN's shape) trains, checkpoints, resumes and samples through the engine and ``sample.py``
unchanged. ``config.family = "tests.two_player_family"``.

It also keeps a fixed array in ``State.constants`` (as the VQ-GAN keeps its LPIPS network): the
critic sees images through a fixed pixel weighting, which checkpoints leave out and ``constants``
rebuilds on restore.

Generator: an affine map of 4-d noise to images. Critic: a linear score. Each step makes
``n_critic = 3`` critic updates (one per data batch, as one ``lax.scan``) with the generator
fixed, then one generator update with the critic fixed; Wasserstein-style losses on a
weight-clipped critic keep it small and stable.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxgen.engine.config import base_config
from jaxgen.families import Capabilities, Family, SampleOption, Samples
from jaxgen.families.common import to_unit_interval
from jaxgen.families.state import State, TrainState, gradient_step

N_CRITIC = 3
NOISE = 4


def get_config():
    c = base_config()
    c.family = "tests.two_player_family"
    c.data.source = "shapes"
    c.data.image_shape = (8, 8, 1)
    c.data.num_train, c.data.num_test = 128, 32
    c.train.batch_size = 8
    c.train.num_steps = 6
    c.train.log_every = 1
    c.train.eval_every = 0
    c.train.sample_every = 0
    c.train.sample_num = 4
    c.train.checkpoint_every = 0
    c.train.progress = False
    c.eval.batch_size = 8
    c.clip = 0.1
    c.optimizer_g = ml_collections.ConfigDict({"learning_rate": 1e-2})
    c.optimizer_d = ml_collections.ConfigDict({"learning_rate": 5e-2})
    return c


def _tx_g(config):
    return optax.adam(config.optimizer_g.learning_rate)


def _tx_d(config):
    return optax.sgd(config.optimizer_d.learning_rate)


def validate_config(config):
    del config


def capabilities(config):
    del config
    return Capabilities(
        generates=True, held_out=False, batches_per_step=N_CRITIC, progress_metric="g_loss"
    )


def _generate(config, g_params, z):
    pixels = z @ g_params["w"] + g_params["b"]
    return jax.nn.sigmoid(pixels).reshape(z.shape[0], *config.data.image_shape)


def _critic(d_params, images, constants):
    return images.reshape(images.shape[0], -1) @ (constants["pixel_weights"] * d_params["w"])


def constants(config):
    """A fixed pixel weighting of the critic's input (host arrays, rebuilt on every restore)."""
    size = int(np.prod(config.data.image_shape))
    return {"pixel_weights": np.linspace(0.5, 1.5, size, dtype=np.float32)}


def init(config, rng, example_batch):
    size = 1
    for s in config.data.image_shape:
        size *= s
    g = {
        "w": 0.1 * jax.random.normal(jax.random.fold_in(rng, 0), (NOISE, size)),
        "b": jnp.zeros((size,)),
    }
    d = {"w": 0.01 * jax.random.normal(jax.random.fold_in(rng, 1), (size,))}
    players = {
        "generator": TrainState.create(g, _tx_g(config)),
        "discriminator": TrainState.create(d, _tx_d(config)),
    }
    return State.create(rng, players, constants=constants(config))


def train_step(config, state, batch):
    key = state.step_key()
    g_params = state.players["generator"].params

    def critic_update(player, inputs):
        images, j = inputs
        z = jax.random.normal(jax.random.fold_in(key, j), (images.shape[0], NOISE))
        fake = _generate(config, g_params, z)
        real = to_unit_interval(images)

        def objective(d):
            fixed = state.constants
            loss = jnp.mean(_critic(d, fake, fixed)) - jnp.mean(_critic(d, real, fixed))
            return loss, loss

        player, loss, _ = gradient_step(player, _tx_d(config), objective)
        clipped = jax.tree.map(lambda w: jnp.clip(w, -config.clip, config.clip), player.params)
        return player.replace(params=clipped), loss

    critic, d_losses = jax.lax.scan(
        critic_update, state.players["discriminator"], (batch["image"], jnp.arange(N_CRITIC))
    )
    z = jax.random.normal(jax.random.fold_in(key, N_CRITIC), (batch["image"].shape[1], NOISE))

    def g_objective(g):
        loss = -jnp.mean(_critic(critic.params, _generate(config, g, z), state.constants))
        return loss, loss

    generator, g_loss, _ = gradient_step(state.players["generator"], _tx_g(config), g_objective)
    metrics = {
        "d_loss": d_losses[-1],
        "g_loss": g_loss,
        # What the engine fed this step: tests compare it with the data stream.
        "index_sum": jnp.sum(batch["index"]).astype(jnp.float32),
    }
    return state.advance(generator=generator, discriminator=critic), metrics


def sample(config, state, rng, num, steps=3):
    """The mean of ``steps`` generator draws per image (an option named like diffusion's)."""
    z = jax.random.normal(rng, (steps, num, NOISE))
    g = state.players["generator"].params
    return Samples(jnp.mean(jax.vmap(lambda zz: _generate(config, g, zz))(z), axis=0))


FAMILY = Family(
    name="tests.two_player_family",
    validate_config=validate_config,
    capabilities=capabilities,
    init=init,
    train_step=train_step,
    sample=sample,
    sample_options=(SampleOption("steps", 3, "Generator draws averaged per image."),),
    constants=constants,
)
