"""The transformer priors over codes: the GPT prior (causal, cached sampling, VQGAN's input
noise) and MaskGIT (masked training, scheduled parallel decoding), and the pure pieces in
``jaxgen.tokens`` and ``jaxgen.nn.transformer``."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from support import ROOT, load_config

from jaxgen import tokens
from jaxgen.engine import loop, sampling
from jaxgen.engine.metrics import read_metrics
from jaxgen.errors import ConfigError
from jaxgen.nn.transformer import CodeTransformer, init_cache

K, N = 11, 9  # codes, sequence length


def _model(causal=True, extra=0, classes=3):
    return CodeTransformer(
        num_codes=K,
        max_len=N + 1,
        num_classes=classes,
        width=16,
        depth=2,
        heads=2,
        mlp_ratio=2,
        causal=causal,
        extra_tokens=extra,
    )


def _params(model, length):
    tokens_ = jnp.zeros((2, length), jnp.int32)
    return model.init(jax.random.PRNGKey(0), tokens_, jnp.zeros((2,), jnp.int32))["params"]


def _codes(seed, shape, k=K):
    return jax.random.randint(jax.random.PRNGKey(seed), shape, 0, k)


# --- the network --------------------------------------------------------------------------


@pytest.mark.slow
def test_causal_logits_at_a_position_ignore_the_codes_at_and_after_it():
    model = _model()
    params = _params(model, N - 1)
    labels = jnp.array([0, 2])
    inputs = _codes(1, (2, N - 1))
    base = model.apply({"params": params}, inputs, labels)
    for i in range(N - 1):  # logits at position p use inputs[:, :p]
        changed = inputs.at[:, i:].set((inputs[:, i:] + 1 + i) % K)
        out = model.apply({"params": params}, changed, labels)
        np.testing.assert_allclose(out[:, : i + 1], base[:, : i + 1], atol=1e-6)
        assert np.abs(out[:, i + 1] - base[:, i + 1]).max() > 1e-4  # the next one does see it


@pytest.mark.slow
def test_the_bidirectional_model_sees_every_position():
    model = _model(causal=False, extra=1)
    params = _params(model, N)
    inputs = _codes(1, (2, N))
    base = model.apply({"params": params}, inputs, jnp.array([0, 1]))
    out = model.apply({"params": params}, inputs.at[:, -1].set(K), jnp.array([0, 1]))
    assert np.abs(out[:, 1] - base[:, 1]).max() > 1e-4  # an early position sees the last code


@pytest.mark.slow
def test_cached_decoding_gives_the_full_forward_logits_at_every_position():
    model = _model()
    params = _params(model, N - 1)
    labels = jnp.array([1, 3])  # 3: the null class
    codes = _codes(2, (2, N))
    full = model.apply({"params": params}, codes[:, :-1], labels)
    cache = init_cache(model, 2)
    for pos in range(N):
        prev = codes[:, pos - 1] if pos > 0 else jnp.zeros((2,), jnp.int32)
        step, cache = model.apply(
            {"params": params}, prev, labels, pos, cache, method=CodeTransformer.decode_step
        )
        np.testing.assert_allclose(step, full[:, pos], rtol=1e-5, atol=1e-5, err_msg=f"{pos}")


# --- sampling pieces ----------------------------------------------------------------------


def test_top_k_and_top_p_keep_what_they_promise():
    logits = jnp.log(jnp.array([[0.5, 0.05, 0.3, 0.15]]))
    kept = lambda out: np.isfinite(np.asarray(out))[0].tolist()  # noqa: E731
    assert kept(tokens.filter_logits(logits, top_k=2)) == [True, False, True, False]
    assert kept(tokens.filter_logits(logits, top_p=0.5)) == [True, False, False, False]
    assert kept(tokens.filter_logits(logits, top_p=0.75)) == [True, False, True, False]
    assert kept(tokens.filter_logits(logits, top_p=0.81)) == [True, False, True, True]
    assert kept(tokens.filter_logits(logits)) == [True] * 4


def test_guidance_at_w_1_is_the_conditional_and_at_w_0_the_unconditional_logits():
    cond, uncond = jnp.array([[1.0, 2.0]]), jnp.array([[3.0, -1.0]])
    both = jnp.concatenate([cond, uncond])
    np.testing.assert_allclose(tokens.guide(both, 1.0), cond)
    np.testing.assert_allclose(tokens.guide(both, 0.0), uncond)
    np.testing.assert_allclose(tokens.guide(both, 2.0), 2 * cond - uncond)


def _samplers(model, params):
    def step_fn(prev, y, pos, kv):
        return model.apply({"params": params}, prev, y, pos, kv, method=CodeTransformer.decode_step)

    def cached(labels, **kw):
        make = lambda b: init_cache(model, b)  # noqa: E731
        return tokens.sample_autoregressive(step_fn, make, labels, N, jax.random.PRNGKey(5), **kw)

    def uncached(labels, **kw):
        fn = lambda t, y: model.apply({"params": params}, t, y)  # noqa: E731
        return tokens.sample_autoregressive_uncached(fn, labels, N, jax.random.PRNGKey(5), **kw)

    return jax.jit(cached, static_argnames=("top_k", "null_label")), jax.jit(
        uncached, static_argnames=("top_k", "null_label")
    )


@pytest.mark.slow
def test_cached_and_uncached_samplers_draw_the_same_codes_and_cfg_ends_are_exact():
    model = _model()
    params = _params(model, N - 1)
    cached, uncached = _samplers(model, params)
    labels = jnp.arange(8, dtype=jnp.int32) % 3
    guided = dict(scale=2.0, null_label=3, top_k=6)
    a, b = cached(labels, **guided), uncached(labels, **guided)
    np.testing.assert_array_equal(a, b)
    # w = 1 draws what the conditional model draws, w = 0 what the null class draws
    np.testing.assert_array_equal(cached(labels, scale=1.0, null_label=3), cached(labels))
    nulls = jnp.full_like(labels, 3)
    np.testing.assert_array_equal(cached(labels, scale=0.0, null_label=3), cached(nulls))
    assert not np.array_equal(cached(labels), cached(nulls))


def test_pkeep_1_is_teacher_forcing_and_a_lower_pkeep_replaces_its_share():
    codes = _codes(3, (64, 49), k=512)
    np.testing.assert_array_equal(tokens.corrupt(codes, 1.0, jax.random.PRNGKey(0), 512), codes)
    noisy = tokens.corrupt(codes, 0.7, jax.random.PRNGKey(0), 512)
    changed = float(np.mean(np.asarray(noisy) != np.asarray(codes)))
    assert abs(changed - 0.3 * (1 - 1 / 512)) < 0.03, changed
    assert int(noisy.min()) >= 0 and int(noisy.max()) < 512


def test_the_unmasking_schedule_follows_the_cosine_and_ends_with_none_masked():
    for n, steps in [(49, 8), (49, 12), (49, 16), (16, 16), (5, 1)]:
        m = tokens.unmask_schedule(n, steps)
        assert len(m) == steps and m[-1] == 0
        assert all(a > b for a, b in zip([n, *m[:-1]], m, strict=True))  # a code per step
        assert all(x >= 1 for x in m[:-1])
    m = tokens.unmask_schedule(49, 8)
    assert m[:-1].tolist() == [
        math.floor(49 * math.cos(math.pi / 2 * (t + 1) / 8)) for t in range(7)
    ]
    with pytest.raises(ValueError, match="steps=50"):
        tokens.unmask_schedule(49, 50)


@pytest.mark.slow
def test_maskgit_decoding_unmasks_the_planned_number_and_never_changes_a_decided_code():
    model = _model(causal=False, extra=1)
    params = _params(model, N)
    fn = lambda t, y: model.apply({"params": params}, t, y)[:, 1:]  # noqa: E731
    labels = jnp.arange(6, dtype=jnp.int32) % 3
    steps = 5
    codes, history = jax.jit(
        lambda r: tokens.maskgit_decode(
            fn, labels, N, r, mask_id=K, steps=steps, scale=1.5, null_label=3, trace=True
        )
    )(jax.random.PRNGKey(2))
    history = np.asarray(history)
    plan = tokens.unmask_schedule(N, steps)
    np.testing.assert_array_equal((history == K).sum(axis=2), np.repeat(plan[:, None], 6, 1))
    for t in range(1, steps):
        decided = history[t - 1] != K
        np.testing.assert_array_equal(history[t][decided], history[t - 1][decided])
    assert (np.asarray(codes) < K).all()
    np.testing.assert_array_equal(codes, history[-1])


def _reference_maskgit_decode(logits_fn, labels, length, rng, mask_id, steps, choice_temperature):
    """A numpy port of the reference decoder (google-research/maskgit, ``decode``): after step
    ``t`` (ratio ``r = (t + 1) / T``) the ``max(1, min(unknown - 1, floor(N cos(pi/2 r))))``
    least confident of the still-masked codes are masked again, confidence being the drawn
    code's log-probability plus Gumbel noise at ``choice_temperature (1 - r)``; the result is
    the last step's draws. Its random numbers come from the keys ``maskgit_decode`` uses, so the
    two see the same noise; every decision is made here."""
    logits_fn = jax.jit(logits_fn)  # one compile, not one per eager op and step
    codes = np.full((labels.shape[0], length), mask_id, np.int64)
    history = []
    for t in range(steps):
        key_draw, key_choice = jax.random.split(jax.random.fold_in(rng, t))
        logits = np.asarray(logits_fn(jnp.asarray(codes, jnp.int32), labels), np.float64)
        logp = logits - logits.max(-1, keepdims=True)
        logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
        drawn = np.asarray(jax.random.categorical(key_draw, jnp.asarray(logp, jnp.float32)))
        unknown = codes == mask_id
        sampled = np.where(unknown, drawn, codes)
        ratio = (t + 1) / steps
        conf = np.take_along_axis(logp, sampled[..., None], -1)[..., 0]
        conf = np.where(unknown, conf, np.inf)
        noise = np.asarray(jax.random.gumbel(key_choice, conf.shape), np.float64)
        conf = conf + choice_temperature * (1.0 - ratio) * noise
        mask_len = np.floor(length * np.cos(np.pi / 2 * ratio))
        mask_len = np.maximum(1, np.minimum(unknown.sum(-1, keepdims=True) - 1, mask_len))
        cut = np.take_along_axis(np.sort(conf, -1), mask_len.astype(np.int64), -1)
        codes = sampled if t == steps - 1 else np.where(conf < cut, mask_id, sampled)
        history.append(codes)
    return codes, np.stack(history)


@pytest.mark.slow
def test_maskgit_decoding_matches_a_port_of_the_reference_decoder():
    # A stub network: fixed per-position logits plus a term that depends on the codes decided
    # so far, loud enough that the drawn codes' log-probabilities differ by a few nats.
    k, n, steps, b = 7, 16, 8, 12
    table = 2.0 * jax.random.normal(jax.random.PRNGKey(0), (n, k))
    mix = 1.5 * jax.random.normal(jax.random.PRNGKey(1), (k + 1, k))

    def fn(codes, labels):
        context = jax.nn.one_hot(codes, k + 1).mean(axis=1) @ mix
        return table[None] + context[:, None, :] + 0.0 * labels[:, None, None]

    labels = jnp.zeros((b,), jnp.int32)
    rng = jax.random.PRNGKey(3)
    # The reference's mask counts equal ours at these sizes (ours also keeps one per later step).
    ref_counts = [math.floor(n * math.cos(math.pi / 2 * (t + 1) / steps)) for t in range(steps)]
    assert tokens.unmask_schedule(n, steps)[:-1].tolist() == ref_counts[:-1]
    codes, history = tokens.maskgit_decode(
        fn, labels, n, rng, mask_id=k, steps=steps, choice_temperature=4.5, trace=True
    )
    want, want_history = _reference_maskgit_decode(fn, labels, n, rng, k, steps, 4.5)
    np.testing.assert_array_equal(np.asarray(history), want_history)
    np.testing.assert_array_equal(np.asarray(codes), want)


def test_maskgit_training_masks_follow_the_cosine_rate_and_the_floor():
    mask = np.asarray(tokens.random_mask(jax.random.PRNGKey(0), (4000, 49)))
    assert mask.sum(axis=1).min() >= 1
    assert abs(mask.mean() - 2 / math.pi) < 0.02, mask.mean()  # E cos(pi/2 r) = 2/pi
    floor = np.asarray(tokens.random_mask(jax.random.PRNGKey(0), (500, 49), 0.5))
    assert floor.sum(axis=1).min() >= math.ceil(0.5 * 49)


def test_mask_rate_is_the_cosine_in_numpy_float64_and_in_jax():
    assert float(tokens.mask_rate(0.0)) == 1.0 and abs(float(tokens.mask_rate(1.0))) < 1e-15
    np.testing.assert_allclose(tokens.mask_rate(np.array([1 / 3, 0.5])), [3**0.5 / 2, 2**-0.5])
    assert tokens.mask_rate(0.5).dtype == np.float64
    assert isinstance(tokens.mask_rate(jnp.float32(0.5)), jax.Array)
    # 64 cos(pi/3) is exactly 32: the float64 plan keeps it (float32 or another rounding
    # order of pi/2 (t + 1) / T gives 31.99.. and one code fewer revealed).
    assert tokens.unmask_schedule(64, 39)[25] == 32


def test_training_masks_and_the_decoding_plan_share_one_gamma(monkeypatch):
    def linear(r):  # gamma(r) = 1 - r instead of the cosine
        return 1.0 - (r if isinstance(r, jax.Array) else np.asarray(r, np.float64))

    monkeypatch.setattr(tokens, "mask_rate", linear)
    plan = tokens.unmask_schedule(49, 8)
    assert plan[:-1].tolist() == [math.floor(49 * (1 - (t + 1) / 8)) for t in range(7)]
    mask = np.asarray(tokens.random_mask(jax.random.PRNGKey(0), (4000, 49)))
    # E ceil(49 (1 - r)) / 49 = 0.5 + 1/98 for the linear gamma (the cosine's is near 2/pi)
    assert abs(mask.mean() - (0.5 + 1 / 98)) < 0.02, mask.mean()


# --- the families on a tokenizer -----------------------------------------------------------


def _prior(tmp_path, name, *variants):
    import fake_tokenizer_family as fake

    tok_dir = tmp_path / "tok"
    if not tok_dir.exists():
        loop.train_and_evaluate(fake.get_config(), str(tok_dir))
    config = load_config(ROOT / "configs" / f"{name}.py", ",".join(("mnist", "tiny", *variants)))
    config.data = fake.get_config().data
    config.first_stage.workdir = str(tok_dir)
    return config, fake


@pytest.mark.parametrize("name", ["gpt", "maskgit"])
@pytest.mark.slow
def test_a_tiny_prior_learns_the_codes_and_samples_through_the_tokenizer(name, tmp_path):
    config, fake = _prior(tmp_path, name, "cond")
    config.model.width, config.model.depth = 32, 2
    config.train.num_steps = 80
    config.optimizer.learning_rate = 3e-3
    workdir = str(tmp_path / name)
    state, _ = loop.train_and_evaluate(config, workdir)
    key = "nll_bits" if name == "gpt" else "masked_nll_bits"
    rows = [r for r in read_metrics(workdir) if r["split"] == "train"]
    first, last = rows[0][key], np.mean([r[key] for r in rows[-3:]])
    assert last < 0.8 * math.log2(fake.K) and last < 0.8 * first, (first, last)
    setup, restored = loop.restore_for_inference(workdir)
    images, labels = sampling.generate(
        setup, restored, jax.random.PRNGKey(0), 6, {"label": 2, "scale": 2.0}
    )
    assert images.shape == (6, 16, 16, 1) and (labels == 2).all()
    levels = set(np.round(np.asarray(state.frozen["levels"]), 5))
    assert set(np.round(np.unique(images), 5)) <= levels  # decoded by the fake tokenizer


@pytest.mark.slow
def test_guidance_needs_a_conditional_prior(tmp_path):
    config, _ = _prior(tmp_path, "gpt")
    workdir = str(tmp_path / "gpt")
    config.train.num_steps = 1
    loop.train_and_evaluate(config, workdir)
    setup, state = loop.restore_for_inference(workdir)
    with pytest.raises(ConfigError, match="needs a class-conditional prior"):
        sampling.prepare(setup, {"scale": 2.0}, None)
