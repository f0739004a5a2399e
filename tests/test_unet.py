"""The UNet: DDPM's size, conditioning on time and class, gradient flow, mixed precision."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from support import ROOT, load_config

from jaxgen.families import diffusion
from jaxgen.nn.unet import UNet, count_params, num_groups, timestep_embedding

SHAPE = (4, 16, 16, 1)
NUM_CLASSES = 3


def _tiny(**kwargs):
    settings = dict(
        channels=8,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(8,),
        dropout=0.0,
        num_classes=NUM_CLASSES,
    )
    settings.update(kwargs)
    return UNet(**settings)


def _inputs():
    x = jax.random.uniform(jax.random.PRNGKey(1), SHAPE, minval=-1.0, maxval=1.0)
    t = jnp.array([0.1, 0.3, 0.6, 0.9], jnp.float32)
    y = jnp.array([0, 1, 2, 0], jnp.int32)
    return x, t, y


def _perturbed(params, scale=0.1):
    """Params with noise added to every leaf: the zero-initialised layers (which make the
    freshly initialised model output 0 and block gradients) become live."""
    flat, unravel = ravel_pytree(params)
    return unravel(flat + scale * jax.random.normal(jax.random.PRNGKey(42), flat.shape))


@pytest.fixture(scope="module")
def tiny_model_and_params():
    """The tiny conditional UNet, its fresh params and perturbed ones (jitted: fast on CPU)."""
    model = _tiny()
    key = jax.random.key(0, impl="rbg")
    params = jax.jit(model.init)(key, *_inputs())["params"]
    return model, params, jax.jit(_perturbed)(params)


def test_ddpm_cifar10_unet_has_35_7m_parameters():
    config = load_config(ROOT / "configs" / "diffusion.py", "cifar10")
    n = count_params(diffusion.build_model(config), config.data.image_shape)
    assert 35.0e6 <= n <= 36.5e6, n  # Ho et al. (2020) report 35.7M


def test_group_counts_keep_several_channels_per_group():
    assert [num_groups(c) for c in (8, 24, 40, 64, 128, 256, 7)] == [2, 6, 10, 16, 32, 32, 1]


def test_time_embedding_tells_neighbouring_steps_apart():
    # t in (0, 1] is scaled by 1000, so steps 1/1000 apart get clearly different features.
    emb = timestep_embedding(jnp.array([1.0, 2.0, 999.0, 1000.0]), 32)
    assert emb.shape == (4, 32)
    assert float(jnp.abs(emb[0] - emb[1]).max()) > 0.1
    assert float(jnp.abs(emb[2] - emb[3]).max()) > 0.1


@pytest.mark.slow
def test_fresh_model_predicts_zero(tiny_model_and_params):
    # The output convolution starts at zero: the untrained model predicts eps = 0.
    model, params, _ = tiny_model_and_params
    out = jax.jit(model.apply)({"params": params}, *_inputs())
    assert out.shape == SHAPE and out.dtype == jnp.float32
    np.testing.assert_array_equal(out, 0.0)


@pytest.mark.slow
def test_output_depends_on_time_and_label(tiny_model_and_params):
    model, _, params = tiny_model_and_params
    x, t, y = _inputs()
    apply = jax.jit(lambda t, y: model.apply({"params": params}, x, t, y))
    base = apply(t, y)

    def differs(a, b):
        return float(jnp.abs(a - b).max()) > 1e-3

    assert differs(base, apply(t + 0.05, y))
    assert differs(base, apply(t, (y + 1) % NUM_CLASSES))
    null = jnp.full_like(y, NUM_CLASSES)
    assert differs(base, apply(t, null))
    # No labels means the null class.
    unlabelled = jax.jit(lambda t: model.apply({"params": params}, x, t, None))(t)
    np.testing.assert_allclose(unlabelled, apply(t, null), atol=1e-5)
    # Each example's output depends only on its own time and label.
    out2 = apply(t.at[0].set(0.95), y.at[0].set(2))
    assert differs(base[0], out2[0])
    np.testing.assert_allclose(base[1:], out2[1:], atol=1e-5)


def test_unconditional_model_refuses_labels():
    model = _tiny(num_classes=0)
    x, t, y = _inputs()
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, t)["params"]
    assert "class_emb" not in shapes
    with pytest.raises(ValueError, match="unconditional"):
        jax.eval_shape(model.init, jax.random.PRNGKey(0), x, t, y)


@pytest.mark.slow
def test_gradients_reach_every_parameter(tiny_model_and_params):
    model, _, params = tiny_model_and_params
    x, t, y = _inputs()
    target = jax.random.normal(jax.random.PRNGKey(5), x.shape)
    loss = lambda p: jnp.mean((model.apply({"params": p}, x, t, y) - target) ** 2)
    grads = jax.jit(jax.grad(loss))(params)
    leaves = jax.tree_util.tree_leaves_with_path(grads)
    assert len(leaves) > 50
    for path, g in leaves:
        assert np.any(np.asarray(g) != 0), f"{jax.tree_util.keystr(path)} got no gradient"


@pytest.mark.slow
def test_dropout_is_random_in_training_and_off_in_evaluation(tiny_model_and_params):
    _, _, params = tiny_model_and_params
    model = _tiny(dropout=0.5)  # dropout has no parameters: the same params fit
    x, t, y = _inputs()
    apply = jax.jit(
        lambda rng, det: model.apply(
            {"params": params}, x, t, y, deterministic=det, rngs={"dropout": rng}
        ),
        static_argnums=1,
    )
    a, b = apply(jax.random.PRNGKey(1), False), apply(jax.random.PRNGKey(2), False)
    assert float(jnp.abs(a - b).max()) > 1e-3
    np.testing.assert_array_equal(
        apply(jax.random.PRNGKey(1), True), apply(jax.random.PRNGKey(2), True)
    )


@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_params_and_close_outputs(tiny_model_and_params):
    model, _, params = tiny_model_and_params
    mixed = _tiny(dtype=jnp.bfloat16)
    x, t, y = _inputs()
    shapes = jax.eval_shape(mixed.init, jax.random.PRNGKey(0), x, t, y)["params"]
    assert {leaf.dtype for leaf in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float32)}
    full = jax.jit(model.apply)({"params": params}, x, t, y)
    half = jax.jit(mixed.apply)({"params": params}, x, t, y)
    assert half.dtype == jnp.float32
    assert float(jnp.abs(half - full).max()) > 0  # bfloat16 was really used
    rel = float(jnp.linalg.norm(half - full) / jnp.linalg.norm(full))
    assert rel < 0.05, rel
