"""The diffusion family: training targets, label dropout, EMA, that training works, eval and
sampling through every solver."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from support import ROOT, load_config

from jaxgen.data import load_splits, train_batch
from jaxgen.errors import ConfigError
from jaxgen.families import diffusion, get_family


def _config(**model):
    """The tiny MNIST diffusion config on procedural 16x16 shapes: fast and needs no files."""
    config = load_config(ROOT / "configs" / "diffusion.py", "mnist,tiny")
    config.data.source = "shapes"
    config.data.image_shape = (16, 16, 1)
    config.data.num_train, config.data.num_test = 256, 64
    config.model.channel_mult = (1, 2)  # one down-sampling, as in the real configs
    config.model.attention_resolutions = (8,)
    config.model.update(model)
    return config


def _batch(config, step=0, size=32):
    train, _ = load_splits(config.data)
    return train_batch(train, config.seed, step, size)


def _test_batch(config, num=32, offset=0):
    _, test = load_splits(config.data)
    index = np.arange(offset, offset + num)
    batch = test.get(index)
    batch["index"] = index.astype(np.int32)
    return batch


def _perturbed(params, scale=0.1):
    """Noise on every leaf, so the zero-initialised layers are live."""
    flat, unravel = ravel_pytree(params)
    return unravel(flat + scale * jax.random.normal(jax.random.PRNGKey(42), flat.shape))


def _init(config, batch):
    return jax.jit(functools.partial(diffusion.init, config))(jax.random.PRNGKey(0), batch)


@pytest.fixture(scope="module")
def trained():
    """The tiny config trained 150 steps (shared by the tests that need a trained model)."""
    config = _config()
    config.optimizer.learning_rate = 3e-3
    fresh = state = _init(config, _batch(config))
    step = jax.jit(functools.partial(diffusion.train_step, config))
    eval_step = jax.jit(functools.partial(diffusion.eval_step, config))
    test_batch = _test_batch(config)
    before = eval_step(state, test_batch)
    losses = []
    for k in range(150):
        state, metrics = step(state, _batch(config, k))
        losses.append(float(metrics["loss"]))
    return dict(
        config=config,
        fresh=fresh,
        state=state,
        eval_step=eval_step,
        test_batch=test_batch,
        before=before,
        losses=losses,
    )


@pytest.fixture(scope="module")
def conditional():
    """A fresh conditional (3 classes) tiny model with label dropout 1, params perturbed."""
    config = _config(num_classes=3)
    config.diffusion.p_uncond = 1.0
    state = _init(config, _batch(config, size=8))
    params = jax.jit(_perturbed)(state.model.params)
    return config, state.replace(
        players={"model": state.model.replace(params=params, ema_params=params)}
    )


# ----------------------------------------------------------------------------- pure pieces
def test_family_is_registered():
    assert get_family("diffusion") is diffusion.FAMILY


def test_training_labels_follow_p_uncond():
    config = _config(num_classes=10)
    batch = {"label": jnp.arange(64, dtype=jnp.int32) % 10}
    config.diffusion.p_uncond = 1.0
    # p_uncond = 1: every training label is the null class, so the model never sees a class.
    np.testing.assert_array_equal(
        diffusion._train_condition(config, batch, jax.random.PRNGKey(0)), 10
    )
    config.diffusion.p_uncond = 0.0
    np.testing.assert_array_equal(
        diffusion._train_condition(config, batch, jax.random.PRNGKey(0)), batch["label"]
    )
    # Unconditional models get no labels at all, whatever p_uncond says.
    assert diffusion._train_condition(_config(), batch, jax.random.PRNGKey(0)) is None


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("diffusion.schedule", "quadratic", r"diffusion.schedule='quadratic' is not one of"),
        ("diffusion.prediction", "score", r"diffusion.prediction='score' is not one of"),
        ("diffusion.num_steps", 1, r"diffusion.num_steps=1 must be an integer >= 2"),
        ("diffusion.ema_decay", 1.5, r"diffusion.ema_decay=1.5 must be in \[0, 1\]"),
        ("diffusion.p_uncond", -0.1, r"diffusion.p_uncond=-0.1 must be in \[0, 1\]"),
        ("sampler.solver", "euler", r"sampler.solver='euler' is not one of"),
        ("sampler.method", "adaptive", r"sampler.method='adaptive' is not one of"),
        ("sampler.order", 4, r"sampler.order=4 is not one of \(1, 2, 3\)"),
        ("sampler.steps", 0, r"sampler.steps=0 must be an integer >= 1"),
        ("sampler.eta", -1.0, r"sampler.eta=-1.0 must be >= 0"),
        ("model.channels", 0, r"model.channels=0 must be an integer >= 1"),
        ("model.dropout", 1.0, r"model.dropout=1.0 must be in \[0, 1\)"),
        ("model.num_classes", -1, r"model.num_classes=-1 must be an integer >= 0"),
        (
            "model.channel_mult",
            (1, 2, 2, 2, 2, 2),
            r"data.image_shape=\(16, 16\) must be divisible by 32",
        ),
        (
            "model.attention_resolutions",
            (5,),
            r"model.attention_resolutions=\(5,\): 5 is not a feature-map size of this UNet; "
            r"the sizes are \(16, 8\)",
        ),
        ("model.num_heads", 3, r"model.num_heads=3 must divide every level's width"),
    ],
)
def test_bad_values_are_named(key, value, message):
    config = _config()
    section, name = key.split(".")
    config[section][name] = value
    with pytest.raises(ConfigError, match=message):
        diffusion.validate_config(config)


@pytest.mark.slow
@pytest.mark.parametrize("warmup", [False, True])
def test_the_ema_decay_of_the_first_step_follows_ema_warmup(warmup):
    config = _config()
    config.diffusion.ema_decay = 0.999
    config.diffusion.ema_warmup = warmup
    state = _init(config, _batch(config))
    new, _ = jax.jit(functools.partial(diffusion.train_step, config))(state, _batch(config))
    decay = 0.1 if warmup else 0.999  # (1 + 0) / (10 + 0) with warm-up
    old, params, ema = (
        ravel_pytree(p)[0] for p in (state.model.params, new.model.params, new.model.ema_params)
    )
    np.testing.assert_allclose(ema, decay * old + (1 - decay) * params, rtol=1e-5, atol=1e-6)


def test_a_run_saved_before_the_thresholding_keys_still_validates():
    config = _config()
    with config.unlocked():
        del config.sampler["thresholding"], config.sampler["threshold_max"]
    diffusion.validate_config(config)


def test_dpm_solver_pp_singlestep_order_3_is_refused():
    config = _config()
    config.sampler.method, config.sampler.order = "singlestep", 3
    with pytest.raises(ConfigError, match=r"2S, 2M and 3M"):
        diffusion.validate_config(config)
    config.sampler.solver = "dpm_solver"
    diffusion.validate_config(config)


# ----------------------------------------------------------------------------- with models
@pytest.mark.slow
def test_label_dropout_of_one_trains_only_the_null_class(conditional):
    config, state = conditional
    batch = _batch(config, size=8)
    x0 = diffusion.to_model_range(batch["image"])
    t = jnp.full((8,), 0.5)
    noise = jax.random.normal(jax.random.PRNGKey(1), x0.shape)
    labels = diffusion._train_condition(config, batch, jax.random.PRNGKey(2))
    loss = lambda p: diffusion.loss_fn(config, p, x0, t, noise, labels, None)[0]
    table_grad = np.asarray(jax.jit(jax.grad(loss))(state.model.params)["class_emb"]["embedding"])
    assert np.all(table_grad[:3] == 0)  # no real class is trained
    assert np.any(table_grad[3] != 0)  # the null class is


@pytest.mark.slow
def test_conditional_samples_follow_the_label(conditional):
    config, state = conditional
    fn = jax.jit(
        lambda s, r, label: (
            diffusion.sample(config, s, r, 4, solver="ddim", steps=1, label=label).images
        ),
        static_argnums=2,
    )
    key = jax.random.PRNGKey(0)
    zero, one = np.asarray(fn(state, key, 0.0)), np.asarray(fn(state, key, 1.0))
    assert np.abs(zero - one).max() > 1e-2
    with pytest.raises(
        ConfigError, match=r"label=7 is not a class of this model; use 0..3 \(3 is the null class\)"
    ):
        fn(state, key, 7)


@pytest.mark.slow
def test_cfg_at_w_1_is_the_conditional_sampler_and_w_0_the_unconditional(conditional):
    config, state = conditional
    key = jax.random.PRNGKey(0)

    def run(label, **kw):  # not jitted as a whole, so that a Python scale stays Python
        return diffusion.sample(
            config, state, key, 6, solver="dpm_solver++", steps=3, label=label, **kw
        ).images

    plain, null = np.asarray(run(1)), np.asarray(run(3))
    w1 = np.asarray(run(1, guidance="cfg", scale=1.0))
    w0 = np.asarray(run(1, guidance="cfg", scale=0.0))
    assert np.array_equal(w1, plain) and np.array_equal(w0, null)
    # (An array w = 1 through the batched cond/uncond call: tests/test_diffusion_guidance.py.)
    w3 = np.asarray(run(1, guidance="cfg", scale=3.0))
    away = np.asarray(run(1, guidance="cfg", scale=3.0, negative_label=0))
    assert np.abs(w3 - plain).max() > 1e-3 and np.abs(away - w3).max() > 1e-3


@pytest.mark.slow
def test_cfg_with_a_traced_scale_of_1_is_the_conditional_model_on_the_real_unet(conditional):
    """The scale as an argument of the compiled sampler (one program for every scale): at
    w = 1 the batched cond/uncond call must give the conditional model's samples."""
    config, state = conditional
    key = jax.random.PRNGKey(0)
    guided = jax.jit(
        lambda s, w: (
            diffusion.sample(
                config, s, key, 6, solver="dpm_solver++", steps=3, label=1, guidance="cfg", scale=w
            ).images
        )
    )
    plain = diffusion.sample(config, state, key, 6, solver="dpm_solver++", steps=3, label=1)
    w1 = np.asarray(guided(state, jnp.float32(1.0)))
    np.testing.assert_allclose(w1, np.asarray(plain.images), atol=1e-4)  # rounding only
    assert np.abs(np.asarray(guided(state, jnp.float32(3.0))) - w1).max() > 1e-3


@pytest.mark.slow
def test_guidance_the_model_cannot_serve_is_refused(trained, conditional):
    from jaxgen.families import classifier

    config, state = trained["config"], trained["state"]
    key = jax.random.PRNGKey(0)
    with pytest.raises(ConfigError, match=r"guidance='cfg' needs a class-conditional model"):
        diffusion.sample(config, state, key, 2, guidance="cfg", scale=3.0)
    clf_config = load_config(ROOT / "configs" / "classifier.py", "mnist,tiny")
    clf_config.data.image_shape = config.data.image_shape
    clf = (clf_config, None)
    with pytest.raises(ConfigError, match=r"negative class needs classifier-free guidance"):
        diffusion.sample(
            config, state, key, 2, guidance="classifier", negative_label=1, classifier=clf
        )
    with pytest.raises(ConfigError, match=r"needs a noise-aware classifier \(classifier=\)"):
        diffusion.sample(config, state, key, 2, guidance="classifier")
    clf_config.diffusion.schedule = "cosine"
    with pytest.raises(ConfigError, match=r"trained on the schedule \('cosine', 1000\)"):
        diffusion.sample(config, state, key, 2, guidance="classifier", classifier=clf)
    clean = load_config(ROOT / "configs" / "classifier.py", "mnist,tiny,clean")
    with pytest.raises(ConfigError, match=r"classifier.noisy=False"):
        diffusion.sample(config, state, key, 2, guidance="classifier", classifier=(clean, None))
    assert classifier.FAMILY.sample_options == ()


@pytest.mark.slow
def test_mixed_precision_keeps_params_float32_and_the_loss_close(trained):
    config, state = trained["config"], trained["state"]
    config_bf16 = _config()
    config_bf16.diffusion.mixed_precision = True
    batch = _batch(config, size=16)
    abstract = jax.eval_shape(
        functools.partial(diffusion.init, config_bf16), jax.random.PRNGKey(0), batch
    )
    for tree in (abstract.model.params, abstract.model.ema_params, abstract.model.opt_state):
        floats = {x.dtype for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)}
        assert floats == {jnp.dtype(jnp.float32)}
    x0 = diffusion.to_model_range(batch["image"])
    t = jnp.linspace(0.01, 1.0, 16)
    noise = jax.random.normal(jax.random.PRNGKey(1), x0.shape)

    def loss(c):
        fn = jax.jit(functools.partial(diffusion.loss_fn, c))
        return float(fn(state.model.params, x0, t, noise, None, None)[0])

    full, half = loss(config), loss(config_bf16)
    assert full != half  # bfloat16 was really used
    assert abs(half - full) < 0.05 * full, (full, half)


@pytest.mark.slow
def test_a_tiny_run_learns(trained):
    losses = trained["losses"]
    # The fresh model predicts eps = 0, so its loss is E[eps^2] = 1.
    assert 0.9 < losses[0] < 1.1
    assert np.mean(losses[-10:]) < 0.3 * np.mean(losses[:10])


@pytest.mark.slow
def test_eval_is_deterministic_and_improves(trained):
    config, state, eval_step = trained["config"], trained["state"], trained["eval_step"]
    test_batch, before = trained["test_batch"], trained["before"]
    after = eval_step(state, test_batch)
    assert float(after["loss"]) < 0.3 * float(before["loss"])
    assert float(after["loss_online"]) < 0.3 * float(before["loss_online"])
    again = eval_step(state, test_batch)
    assert float(again["loss"]) == float(after["loss"])
    # Each example's time and noise are fixed by its index, not its position in the batch.
    other = eval_step(state, _test_batch(config, offset=32))
    assert float(other["loss"]) != float(after["loss"])
    perm = np.arange(32)[::-1]
    shuffled = {k: v[perm] for k, v in test_batch.items()}
    np.testing.assert_allclose(eval_step(state, shuffled)["loss"], after["loss"], rtol=1e-5)


@pytest.mark.slow
def test_ema_params_move_toward_params_during_training(trained):
    fresh, state = trained["fresh"], trained["state"]

    def dist(a, b):
        return float(np.sum((np.asarray(ravel_pytree(a)[0]) - np.asarray(ravel_pytree(b)[0])) ** 2))

    # decay < 1: the EMA has left the initial weights but lags behind the online weights.
    assert dist(state.model.ema_params, fresh.model.params) > 0
    assert dist(state.model.ema_params, state.model.params) < dist(
        fresh.model.params, state.model.params
    )


@pytest.mark.slow
def test_each_step_moves_the_ema_by_its_decay_and_sampling_reads_only_the_ema(trained):
    """Guards two wiring bugs: EMA weights that just copy the parameters, and sampling from
    the online parameters instead of the EMA ones."""
    config, state = trained["config"], trained["state"]
    decay = config.diffusion.ema_decay
    new, _ = jax.jit(functools.partial(diffusion.train_step, config))(state, _batch(config, 7))
    flat = lambda tree: np.asarray(ravel_pytree(tree)[0])  # noqa: E731
    expected = decay * flat(state.model.ema_params) + (1 - decay) * flat(new.model.params)
    np.testing.assert_allclose(flat(new.model.ema_params), expected, rtol=1e-6, atol=1e-7)
    assert np.abs(flat(new.model.ema_params) - flat(new.model.params)).max() > 1e-4

    def draw(s):
        fn = jax.jit(lambda s: diffusion.sample(config, s, jax.random.PRNGKey(0), 4).images)
        return np.asarray(fn(s))

    base = draw(state)
    online_moved = state.replace(
        players={"model": state.model.replace(params=_perturbed(state.model.params, 1.0))}
    )
    ema_moved = state.replace(
        players={"model": state.model.replace(ema_params=_perturbed(state.model.ema_params))}
    )
    np.testing.assert_array_equal(draw(online_moved), base)
    assert np.abs(draw(ema_moved) - base).max() > 1e-3


@pytest.mark.parametrize(
    "options",
    [
        dict(solver="ddpm", steps=20.0),  # stochastic: 4 steps leave too much fresh noise
        dict(solver="ddim", eta=0.5, steps=20.0),
        dict(solver="dpm_solver", order=2.0, method="singlestep"),
        dict(solver="dpm_solver++", order=0.0),
    ],
    ids=lambda o: "-".join(str(v) for v in o.values()),
)
@pytest.mark.slow
def test_every_solver_samples_images(trained, options):
    config, state = trained["config"], trained["state"]
    # Options arrive as the CLI gives them: floats, 0 meaning "the config's" (4 steps here).
    options = {"steps": 0.0, **options}
    fn = jax.jit(lambda s, r: diffusion.sample(config, s, r, 16, **options).images)
    a = np.asarray(fn(state, jax.random.PRNGKey(3)))
    assert a.shape == (16, 16, 16, 1) and a.dtype == np.float32
    assert a.min() >= 0.0 and a.max() <= 1.0
    assert a.std() > 0.05  # not a constant image
    np.testing.assert_array_equal(a, np.asarray(fn(state, jax.random.PRNGKey(3))))
    assert np.any(a != np.asarray(fn(state, jax.random.PRNGKey(4))))
    # Shapes are bright objects on a black background; so are the samples, roughly.
    data = _batch(config, size=64)["image"] / 255.0
    # Clipped Gaussian noise has ~21% of pixels below 0.1, the data ~80%.
    assert np.mean(a < 0.1) > 0.4, (np.mean(a < 0.1), np.mean(data < 0.1))


@pytest.mark.slow
def test_sample_options_are_checked(trained):
    config, state = trained["config"], trained["state"]
    with pytest.raises(ConfigError, match=r"solver='euler' is not one of"):
        diffusion.sample(config, state, jax.random.PRNGKey(0), 2, solver="euler")
    with pytest.raises(ConfigError, match=r"2S, 2M and 3M"):
        diffusion.sample(
            config,
            state,
            jax.random.PRNGKey(0),
            2,
            solver="dpm_solver++",
            order=3,
            method="singlestep",
        )
    with pytest.raises(ConfigError, match=r"unconditional"):
        diffusion.sample(config, state, jax.random.PRNGKey(0), 2, label=1.0)
    with pytest.raises(ConfigError, match=r"thresholding='maybe' must be True/False or 'on'"):
        diffusion.sample(config, state, jax.random.PRNGKey(0), 2, thresholding="maybe")
