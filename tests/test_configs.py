"""Every config loads and trains; bad values fail before anything compiles."""

import itertools

import pytest
from support import CONFIGS, ROOT, config_module, load_config, offline_data

import jaxgen.eval  # noqa: F401  (registers the 'samples' evaluation that gan:fd asks for)
from jaxgen.engine import loop
from jaxgen.engine.config import validate
from jaxgen.errors import ConfigError
from jaxgen.families import get_family


def _args(path):
    """Every data set alone and with each variant, and every pair of variants on the first
    data set: what ``--config=path:arg`` accepts, enumerated from the file's declarations."""
    module = config_module(path)
    datasets, variants = module.DATASETS, tuple(module.VARIANTS)
    args = [None, *datasets]
    args += [f"{d},{v}" for d in datasets for v in variants]
    args += [f"{datasets[0]},{a},{b}" for a, b in itertools.combinations(variants, 2)]
    return args


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_declares_its_variants_and_every_combination_validates(path):
    module = config_module(path)
    assert "tiny" in module.VARIANTS and module.DATASETS
    assert all(isinstance(h, str) and h for h in module.VARIANTS.values())
    for arg in _args(path):
        config = offline_data(module.get_config(arg))
        validate(config, num_devices=8)
        # A file is named after its family, or declares the family it is a recipe of.
        assert config.family == getattr(module, "FAMILY", path.stem)


def test_without_a_data_set_the_first_is_used():
    for path in CONFIGS:
        module = config_module(path)
        assert (
            module.get_config("tiny").to_dict()
            == module.get_config(f"{module.DATASETS[0]},tiny").to_dict()
        )


_FIRST_STAGES = {}


def _tiny_first_stage(tmp_path_factory, config) -> str:
    """The workdir of a tiny first stage after two steps, for ``config``'s data set: a VQ-VAE
    for a prior over codes, a KL autoencoder for a model of latents (shared by the tests)."""
    gives = get_family(config.family).capabilities(config).first_stage_gives
    name = "vqvae" if gives == "codes" else "autoencoder_kl"
    dataset = config.data.dataset
    if (name, dataset) not in _FIRST_STAGES:
        first = offline_data(load_config(ROOT / "configs" / f"{name}.py", f"{dataset},tiny"))
        first.train.num_steps = 2
        workdir = str(tmp_path_factory.mktemp(name))
        loop.train_and_evaluate(first, workdir)
        _FIRST_STAGES[name, dataset] = workdir
    return _FIRST_STAGES[name, dataset]


def test_cifar10_tiny_is_the_mnist_tiny_run():
    """What the two-step run of diffusion:mnist,tiny covers for the CIFAR-10 recipe too."""
    cifar = load_config(ROOT / "configs" / "diffusion.py", "cifar10,tiny")
    mnist = load_config(ROOT / "configs" / "diffusion.py", "mnist,tiny")
    for section in ("model", "diffusion", "sampler"):
        assert cifar[section].to_dict() == mnist[section].to_dict(), section
    assert cifar.data.source == "shapes" and cifar.data.image_shape == (16, 16, 1)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
@pytest.mark.slow
def test_every_tiny_config_trains_two_steps(path, tmp_path, tmp_path_factory):
    """Every config trains two steps and evaluates on MNIST, or its first data set when it has
    no MNIST (the data sets differ only in the files read, which tests/test_data.py covers)."""
    datasets = config_module(path).DATASETS
    config = offline_data(
        load_config(path, f"{'mnist' if 'mnist' in datasets else datasets[0]},tiny")
    )
    config.train.num_steps = 2
    if get_family(config.family).capabilities(config).first_stage:
        config.first_stage.workdir = _tiny_first_stage(tmp_path_factory, config)
    state, summary = loop.train_and_evaluate(config, str(tmp_path))
    assert int(state.step) == 2
    if get_family(config.family).capabilities(config).held_out:
        assert summary["eval"]["examples"] > 0


def test_unknown_variant_and_two_data_sets_are_named():
    with pytest.raises(ConfigError, match=r"\['huge'\] not known; this config offers the data"):
        load_config(ROOT / "configs" / "vae.py", "tiny,huge")
    with pytest.raises(ConfigError, match=r"two data sets \['fashion_mnist', 'mnist'\]"):
        load_config(ROOT / "configs" / "vae.py", "mnist,fashion_mnist")


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
            r"data.path='/nonexistent/mnist.npz' does not exist; mnist is read from there: .* "
            r"set JAXGEN_MNIST=",
        ),
        ("data.source", "csv", r"data.source='csv' is not one of"),
        ("mesh.data", 3, r"mesh.data=3 must be -1 \(all devices\) or the device count, 8"),
        ("eval.iwae_k", 7, r"eval.iwae_k=7 must be >= 1 and a multiple of eval.iwae_chunk"),
        ("evals.held_out.type", "fid", r"evals.held_out.type='fid' is not a registered"),
    ],
)
def test_bad_values_give_clear_errors_before_compiling(key, value, message, tmp_path):
    config = load_config(ROOT / "configs" / "vae.py", "mnist,tiny")
    if key != "data.path":
        config.data.source = "shapes"
    section, _, name = key.rpartition(".")
    target = config
    for part in section.split(".") if section else ():
        target = target[part]
    target[name] = value
    with pytest.raises(ConfigError, match=message):
        loop.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()  # nothing was written


def test_conv_model_needs_divisible_image_size():
    config = load_config(ROOT / "configs" / "vae.py", "mnist,tiny")
    config.data.source, config.data.image_shape = "shapes", (18, 18, 1)
    config.model.kind, config.model.channels = "conv", (8, 8)
    with pytest.raises(ConfigError, match=r"data.image_shape=\(18, 18\) must be divisible by 4"):
        validate(config, num_devices=1)
