"""The family contract: what a trainable model family provides, and the registry of families.

A family is one module that builds a ``Family`` (below) and names it ``FAMILY``. The engine,
``train.py`` and ``sample.py`` ask it; they never test its name. What a family *can do* depends on
its config (a prior is conditional or not, a WGAN takes ``n_critic`` batches a step), so
``capabilities(config)`` answers per config.

Required::

    validate_config(config) -> None          raise ConfigError naming the bad key
    capabilities(config) -> Capabilities
    init(config, rng, example_batch) -> State    (jaxgen.families.state.State)
    train_step(config, state, batch) -> (State, dict[str, scalar])   pure; the engine jits it

``batch`` holds ``image`` (uint8 ``[B, H, W, C]``), ``label`` (int32 ``[B]``) and ``index``
(int32 ``[B]``, the example's position in its split). With ``batches_per_step = k > 1`` every
array gains a leading axis: ``[k, B, ...]``, sharded along the batch axis ``B``.

Optional, each tied to a capability:

    eval_step(config, state, batch) -> dict      held_out: metrics on test batches; scalars
                                                 are averaged over the pass, arrays declared
                                                 in ``eval_reductions`` are summed
    sample(config, state, rng, num, *, labels, **options) -> Samples      generates
    sample_options / prepare_sample                the family's own sampling options
    reconstruct(config, state, images) -> images   reconstructs
    tokenizer(config) -> Tokenizer                 is_tokenizer (VQ-VAE, VQ-GAN): the
    tokenizer_params(config, state) -> pytree      interface a prior uses (first_stage.py)
    constants(config) -> pytree                    when ``init`` fills ``State.constants``:
                                                   the same arrays again, for a restored state

Families are looked up by ``config.family``: a built-in name (``FAMILIES``) or the import path
of a module that defines ``FAMILY`` (``"mypackage.my_gan"``), so a new family needs no edit here.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from jaxgen.errors import ConfigError

FAMILIES = (
    "vae",
    "vqvae",
    "pixelcnn",
    "diffusion",
    "classifier",
    "gan",
    "vqgan",
    "autoencoder_kl",
    "gpt",
    "maskgit",
)
REDUCTIONS = ("mean", "sum", "histogram")


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What a family does under one config.

    ``num_classes``: ``None`` if the family never takes a class, ``0`` for an unconditional
    config of a family that can be conditional, else the number of classes.
    ``batches_per_step``: data batches one ``train_step`` consumes (``[k, B, ...]`` when > 1).
    ``progress_metric``: the train metric the progress bar shows (``""``: none).
    ``label_classes``: labels the family trains on must lie in ``0..label_classes - 1`` (the
    engine checks the data against it before training); 0: the family ignores labels.
    ``first_stage``: the config names a trained tokenizer in ``first_stage.workdir``; the engine
    resolves it and attaches its frozen parameters to ``State.frozen`` (``first_stage.py``).
    ``first_stage_gives``: what the family takes from it, ``"codes"`` (a prior over codes) or
    ``"latents"`` (continuous latents: ``Tokenizer.encode_latents``).
    ``text``: the family is conditioned on captions (batches' ``text`` tokens; prompts).
    ``likelihoods``: held-out metrics (of ``eval_step``) that are likelihoods, such as a VAE's
    IWAE NLL in nats or a prior's bits per code; ``jaxgen.eval`` reports them beside the
    sample metrics.
    """

    generates: bool = False
    reconstructs: bool = False
    num_classes: int | None = None
    held_out: bool = True
    is_tokenizer: bool = False
    first_stage: bool = False
    first_stage_gives: str = "codes"
    text: bool = False
    batches_per_step: int = 1
    progress_metric: str = "loss"
    label_classes: int = 0
    likelihoods: tuple[str, ...] = ()
    # How to steer an unconditional model of this family to a class (for error messages).
    unconditional_hint: str = "train a conditional one (model.num_classes > 0) to choose the class"


class Samples(NamedTuple):
    """What ``sample`` returns: ``images [N, H, W, C]`` in ``[0, 1]`` and int32 ``labels [N]``
    (``None`` for unconditional samples)."""

    images: Any
    labels: Any = None


@dataclasses.dataclass(frozen=True)
class SampleOption:
    """One sampling option of a family: a ``sample.py`` flag ``--<name>`` while that family's
    workdir is sampled. Its type is its default's (bool, int, float, str) unless ``type`` names
    one of those, ``list`` (comma-separated) or ``workdir`` (another run, restored for the family
    as ``(config, state)``). ``default=None`` means "not given" (the family's or the config's
    value) and needs ``type``: without it the flag would read every value as a string. A number
    given must be finite and within the declared bounds: ``minimum`` (``> minimum`` when
    ``above``) and ``maximum``; ``check`` says so in one line naming the flag."""

    name: str
    default: Any
    help: str
    type: str = ""  # "" (from the default), "bool", "int", "float", "str", "list", "workdir"
    aliases: tuple[str, ...] = ()
    minimum: float | None = None
    above: bool = False  # the value must be > minimum, not >= minimum
    maximum: float | None = None

    def __post_init__(self):
        if self.default is None and not self.type:
            raise TypeError(f"SampleOption {self.name!r}: a default of None needs type=")

    def check(self, value) -> None:
        """Raise ConfigError unless a given ``value`` is finite and within the bounds."""
        problem = self.problem(value)
        if problem:
            raise ConfigError(f"--{self.name}={value!r} {problem}")

    def problem(self, value) -> str | None:
        """What is wrong with a given ``value`` ("must be > 0"), or ``None``."""
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if not math.isfinite(value):
            return "is not a finite number"
        low, high = self.minimum, self.maximum
        too_low = low is not None and (value <= low if self.above else value < low)
        if not too_low and (high is None or value <= high):
            return None
        if low is not None and high is not None:
            return f"must be in {'(' if self.above else '['}{low:g}, {high:g}]"
        if low is not None:
            return f"must be {'>' if self.above else '>='} {low:g}"
        return f"must be <= {high:g}"

    def accepts(self, value) -> bool:
        """Whether ``value`` has this option's type (a config's ``sample_defaults`` entry)."""
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "int":
            return isinstance(value, int) and not isinstance(value, bool)
        if self.kind == "float":
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        if self.kind == "list":
            return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        return isinstance(value, str)

    @property
    def kind(self) -> str:
        if self.type:
            return self.type
        return {bool: "bool", int: "int", float: "float"}.get(type(self.default), "str")


@dataclasses.dataclass(frozen=True)
class Tokenizer:
    """A trained first stage seen by a second stage: images <-> a grid of codes or latents.

    Codes (a prior over them: PixelCNN, GPT, MaskGIT), where the first stage quantises
    (``num_codes > 0``):
    ``encode(params, images)``: uint8 ``[B, H, W, C]`` -> int32 ``[B, h, w]``;
    ``decode(params, codes)``: int32 ``[B, h, w]`` -> float ``[B, H, W, C]`` in ``[0, 1]``.

    Continuous latents (a diffusion model in latent space), ``[B, h, w, latent_dim]``:
    ``encode_latents(params, images)``: uint8 images -> float32 latents (a KL autoencoder's
    posterior mean; a VQ model's encoder output before quantisation);
    ``decode_latents(params, latents)`` -> images in ``[0, 1]`` (a VQ model quantises first).

    ``params`` is the pytree ``Family.tokenizer_params`` takes from the first stage's state.
    """

    num_codes: int
    grid_shape: tuple[int, int]
    image_shape: tuple[int, int, int]
    encode: Callable[[Any, Any], Any] | None = None
    decode: Callable[[Any, Any], Any] | None = None
    latent_dim: int = 0
    encode_latents: Callable[[Any, Any], Any] | None = None
    decode_latents: Callable[[Any, Any], Any] | None = None

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(h, w, latent_dim)``: one continuous latent."""
        return (*self.grid_shape, self.latent_dim)

    def offers(self, kind: str) -> bool:
        """Whether this first stage gives ``kind``: ``"codes"`` or ``"latents"``."""
        if kind == "codes":
            return self.num_codes > 0 and self.encode is not None and self.decode is not None
        return self.latent_dim > 0 and self.encode_latents is not None


@dataclasses.dataclass(frozen=True)
class Family:
    """A family's entry points; see the module docstring for the contract."""

    name: str
    validate_config: Callable[[Any], None]
    capabilities: Callable[[Any], Capabilities]
    init: Callable
    train_step: Callable
    eval_step: Callable | None = None
    # Eval metrics that are not batch means: "sum" (summed over the pass, e.g. feature
    # statistics) or "histogram" (summed, reported as <name>_used and <name>_perplexity).
    eval_reductions: Mapping[str, str] = dataclasses.field(default_factory=dict)
    sample: Callable | None = None
    sample_options: tuple[SampleOption, ...] = ()
    # prepare_sample(config, options) -> options: checks the parsed options (raise ConfigError
    # naming the flag) and turns them into ``sample``'s keyword arguments.
    prepare_sample: Callable | None = None
    # sample_classes(config, options) -> classes a sample may be asked for (default:
    # capabilities.num_classes); e.g. a guiding classifier's classes.
    sample_classes: Callable | None = None
    reconstruct: Callable | None = None
    tokenizer: Callable | None = None
    tokenizer_params: Callable | None = None
    # constants(config) -> the pytree ``init`` puts in ``State.constants``: fixed arrays (a
    # frozen perceptual network) that checkpoints leave out and restoring rebuilds from here.
    constants: Callable | None = None

    def __post_init__(self):
        for name, value in self.eval_reductions.items():
            if value not in REDUCTIONS:
                raise ValueError(
                    f"family {self.name!r}: eval_reductions[{name!r}]={value!r} is not one of "
                    f"{REDUCTIONS}"
                )
        names = [o.name for o in self.sample_options] + [
            a for o in self.sample_options for a in o.aliases
        ]
        if len(names) != len(set(names)):
            raise ValueError(f"family {self.name!r} declares a sample option twice: {names}")
        if (self.tokenizer is None) != (self.tokenizer_params is None):
            raise ValueError(f"family {self.name!r}: tokenizer needs tokenizer_params, and back")

    def check(self, caps: Capabilities) -> None:
        """Raise unless every declared capability has its entry point."""
        needs = {
            "held_out": (caps.held_out, self.eval_step),
            "generates": (caps.generates, self.sample),
            "reconstructs": (caps.reconstructs, self.reconstruct),
            "is_tokenizer": (caps.is_tokenizer, self.tokenizer),
        }
        for cap, (declared, fn) in needs.items():
            if declared and fn is None:
                raise ValueError(f"family {self.name!r} declares {cap} but has no entry point")
        if not isinstance(caps.batches_per_step, int) or caps.batches_per_step < 1:
            raise ValueError(
                f"family {self.name!r}: batches_per_step={caps.batches_per_step!r} must be >= 1"
            )


_REGISTERED: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Make ``family`` available under ``family.name`` (for families built at run time)."""
    _REGISTERED[family.name] = family
    return family


def get_family(name: str) -> Family:
    """The family for ``config.family``: a registered or built-in name, or a module path."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name in FAMILIES:
        module_name = f"jaxgen.families.{name}"
    elif isinstance(name, str) and "." in name:
        module_name = name
    else:
        raise ConfigError(
            f"family={name!r} is not a known family; expected one of {FAMILIES} or the import "
            "path of a module that defines FAMILY"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        if name in FAMILIES or e.name not in (module_name, module_name.split(".")[0]):
            raise
        raise ConfigError(
            f"family={name!r} is not a known family and no module {module_name!r} can be "
            f"imported; expected one of {FAMILIES} or a module path"
        ) from e
    family = getattr(module, "FAMILY", None)
    if not isinstance(family, Family):
        raise ConfigError(f"family={name!r}: module {module_name!r} defines no FAMILY")
    return family
