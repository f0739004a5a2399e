"""Two-stage models: finding a trained first stage and attaching its frozen parameters.

A family whose capabilities say ``first_stage`` (a prior over a tokenizer's codes) names the
tokenizer's run in ``first_stage.workdir``. This module is the only place that deals with it:

- ``resolve``: copy that run's ``config.json`` into ``first_stage.config`` (once; a restored
  run's config already holds it), so the prior's own run is self-describing;
- ``check``: the named run is a tokenizer (its family's capabilities say ``is_tokenizer``) made
  for the prior's images: their shape, and their data set unless ``first_stage.allow_other_data``
  consents to a transfer;
- ``attach``: put the tokenizer's parameters (``Family.tokenizer_params`` of its restored state)
  into the prior's ``State.frozen`` when the prior starts fresh, so that the prior's checkpoint
  alone can sample.

The prior itself sees only the ``Tokenizer`` interface (``jaxgen.families.tokenizers``).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from jaxgen.engine import checkpoint as ckpt_lib
from jaxgen.errors import ConfigError
from jaxgen.families import get_family


def resolve(config) -> None:
    """Fill ``first_stage.config`` from ``first_stage.workdir``'s ``config.json``."""
    if "family" in config.first_stage.config:
        return
    workdir = config.first_stage.workdir
    if not workdir or not os.path.exists(os.path.join(workdir, ckpt_lib.CONFIG_FILE)):
        raise ConfigError(
            f"first_stage.workdir={workdir!r} is not a trained run (no "
            f"{ckpt_lib.CONFIG_FILE} there); train the first stage first, e.g. python train.py "
            "--config=configs/vqvae.py:mnist --workdir=runs/vqvae_mnist, and pass "
            "--config.first_stage.workdir=runs/vqvae_mnist"
        )
    config.first_stage.config = ckpt_lib.load_config(workdir)


def check(config) -> None:
    """Raise unless the resolved first stage is a tokenizer for this config's images."""
    fs = config.first_stage.config
    family = get_family(fs.family)
    if not family.capabilities(fs).is_tokenizer:
        raise ConfigError(
            f"first_stage.workdir={config.first_stage.workdir!r} holds a {fs.family!r} run, "
            "which is not a tokenizer; a prior needs the run of a tokenizer such as the VQ-VAE"
        )
    needs = get_family(config.family).capabilities(config).first_stage_gives
    if not family.tokenizer(fs).offers(needs):
        kind = {"codes": "discrete codes", "latents": "continuous latents"}[needs]
        raise ConfigError(
            f"first_stage.workdir={config.first_stage.workdir!r} holds a {fs.family!r} run, "
            f"which gives no {kind}; a {config.family!r} model needs them"
            + (" (train a VQ tokenizer such as the VQ-GAN)" if needs == "codes" else "")
        )
    if tuple(fs.data.image_shape) != tuple(config.data.image_shape):
        raise ConfigError(
            f"data.image_shape={tuple(config.data.image_shape)} differs from the first stage's "
            f"{tuple(fs.data.image_shape)} (first_stage.workdir="
            f"{config.first_stage.workdir!r}); train the prior on the first stage's data"
        )
    mine, theirs = _data_name(config.data), _data_name(fs.data)
    if mine != theirs and not config.first_stage.get("allow_other_data", False):
        raise ConfigError(
            f"the first stage in first_stage.workdir={config.first_stage.workdir!r} was trained "
            f"on {theirs}, this prior on {mine}; train the prior on its first stage's data set "
            f"(e.g. --config=configs/{config.family}.py:{fs.data.get('dataset') or '<data set>'}"
            "), or pass --config.first_stage.allow_other_data=True for a deliberate transfer"
        )


def _data_name(data) -> str:
    """A data section's data set in words: its name, else its source (procedural data)."""
    return repr(data.get("dataset") or data.get("source", ""))


def attach(config, state, first_state):
    """``state`` with the trained first stage's parameters in ``frozen``."""
    fs = config.first_stage.config
    frozen = get_family(fs.family).tokenizer_params(fs, first_state)
    if jax.tree.map(jnp.shape, frozen) != jax.tree.map(jnp.shape, state.frozen):
        raise ConfigError(
            f"the checkpoint in first_stage.workdir={config.first_stage.workdir!r} does not "
            "match its config.json"
        )
    return state.replace(frozen=frozen)
