"""A tokenizer that lives in the tests: each 4x4 patch's mean brightness, quantised to K levels
(its codes) or not (its continuous latents).

It implements only the ``Tokenizer`` interface of the contract (no VQ-VAE code), so a prior
trained on it shows that priors depend on that interface alone. Its one parameter, ``levels``
(the K grey values a code decodes to), is "trained" to the data's patch-mean quantiles in a
single step. ``config.family = "tests.fake_tokenizer_family"``.
"""

import jax.numpy as jnp

from jaxgen.engine.config import base_config
from jaxgen.families import Capabilities, Family, Tokenizer
from jaxgen.families.common import to_unit_interval
from jaxgen.families.state import State

K = 8
PATCH = 4


def get_config():
    c = base_config()
    c.family = "tests.fake_tokenizer_family"
    c.data.source = "shapes"
    c.data.image_shape = (16, 16, 1)
    c.data.num_train, c.data.num_test = 256, 64
    c.train.batch_size = 16
    c.train.num_steps = 1
    c.train.eval_every = 0
    c.train.sample_every = 0
    c.train.checkpoint_every = 0
    c.train.progress = False
    c.eval.batch_size = 16
    return c


def _patch_means(images):
    x = to_unit_interval(images)
    b, h, w, c = x.shape
    x = x.reshape(b, h // PATCH, PATCH, w // PATCH, PATCH, c)
    return x.mean(axis=(2, 4, 5))


def encode(frozen, images):
    m = _patch_means(images)
    return jnp.argmin(jnp.abs(m[..., None] - frozen["levels"]), axis=-1).astype(jnp.int32)


def decode(frozen, codes):
    values = jnp.take(frozen["levels"], codes)
    values = jnp.repeat(jnp.repeat(values, PATCH, axis=1), PATCH, axis=2)
    return jnp.clip(values[..., None], 0.0, 1.0)


def encode_latents(frozen, images):
    """Continuous latents ``[B, h, w, 1]``: the patch means, centred on the levels' mean (so
    they depend on the first stage's parameters, which must never get a gradient)."""
    return (_patch_means(images) - frozen["levels"].mean())[..., None]


def decode_latents(frozen, latents):
    values = latents[..., 0] + frozen["levels"].mean()
    values = jnp.repeat(jnp.repeat(values, PATCH, axis=1), PATCH, axis=2)
    return jnp.clip(values[..., None], 0.0, 1.0)


def init(config, rng, example_batch):
    del config, example_batch
    return State.create(rng, {}, extra={"levels": jnp.linspace(0.0, 1.0, K)})


def train_step(config, state, batch):
    del config
    levels = jnp.quantile(_patch_means(batch["image"]), jnp.linspace(0.0, 1.0, K))
    return state.replace(step=state.step + 1, extra={"levels": levels}), {"loss": levels.mean()}


def eval_step(config, state, batch):
    frozen = tokenizer_params(config, state)
    x_hat = decode(frozen, encode(frozen, batch["image"]))
    return {"mse": jnp.mean((x_hat - to_unit_interval(batch["image"])) ** 2)}


def tokenizer(config):
    h, w, _ = config.data.image_shape
    return Tokenizer(
        num_codes=K,
        grid_shape=(h // PATCH, w // PATCH),
        image_shape=tuple(config.data.image_shape),
        encode=encode,
        decode=decode,
        latent_dim=1,
        encode_latents=encode_latents,
        decode_latents=decode_latents,
    )


def tokenizer_params(config, state):
    del config
    return {"levels": state.extra["levels"]}


FAMILY = Family(
    name="tests.fake_tokenizer_family",
    validate_config=lambda config: None,
    capabilities=lambda config: Capabilities(is_tokenizer=True),
    init=init,
    train_step=train_step,
    eval_step=eval_step,
    tokenizer=tokenizer,
    tokenizer_params=tokenizer_params,
)
