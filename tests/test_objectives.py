"""Every training objective scores what it claims to score: inputs and targets line up.

Each family's loss is checked through its public ``train_step`` / ``eval_step`` against the same
number computed directly from ``model.apply`` (or, where the network is random, from a network
whose outputs are known in closed form), so that a target taken from the wrong place, a shift
that lets a position see its own target, or a loss weight on the wrong positions changes a
number the test pins:

- GPT: the NLL is teacher-forced (``logits[:, i]`` from ``c_<i`` scores ``c_i``), its targets are
  the clean codes whatever ``pkeep`` did to the inputs, and no position sees its own target;
- MaskGIT: the masked positions are fed ``[MASK]``, and only they are scored;
- PixelCNN: the NLL is the network's cross-entropy of the codes it was fed;
- diffusion: an oracle that knows ``x0`` has zero loss for each prediction type and schedule;
- VQ-GAN: the discriminator scores the batch as real and its reconstruction as fake.

The priors run over the fake tokenizer of the tests (``fake_tokenizer_family``), whose codes can
be written straight into the images: a 4x4 patch of grey level ``levels[c]`` is code ``c``.
"""

from __future__ import annotations

import math

import fake_tokenizer_family as fake
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from support import ROOT, load_config

from jaxgen import diffusion as dfn
from jaxgen import quantize as vq
from jaxgen.families import diffusion, gpt, maskgit, pixelcnn, tokenizers, vqgan
from jaxgen.families.common import make_optimizer

B = 16  # examples per batch
H = W = 16 // fake.PATCH  # the fake tokenizer's code grid
N = H * W  # codes per image
K = fake.K  # codes
LEVELS = jnp.linspace(0.0, 1.0, K)  # the fake tokenizer's decoded grey levels


# --- priors over the fake tokenizer's codes ---------------------------------------------------


def _prior_config(name: str):
    """A tiny class-conditional prior whose first stage is the fake tokenizer (attached without
    a run on disk), trained on the true classes so that its loss is deterministic. The tests of
    one family share this config, so their steps compile once (the persistent XLA cache)."""
    config = load_config(ROOT / "configs" / f"{name}.py", "mnist,tiny,cond")
    config.data = fake.get_config().data
    config.first_stage.config = fake.get_config()
    config.model.p_uncond = 0.0
    return config


def _images(codes: jax.Array) -> jax.Array:
    """uint8 images ``[B, 16, 16, 1]`` that the fake tokenizer encodes to ``codes [B, H, W]``."""
    grey = jnp.round(LEVELS[codes] * 255.0).astype(jnp.uint8)
    return jnp.repeat(jnp.repeat(grey, fake.PATCH, axis=1), fake.PATCH, axis=2)[..., None]


def _batch(codes: jax.Array) -> dict:
    """A batch whose images encode to ``codes [B, N]``, with labels ``0, 1, .., 9, 0, ..``."""
    b = codes.shape[0]
    images = _images(codes.reshape(b, H, W))
    frozen = {"levels": LEVELS}
    np.testing.assert_array_equal(fake.encode(frozen, images).reshape(b, N), codes)
    return {"image": images, "label": jnp.arange(b) % 10, "index": jnp.arange(b)}


def _random_codes(seed: int = 0) -> jax.Array:
    return jax.random.randint(jax.random.PRNGKey(seed), (B, N), 0, K)


def _prior_state(family, config, batch, seed: int = 0):
    """A fresh prior's state with the fake tokenizer's levels as its frozen first stage."""
    init = jax.jit(lambda r, b: family.FAMILY.init(config, r, b))  # faster than eager
    state = init(jax.random.PRNGKey(seed), batch)
    return state.replace(frozen={"levels": LEVELS})


def _run(family, config, state, batch) -> tuple[dict, dict]:
    """``(train metrics, eval metrics)`` of one step from ``state`` (eval at ``state``), in one
    program: the tests of a family and config share its compilation."""

    def both(s, b):
        return family.FAMILY.train_step(config, s, b)[1], family.FAMILY.eval_step(config, s, b)

    return jax.device_get(jax.jit(both)(state, batch))


def _with_params(state, params):
    return state.replace(players={**state.players, "model": state.model.replace(params=params)})


def _nll_bits(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean of ``-log2 softmax(logits)[target]``, written out."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    return -picked.mean() / math.log(2.0)


def _zeros_but(params, keep: tuple[str, ...]):
    """``params`` with every top-level entry not named in ``keep`` set to zeros. Zeroing a
    transformer block zeroes its residual increment, so the block becomes the identity."""
    return {k: v if k in keep else jax.tree.map(jnp.zeros_like, v) for k, v in params.items()}


def _bits_per_dim(bits: float) -> float:
    return bits * N / (16 * 16 * 1)


# --- GPT ----------------------------------------------------------------------------------------


def _constant_logits_params(params, bias: jax.Array):
    """Parameters under which the transformer outputs ``bias`` at every position, whatever its
    inputs: everything zero (the final LayerNorm then outputs 0) but the head's bias."""
    out = _zeros_but(params, ())
    out["head"] = {**out["head"], "bias": bias}
    return out


@pytest.mark.slow
def test_gpt_targets_are_the_clean_codes_whatever_pkeep_did_to_the_inputs():
    """A network whose logits are a constant ``b`` scores ``-log2 softmax(b)[c_i]`` at every
    position, so the train loss is exact for any corruption of the inputs; targets taken from
    the corrupted inputs would move it."""
    config = _prior_config("gpt")
    config.gpt.pkeep = 0.3  # most inputs replaced
    bias = 2.0 * jax.random.normal(jax.random.PRNGKey(3), (K,))
    codes = jnp.full((B, N), int(jnp.argmax(bias)), jnp.int32)  # the most likely code everywhere
    batch = _batch(codes)
    state = _prior_state(gpt, config, batch)
    params = _constant_logits_params(state.model.params, bias)
    # the surgery holds: any input gives logits b at every position
    out = gpt.build_model(config).apply(
        {"params": params}, _random_codes(4)[:, :-1], batch["label"]
    )
    np.testing.assert_allclose(out, jnp.broadcast_to(bias, out.shape), atol=1e-6)
    expected = float(_nll_bits(bias[None, None], codes[:1, :1]))  # the same at every position
    train, _ = _run(gpt, config, _with_params(state, params), batch)
    np.testing.assert_allclose(train["nll_bits"], expected, rtol=1e-5)


@pytest.mark.slow
def test_gpt_corruption_reaches_the_inputs_when_pkeep_is_below_one():
    """The same network and codes give a different loss at ``pkeep = 0.3`` than with plain
    teacher forcing: the inputs were corrupted (and only the inputs, by the test above)."""
    codes = _random_codes(5)
    batch = _batch(codes)
    losses = {}
    for pkeep in (1.0, 0.3):
        config = _prior_config("gpt")
        config.gpt.pkeep = pkeep
        state = _prior_state(gpt, config, batch)
        losses[pkeep] = float(_run(gpt, config, state, batch)[0]["nll_bits"])
    assert abs(losses[0.3] - losses[1.0]) > 1e-4, losses


def _copy_params(params, gain: float = 10.0):
    """Parameters under which the transformer predicts, at each code position, the code it is
    fed there (with probability ~1): one-hot token embeddings, identity blocks, no position
    embedding, and a head that reads the one-hot back. The class position gives uniform logits."""
    out = _zeros_but(params, ("ln_f",))
    width = params["token_embed"]["embedding"].shape[1]
    eye = jnp.eye(params["token_embed"]["embedding"].shape[0], width)
    out["token_embed"] = {"embedding": eye}
    out["head"] = {**out["head"], "kernel": gain * jnp.eye(width, K)}
    return out


@pytest.mark.slow
def test_no_gpt_position_sees_its_own_target():
    """A network that copies the token at its own position predicts the *previous* code when the
    inputs are aligned right; on codes that never repeat a neighbour it is far worse than
    chance (``log2 K`` bits). Were a position fed its own target, it would score near 0 bits."""
    config = _prior_config("gpt")
    config.gpt.pkeep = 1.0
    # c_i - c_{i-1} = 3 (mod 8): no code equals its predecessor
    codes = (jnp.arange(B)[:, None] + 3 * jnp.arange(N)[None, :]) % K
    batch = _batch(codes)
    state = _prior_state(gpt, config, batch)
    params = _copy_params(state.model.params)
    # the surgery holds: position i (fed c_{i-1}) puts its mass on c_{i-1}
    out = gpt.build_model(config).apply({"params": params}, codes[:, :-1], batch["label"])
    np.testing.assert_array_equal(jnp.argmax(out[:, 1:], axis=-1), codes[:, :-1])
    train, evals = _run(gpt, config, _with_params(state, params), batch)
    for name, bits in (("train", train["nll_bits"]), ("eval", evals["nll_bits"])):
        assert bits > 3 * math.log2(K), (name, bits)


@pytest.mark.slow
def test_gpt_train_and_eval_nll_is_the_teacher_forced_nll_of_the_network():
    """With ``pkeep = 1``: ``nll = mean_i -log2 p(c_i | y, c_<i)``, the network fed ``(y,
    c_1..c_{N-1})`` and its logits at position ``i`` scored against ``c_i``."""
    config = _prior_config("gpt")
    config.gpt.pkeep = 1.0
    codes = _random_codes(1)
    batch = _batch(codes)
    state = _prior_state(gpt, config, batch)
    logits = gpt.build_model(config).apply(
        {"params": state.model.params}, codes[:, :-1], batch["label"]
    )
    assert logits.shape == (B, N, K)
    expected = float(_nll_bits(logits, codes))
    train, evals = _run(gpt, config, state, batch)
    for name, got in (
        ("train loss", train["loss"]),
        ("train nll_bits", train["nll_bits"]),
        ("eval nll_bits", evals["nll_bits"]),
    ):
        np.testing.assert_allclose(got, expected, rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(train["bits_per_dim"], _bits_per_dim(expected), rtol=1e-5)
    np.testing.assert_allclose(evals["bits_per_dim"], _bits_per_dim(expected), rtol=1e-5)


# --- MaskGIT ------------------------------------------------------------------------------------


def _smoothed_ce(logits: jax.Array, targets: jax.Array, eps: float) -> jax.Array:
    """Mean of ``-sum_k q_k log softmax(logits)_k`` with ``q = (1 - eps) onehot + eps / K``."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    q = (1.0 - eps) * jax.nn.one_hot(targets, K) + eps / K
    return -(q * logp).sum(axis=-1).mean()


@pytest.mark.slow  # its own compile (~6 s); its planted bugs also fail the next test
def test_maskgit_loss_with_every_code_masked_is_the_networks_smoothed_cross_entropy():
    """At a masking rate of 1 the network is fed ``[MASK]`` (id ``K``) at every code position and
    its logits there, after the class position, are scored against the codes: smoothed
    cross-entropy for the loss, plain cross-entropy in bits for ``masked_nll_bits``."""
    config = _prior_config("maskgit")
    config.maskgit.min_mask_rate = 1.0
    codes = _random_codes(6)
    batch = _batch(codes)
    state = _prior_state(maskgit, config, batch)
    out = maskgit.build_model(config).apply(
        {"params": state.model.params}, jnp.full((B, N), K, jnp.int32), batch["label"]
    )
    assert out.shape == (B, N + 1, K)  # the class position first
    logits = out[:, 1:]
    eps = config.maskgit.label_smoothing
    assert eps > 0
    train, evals = _run(maskgit, config, state, batch)
    assert float(train["mask_rate"]) == 1.0
    np.testing.assert_allclose(train["loss"], _smoothed_ce(logits, codes, eps), rtol=1e-5)
    bits = float(_nll_bits(logits, codes))
    np.testing.assert_allclose(train["masked_nll_bits"], bits, rtol=1e-5)
    np.testing.assert_allclose(evals["masked_nll_bits"], bits, rtol=1e-5)


@pytest.mark.slow
def test_maskgit_scores_only_the_masked_positions():
    """With identity blocks and no position embedding, the logits at a code position depend only
    on the token there: ``g([MASK])`` where masked, ``g(c)`` where not. With every code ``c``,
    the loss over the masked positions alone is ``CE(g([MASK]), c)`` whichever positions the
    random mask picked, and changing ``g(c)`` (the unmasked positions' logits) changes nothing."""
    config = _prior_config("maskgit")
    config.maskgit.min_mask_rate = 0.0
    c = 2
    codes = jnp.full((B, N), c, jnp.int32)
    batch = _batch(codes)
    state = _prior_state(maskgit, config, batch)
    params = _zeros_but(state.model.params, ("token_embed", "class_embed", "ln_f", "head"))
    model = maskgit.build_model(config)
    labels = batch["label"]

    def code_logits(p, tokens):
        return model.apply({"params": p}, tokens, labels)[:, 1:]

    # the surgery holds: a position's logits follow its own token only
    mixed = jnp.where(jnp.arange(N) % 3 == 0, K, codes)
    g_mask = code_logits(params, jnp.full((B, N), K, jnp.int32))[0, 0]
    g_code = code_logits(params, codes)[0, 0]
    expected_logits = jnp.where((mixed == K)[..., None], g_mask, g_code)
    np.testing.assert_allclose(code_logits(params, mixed), expected_logits, atol=1e-5)
    assert float(jnp.abs(g_mask - g_code).max()) > 0.1  # the two positions' logits differ

    eps = config.maskgit.label_smoothing
    train, evals = _run(maskgit, config, _with_params(state, params), batch)
    assert 0.0 < float(train["mask_rate"]) < 0.9  # some codes stay unmasked
    np.testing.assert_allclose(
        train["loss"], _smoothed_ce(g_mask[None, None], codes[:1, :1], eps), rtol=1e-5
    )
    bits = float(_nll_bits(g_mask[None, None], codes[:1, :1]))
    np.testing.assert_allclose(train["masked_nll_bits"], bits, rtol=1e-5)
    np.testing.assert_allclose(evals["masked_nll_bits"], bits, rtol=1e-5)

    # perturbing the unmasked positions' logits (code c's embedding) leaves the loss as it was;
    # perturbing the masked ones' ([MASK]'s embedding) moves it
    def shifted(row):
        table = params["token_embed"]["embedding"]
        noise = jax.random.normal(jax.random.PRNGKey(row), table.shape[1:])
        return {**params, "token_embed": {"embedding": table.at[row].add(noise)}}

    unmasked, _ = _run(maskgit, config, _with_params(state, shifted(c)), batch)
    masked, _ = _run(maskgit, config, _with_params(state, shifted(K)), batch)
    np.testing.assert_allclose(unmasked["loss"], train["loss"], rtol=1e-6)
    assert abs(float(masked["loss"]) - float(train["loss"])) > 1e-3


# --- PixelCNN -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_pixelcnn_train_and_eval_nll_is_the_networks_cross_entropy_of_its_input_codes():
    """``nll = mean -log2 softmax(f(c, y))[c]``: the (causal) network fed the code grid ``c`` and
    its logits at each position scored against the code there."""
    config = _prior_config("pixelcnn")
    codes = _random_codes(7)
    batch = _batch(codes)
    state = _prior_state(pixelcnn, config, batch)
    grid = codes.reshape(B, H, W)
    logits = pixelcnn.build_model(config).apply(
        {"params": state.model.params}, grid, batch["label"]
    )
    assert logits.shape == (B, H, W, K)
    expected = float(_nll_bits(logits, grid))
    train, evals = _run(pixelcnn, config, state, batch)
    for name, got in (
        ("train loss", train["loss"]),
        ("train nll_bits", train["nll_bits"]),
        ("eval nll_bits", evals["nll_bits"]),
    ):
        np.testing.assert_allclose(got, expected, rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(evals["bits_per_dim"], _bits_per_dim(expected), rtol=1e-5)


# --- diffusion ----------------------------------------------------------------------------------


class _Oracle(nn.Module):
    """A denoiser that knows the batch's clean images ``x0`` and labels: from ``x_t`` and ``t``
    it recovers ``eps = (x_t - alpha x0) / sigma`` and outputs the exact target of its
    prediction type, plus 1 wherever it is given a label that is neither the example's own nor
    the null class. One parameter (kept at 0) gives the optimiser something to hold."""

    x0: jax.Array
    labels: jax.Array | None
    null: int
    schedule: dfn.Schedule
    prediction: str

    @nn.compact
    def __call__(self, x, t, y=None, deterministic=True):
        del deterministic
        offset = self.param("offset", nn.initializers.zeros, ())
        shape = (-1,) + (1,) * (x.ndim - 1)
        alpha = self.schedule.alpha(t).reshape(shape)
        sigma = self.schedule.sigma(t).reshape(shape)
        eps = (x - alpha * self.x0) / sigma
        target = {"eps": eps, "x0": self.x0, "v": alpha * eps - sigma * self.x0}[self.prediction]
        if self.labels is not None:
            wrong = jnp.logical_and(y != self.labels, y != self.null)
            target = target + wrong.astype(jnp.float32).reshape(shape)
        return target + offset


@pytest.mark.parametrize(
    "schedule,prediction",
    [("linear", "eps"), ("linear", "x0"), ("linear_vp", "v")],
)
@pytest.mark.slow
def test_an_oracle_denoiser_has_zero_diffusion_loss(schedule, prediction, monkeypatch):
    """The train and eval losses compare the network's output on ``(x_t, t, y)`` with the target
    of that same ``x_t``, ``t`` and example: an oracle computing the target from them scores 0.
    Noise drawn twice, a time shifted between the noising and the network, a target of another
    prediction type, or examples or labels out of order would not."""
    config = load_config(ROOT / "configs" / "diffusion.py", "mnist,tiny,cond")
    config.data.image_shape = (16, 16, 1)
    config.diffusion.schedule = schedule
    config.diffusion.prediction = prediction
    assert config.diffusion.p_uncond > 0
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (8, 16, 16, 1)), jnp.uint8)
    batch = {"image": images, "label": jnp.arange(8) % 10, "index": jnp.arange(8)}
    x0 = images.astype(jnp.float32) / 127.5 - 1.0
    oracle = _Oracle(
        x0,
        batch["label"],
        config.model.num_classes,
        dfn.make_schedule(schedule, config.diffusion.num_steps),
        prediction,
    )
    monkeypatch.setattr(diffusion, "build_model", lambda config: oracle)
    state = jax.jit(lambda r, b: diffusion.FAMILY.init(config, r, b))(jax.random.PRNGKey(0), batch)
    train, evals = _run(diffusion, config, state, batch)
    for name in ("train loss", "eval loss", "eval loss_online"):
        split, key = name.split(" ")
        got = float((train if split == "train" else evals)[key])
        assert got < 1e-6, (name, got)
    # the oracle does tell a misaligned target: the same check on x0 off by 0.1 fails
    shifted = oracle.clone(x0=x0 + 0.1)
    monkeypatch.setattr(diffusion, "build_model", lambda config: shifted)
    assert float(_run(diffusion, config, state, batch)[0]["loss"]) > 1e-4


# --- VQ-GAN -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_vqgan_discriminator_scores_the_batch_as_real_and_its_reconstruction_as_fake():
    """The discriminator's step: ``d_loss = mean relu(1 - D(x)) + mean relu(1 + D(x_hat))`` (hinge)
    with ``x_hat`` the reconstruction of ``x`` through the codebook before the step's update, and
    the new discriminator is one optimiser step along that loss's gradient."""
    config = load_config(ROOT / "configs" / "vqgan.py", "mnist,tiny")
    config.data.image_shape = (16, 16, 1)
    config.vqgan.disc_start = config.vqgan.adv_start = 0
    assert config.vqgan.gan_loss == "hinge"
    yy, xx = np.mgrid[:16, :16]
    images = np.stack(
        [255 * np.exp(-((yy - 4 - i) ** 2 + (xx - 11 + i) ** 2) / (2.0 + i)) for i in range(8)]
    )
    images = jnp.asarray(images[..., None], jnp.uint8)
    batch = {"image": images, "label": jnp.zeros(8, jnp.int32), "index": jnp.arange(8)}
    state = jax.jit(lambda r, b: vqgan.FAMILY.init(config, r, b))(jax.random.PRNGKey(0), batch)
    disc = state.players["discriminator"]
    # a discriminator away from its initialisation, so real and fake get different scores
    keys = iter(jax.random.split(jax.random.PRNGKey(7), len(jax.tree.leaves(disc.params))))
    moved = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(next(keys), p.shape), disc.params)
    disc = disc.replace(params=moved)
    state = state.replace(players={**state.players, "discriminator": disc})

    x = images.astype(jnp.float32) / 127.5 - 1.0
    frozen = tokenizers.vq_tokenizer_params(config, state)
    z_q = vq.quantize(vqgan.encode(config, frozen["params"], x), frozen["codebook"]).z_q
    x_hat = vqgan.decode(config, frozen["params"], z_q)
    d = vqgan.build_discriminator(config)

    def d_loss(p):
        real, fake_ = d.apply({"params": p}, x), d.apply({"params": p}, x_hat)
        loss = jnp.mean(jax.nn.relu(1.0 - real)) + jnp.mean(jax.nn.relu(1.0 + fake_))
        return loss, (jnp.mean(real), jnp.mean(fake_))

    (expected, (real, fake_)), grads = jax.jit(jax.value_and_grad(d_loss, has_aux=True))(
        disc.params
    )
    assert abs(float(real) - float(fake_)) > 1e-3  # a swap would show
    new, metrics = jax.jit(lambda s, b: vqgan.FAMILY.train_step(config, s, b))(state, batch)
    np.testing.assert_allclose(metrics["d_loss"], expected, rtol=1e-5)
    np.testing.assert_allclose(metrics["logits_real"], real, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics["logits_fake"], fake_, rtol=1e-5, atol=1e-6)
    stepped = disc.apply_gradients(grads, make_optimizer(config.optimizer_d))
    for a, b in zip(
        jax.tree.leaves(new.players["discriminator"].params),
        jax.tree.leaves(stepped.params),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
