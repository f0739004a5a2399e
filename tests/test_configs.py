"""Every config loads and trains; bad values fail before anything compiles."""

import pytest
from conftest import CONFIGS, load_config, offline_data

from jaxgen.engine import loop
from jaxgen.engine.config import validate
from jaxgen.errors import ConfigError


def _variants(path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    doc = module.__doc__ or ""
    known = ("tiny", "demo", "cpu", "cond", "clean", "mlp", "conv", "bernoulli", "long", "loss")
    known += ("norestart",)
    return [v for v in known if f"``{v}``" in doc]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_and_variant_loads_and_validates(path):
    variants = _variants(path)
    assert "tiny" in variants
    for arg in [None, *variants, *(f"{v},cond" for v in variants if "cond" in variants)]:
        config = offline_data(load_config(path, arg))
        validate(config, num_devices=8)


_FIRST_STAGES = {}


def _tiny_first_stage(path, tmp_path_factory) -> str:
    """The workdir of ``path``'s tiny config after two steps, shared by the tests."""
    if path not in _FIRST_STAGES:
        config = offline_data(load_config(path, "tiny"))
        config.train.num_steps = 2
        workdir = str(tmp_path_factory.mktemp(path.stem))
        loop.train_and_evaluate(config, workdir)
        _FIRST_STAGES[path] = workdir
    return _FIRST_STAGES[path]


# A data set's twin config (X_fashion_mnist beside X_mnist) runs the same code on other files
# (which tests/test_data.py reads); training one of the pair keeps the suite short. So does
# leaving out diffusion_cifar10_ddpm: its tiny variant has diffusion_mnist's UNet, schedule,
# prediction and sampler (test_cifar10_tiny_is_the_mnist_tiny_run checks), on the procedural
# shapes data that tests/test_diffusion_family.py trains on.
TRAINED = [
    p
    for p in CONFIGS
    if (p.parent / p.name.replace("fashion_", "") not in CONFIGS or "fashion_" not in p.name)
    and p.stem != "diffusion_cifar10_ddpm"
]


def test_cifar10_tiny_is_the_mnist_tiny_run():
    """What the two-step run of diffusion_mnist:tiny covers for the CIFAR-10 config too."""
    cifar = load_config(CONFIGS[0].parent / "diffusion_cifar10_ddpm.py", "tiny")
    mnist = load_config(CONFIGS[0].parent / "diffusion_mnist.py", "tiny")
    for section in ("model", "diffusion", "sampler"):
        assert cifar[section].to_dict() == mnist[section].to_dict(), section
    assert cifar.data.source == "shapes" and cifar.data.image_shape == (16, 16, 1)


@pytest.mark.parametrize("path", TRAINED, ids=lambda p: p.stem)
def test_every_tiny_config_trains_two_steps(path, tmp_path, tmp_path_factory):
    """Every config (of a twin pair, the MNIST one) trains two steps and evaluates."""
    config = offline_data(load_config(path, "tiny"))
    config.train.num_steps = 2
    if "first_stage" in config:  # a prior: on its first stage's tiny config, trained once
        first_path = path.parent / path.name.replace(config.family, "vqvae")
        config.first_stage.workdir = _tiny_first_stage(first_path, tmp_path_factory)
    state, summary = loop.train_and_evaluate(config, str(tmp_path))
    assert int(state.step) == 2 and summary["eval"]["examples"] > 0


def test_unknown_variant_is_named():
    with pytest.raises(ConfigError, match=r"\['huge'\] not known"):
        load_config(CONFIGS[0], "tiny,huge")


@pytest.mark.parametrize(
    "key,value,message",
    [
        (
            "family",
            "vea",
            r"family='vea' is not a known family; expected one of \('vae', 'vqvae', 'pixelcnn',",
        ),
        (
            "train.batch_size",
            12,
            r"train.batch_size=12 is not divisible by the 8 devices.*"
            r"multiple of 8",
        ),
        ("train.num_steps", -5, r"train.num_steps=-5 must be a positive integer"),
        ("optimizer.learning_rate", -1e-3, r"optimizer.learning_rate=-0.001 must be > 0"),
        ("loss.likelihood", "gauss", r"loss.likelihood='gauss' is not one of"),
        ("loss.beta", -1.0, r"loss.beta=-1.0 must be >= 0"),
        (
            "data.path",
            "/nonexistent/mnist.npz",
            r"data.path='/nonexistent/mnist.npz' does not exist; data.source='npz' needs",
        ),
        ("data.source", "csv", r"data.source='csv' is not one of"),
        ("mesh.data", 3, r"mesh.data=3 must be -1 \(all devices\) or the device count, 8"),
        ("eval.iwae_k", 7, r"eval.iwae_k=7 must be >= 1 and a multiple of eval.iwae_chunk"),
    ],
)
def test_bad_values_give_clear_errors_before_compiling(key, value, message, tmp_path):
    config = load_config(CONFIGS[[p.stem for p in CONFIGS].index("vae_mnist")], "tiny")
    if key != "data.path":
        config.data.source = "shapes"
    section, _, name = key.rpartition(".")
    (config[section] if section else config)[name] = value
    with pytest.raises(ConfigError, match=message):
        loop.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()  # nothing was written


def test_conv_model_needs_divisible_image_size():
    config = load_config(CONFIGS[[p.stem for p in CONFIGS].index("vae_mnist")], "tiny")
    config.data.source, config.data.image_shape = "shapes", (18, 18, 1)
    config.model.kind, config.model.channels = "conv", (8, 8)
    with pytest.raises(ConfigError, match=r"data.image_shape=\(18, 18\) must be divisible by 4"):
        validate(config, num_devices=1)
