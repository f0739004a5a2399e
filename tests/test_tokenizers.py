"""The VQ families' shared tokenizer pieces (``jaxgen.families.tokenizers``): the one tokenizer
factory on each pixel scale, and the codebook in the train state."""

import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxgen import quantize as vq
from jaxgen.families import tokenizers
from jaxgen.families.state import State, TrainState

LEVELS = jnp.array([[-0.5], [0.0], [0.9]])  # a codebook of three 1-D codes


def _config():
    return ml_collections.ConfigDict(
        {"vq": {"num_codes": 3, "dim": 1}, "data": {"image_shape": (2, 2, 1)}}
    )


def _identity(params, x):
    del params
    return x


def test_the_tokenizer_encodes_on_its_pixel_scale_and_decodes_to_unit_images():
    images = jnp.array([0, 64, 191, 255], jnp.uint8).reshape(1, 2, 2, 1)
    frozen = {"params": {}, "codebook": LEVELS}
    # [0, 1] networks see 0, .25, .75, 1: nearest codes 0.0, 0.0, 0.9, 0.9
    unit = tokenizers.vq_tokenizer(_config(), (2, 2), _identity, _identity, pixels="unit")
    assert (unit.num_codes, unit.grid_shape, unit.image_shape) == (3, (2, 2), (2, 2, 1))
    codes = unit.encode(frozen, images)
    np.testing.assert_array_equal(codes.reshape(-1), [1, 1, 2, 2])
    np.testing.assert_allclose(unit.decode(frozen, codes).reshape(-1), [0, 0, 0.9, 0.9])
    # [-1, 1] networks see -1, -.5, .5, 1: nearest -0.5, -0.5, 0.9, 0.9; decoded to [0, 1]
    model = tokenizers.vq_tokenizer(_config(), (2, 2), _identity, _identity, pixels="model")
    codes = model.encode(frozen, images)
    np.testing.assert_array_equal(codes.reshape(-1), [0, 0, 2, 2])
    np.testing.assert_allclose(model.decode(frozen, codes).reshape(-1), [0.25, 0.25, 0.95, 0.95])
    np.testing.assert_allclose(
        tokenizers.round_trip(model, frozen, images), model.decode(frozen, codes)
    )


def test_tokenizer_params_hold_the_networks_and_the_codebook_in_use():
    nets = {"encoder": {"w": jnp.ones(2)}}
    for learned in (True, False):
        params = {**nets, "codebook": LEVELS} if learned else nets
        extra = vq.CodebookState.init(LEVELS * (1 if learned else 2), ema=not learned)
        player = TrainState(params=params, opt_state=None)
        state = State.create(jnp.zeros(2, jnp.uint32), {"model": player}, extra=extra)
        frozen = tokenizers.vq_tokenizer_params(None, state)
        assert sorted(frozen["params"]) == ["encoder"]
        np.testing.assert_array_equal(frozen["codebook"], LEVELS * (1 if learned else 2))
