"""Sampling a trained run through its family's contract: options, classes, one compiled call.

``sample.py`` is flags around these functions; they never name a family. A family declares its
options (``Family.sample_options``), checks them and turns them into ``sample``'s keyword
arguments (``prepare_sample``); an option of type ``workdir`` (a guiding classifier, say) is
restored here and handed to the family as ``(config, state)``. ``generate`` compiles the
family's ``sample`` once for a chunk of images and calls it as often as ``num`` needs, so device
memory bounds the chunk, not ``num``.
"""

from __future__ import annotations

import operator
import os
import sys

import jax
import numpy as np
from tqdm import tqdm

from jaxgen.data import captions
from jaxgen.engine.mesh import gather_params
from jaxgen.errors import ConfigError
from jaxgen.families import Family, Samples

# ``sample`` keyword arguments that hold one row per image.
PER_IMAGE = ("label", "text", "negative_text")


def prepare(setup, values: dict, restore) -> dict:
    """``sample``'s keyword arguments from option values by name (missing: the config's
    ``sample_defaults``, else the option's default).

    ``restore(workdir, key=flag) -> (setup, state)`` restores options of type ``workdir``."""
    family: Family = setup.family
    known = {o.name for o in family.sample_options}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"{unknown} are not sampling options of the {family.name!r} family; its options "
            f"are {sorted(known) or 'none'}"
        )
    # NaN, Inf or a value out of an option's bounds would sample without complaint (NaN images,
    # N identical images, a sentinel taken for "the config's"); refuse it here, before anything
    # is compiled or restored.
    for opt in family.sample_options:
        if opt.name in values:
            value = values[opt.name]
            opt.check(float(value) if isinstance(value, np.floating) else value)
    # An option not given takes the config's sample_defaults (checked with the config), else
    # the family's default.
    defaults = setup.config.get("sample_defaults", {})
    options = {}
    for opt in family.sample_options:
        value = values.get(opt.name, defaults.get(opt.name.replace("-", "_"), opt.default))
        if isinstance(value, tuple):
            value = list(value)
        if opt.kind == "workdir" and value:
            other_setup, other_state = restore(value, key=f"--{opt.name}")
            value = (other_setup.config, other_state)
        options[opt.name] = value
    if family.prepare_sample is not None:
        return family.prepare_sample(setup.config, options)
    return {name.replace("-", "_"): value for name, value in options.items()}


def class_choice(setup, kwargs: dict, class_value: str | None, num: int):
    """``(num, ncol, label)`` for ``--class`` (an index, ``'all'`` or ``None``): ``'all'`` gives
    one row per class of ``num // classes`` images; ``label`` is ``None``, an int or an array."""
    family, caps = setup.family, setup.caps
    if class_value is None:
        return num, None, None
    if caps.text:
        raise ConfigError(
            f"--class={class_value}: this {family.name!r} model is conditioned on text, not "
            "classes; give --prompt (or --prompts-file)"
        )
    if caps.num_classes is None:
        raise ConfigError(
            f"--class is for conditional models; this workdir holds a {family.name!r} model, "
            "which takes no class"
        )
    k = caps.num_classes
    if family.sample_classes is not None:
        k = family.sample_classes(setup.config, kwargs)
    if k == 0:
        raise ConfigError(
            "--class was given but the model is unconditional (model.num_classes=0); "
            f"{caps.unconditional_hint}"
        )
    if class_value == "all":
        per_class = max(1, num // k)
        return k * per_class, per_class, np.repeat(np.arange(k, dtype=np.int32), per_class)
    try:
        label = int(class_value)
    except ValueError:
        label = -1
    if not 0 <= label < k:
        raise ConfigError(
            f"--class={class_value!r} is not a class of this model; use 0..{k - 1} or 'all'"
        )
    return num, None, label


def prompt_choice(
    setup,
    workdir: str,
    prompt: str | None,
    negative: str | None,
    prompts_file: str | None,
    num: int,
):
    """``(num, ncol, kwargs, prompts)`` for ``--prompt``, ``--negative-prompt`` and
    ``--prompts-file`` (one prompt per row of the grid, ``num // rows`` images each): the
    prompts as tokens of the run's vocabulary (``workdir/vocab.json``) in ``kwargs["text"]``
    and ``kwargs["negative_text"]``, and the prompt of each image (``None``: none given)."""
    caps, family = setup.caps, setup.family
    given = [f for f, v in (("--prompt", prompt), ("--negative-prompt", negative),
                            ("--prompts-file", prompts_file)) if v is not None]  # fmt: skip
    if not caps.text:
        if given:
            kind = "unconditional"
            if caps.num_classes:
                kind = "class-conditional (give --class)"
            raise ConfigError(
                f"{given[0]} is for text-conditional models; this {family.name!r} model is {kind}"
            )
        return num, None, {}, None
    if prompt is not None and prompts_file is not None:
        raise ConfigError("give --prompt or --prompts-file, not both")
    ncol = None
    texts = None
    if prompts_file is not None:
        try:
            with open(prompts_file) as f:
                rows = [line.strip() for line in f if line.strip()]
        except OSError as e:
            raise ConfigError(f"--prompts-file={prompts_file!r} cannot be read: {e}") from e
        if not rows:
            raise ConfigError(f"--prompts-file={prompts_file!r} holds no prompt (one per line)")
        ncol = max(1, num // len(rows))
        num = ncol * len(rows)
        texts = [row for row in rows for _ in range(ncol)]
    elif prompt is not None:
        texts = [prompt] * num
    vocab = captions.Vocabulary.load(workdir)
    length = setup.config.data.caption_len
    where = os.path.join(workdir, captions.VOCAB_FILE)
    kwargs = {}
    if texts is not None:
        kwargs["text"] = _tokens(vocab, texts, length, "--prompt", where)
    if negative is not None:
        kwargs["negative_text"] = _tokens(
            vocab, [negative] * num, length, "--negative-prompt", where
        )
    return num, ncol, kwargs, texts


def _tokens(vocab, texts, length, flag, where):
    try:
        return vocab.encode_all(texts, length, flag)
    except captions.CaptionError as e:
        raise captions.CaptionError(f"{e}; the run's vocabulary is {where}") from None


def generate(
    setup, state, rng, num: int, kwargs: dict, *, batch: int | None = None, progress: bool = True
) -> Samples:
    """``num`` samples of ``family.sample``, compiled once for chunks of ``batch`` images
    (default: all ``num`` at once) and called ``ceil(num / batch)`` times; the last chunk is
    padded to ``batch`` and trimmed, so there is one compile. Array arguments (a guiding
    classifier's parameters, labels) are arguments of the compiled program, not constants baked
    into it.

    Keys: with one chunk (``num <= batch``) the family gets ``rng`` itself, so the images are
    bit-identical to an unchunked call; with several, chunk ``i`` gets
    ``jax.random.fold_in(rng, i)``. Per-image arrays (``PER_IMAGE``: a label per image, a
    prompt's tokens per image) are split per chunk; labels the family chooses itself (classes
    in turn) restart in each chunk and are returned as used. ``progress``: a tqdm bar on stderr
    when there are several chunks.
    """
    parts = list(generate_chunks(setup, state, rng, num, kwargs, batch=batch, progress=progress))
    if len(parts) == 1:
        return parts[0]
    images = np.concatenate([p.images for p in parts])
    if parts[0].labels is None:
        return Samples(images, None)
    return Samples(images, np.concatenate([p.labels for p in parts]))


def generate_chunks(
    setup, state, rng, num: int, kwargs: dict, *, batch: int | None = None, progress: bool = True
):
    """``generate`` one chunk at a time: yields host ``Samples`` of at most ``batch`` images,
    so a caller that reduces each chunk (``jaxgen.eval``) never holds all ``num`` images."""
    family, config = setup.family, setup.config
    num, batch = operator.index(num), operator.index(num if batch is None else batch)
    if num < 1 or batch < 1:
        raise ConfigError(f"num={num} and batch={batch} must be >= 1")
    chunk = min(num, batch)
    chunks = -(-num // chunk)
    per_image = {}  # per-image arrays (labels, prompt tokens), split into the chunks
    for key in PER_IMAGE:
        value = kwargs.get(key)
        if isinstance(value, (jax.Array, np.ndarray)) and np.ndim(value) > 0:
            if len(value) != num:
                raise ConfigError(f"{len(value)} {key} rows were given for {num} images")
            value = np.asarray(value)
            pad = chunks * chunk - num  # the last chunk's padding repeats the last row
            per_image[key] = np.concatenate([value, np.repeat(value[-1:], pad, axis=0)])
    leaves, treedef = jax.tree.flatten(kwargs)
    is_array = [isinstance(leaf, (jax.Array, np.ndarray)) for leaf in leaves]

    def run(state, rng, arrays):
        it = iter(arrays)
        full = [next(it) if a else leaf for leaf, a in zip(leaves, is_array, strict=True)]
        state = gather_params(state, setup.mesh)  # whole parameters under mesh.fsdp > 1
        out = family.sample(config, state, rng, chunk, **jax.tree.unflatten(treedef, full))
        return Samples(*out) if isinstance(out, tuple) else Samples(out)

    compiled = jax.jit(run)

    def call(i):
        rows = {k: v[i * chunk : (i + 1) * chunk] for k, v in per_image.items()}
        kwargs_i = {**kwargs, **rows}
        leaves_i = jax.tree.leaves(kwargs_i)
        arrays = [leaf for leaf, a in zip(leaves_i, is_array, strict=True) if a]
        return compiled(state, rng if chunks == 1 else jax.random.fold_in(rng, i), arrays)

    bar = tqdm(
        total=num,
        unit="img",
        desc="sample",
        file=sys.stderr,
        dynamic_ncols=True,
        disable=not progress or chunks == 1,
    )
    with bar:
        pending = call(0)
        for i in range(chunks):
            # Dispatch the next chunk before this one comes back to the host, so that the
            # device keeps working while the host copies (at most two chunks on the device).
            ahead = call(i + 1) if i + 1 < chunks else None
            keep = min(chunk, num - i * chunk)
            images = np.asarray(pending.images)[:keep]
            labels = None if pending.labels is None else np.asarray(pending.labels)[:keep]
            bar.update(keep)
            pending = ahead
            yield Samples(images, labels)


def count_nonfinite(images) -> int:
    """How many of ``images [N, ...]`` have a NaN or Inf value."""
    images = np.asarray(images)
    return int((~np.isfinite(images.reshape(len(images), -1))).any(axis=1).sum())


def reconstruct(setup, state, images: np.ndarray) -> np.ndarray:
    """The family's reconstructions of uint8 ``images``, in ``[0, 1]``."""
    return np.asarray(reconstructor(setup)(state, images))


def reconstructor(setup):
    """The family's ``reconstruct`` as one jitted ``(state, uint8 images) -> images`` (compiled
    once per image batch shape)."""
    if not setup.caps.reconstructs:
        raise ConfigError(f"family {setup.family.name!r} does not reconstruct")
    return jax.jit(
        lambda s, x: setup.family.reconstruct(setup.config, gather_params(s, setup.mesh), x)
    )
