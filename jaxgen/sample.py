r"""Sample from a trained jaxgen model.

    python sample.py --workdir=runs/vae --num=64 [--seed=0] [--out=samples.png] [--reconstruct]

A model that only reconstructs (a VQ-VAE alone) writes reconstructions; a conditional model
generates per class with ``--class=N|all`` (``all``: one row per class, ``--num // classes``
images each):

    python sample.py --workdir=runs/pixelcnn_mnist --class=all --num=100 [--temperature=1.0]

Each family has its own sampling options, which become flags when its workdir is sampled
(``python sample.py --workdir=runs/x --help`` lists them). Guided generation from a diffusion
model, for instance:

    python sample.py --workdir=runs/cfg --sampler=dpm_solver++ --steps=20 --guidance=cfg \
        --scale=3 --class=7 [--negative-class=1] --num=64
    python sample.py --workdir=runs/diff --guidance=classifier --classifier-workdir=runs/clf \
        --scale=2 --class=all --num=100

A text-conditional model takes prompts (words of the vocabulary its run saved, ``vocab.json``)
and, with classifier-free guidance, a negative prompt; ``--prompts-file`` gives one prompt per
row of the grid:

    python sample.py --workdir=runs/ldm_pairs --prompt "a 3 to the left of a 7" \
        --negative-prompt "" --scale 7.5 --sampler dpm_solver++ --steps 20 --num 16

Restores the latest checkpoint (EMA parameters where the family keeps them) and writes a PNG grid
and an ``.npz`` of the images (float32 ``[N, H, W, C]`` in [0, 1], and their ``labels`` when
conditional) beside it. Images are generated ``--batch`` at a time (one compile, a progress bar
when there are several chunks); with ``--num <= --batch`` the images are those of one call with
the ``--seed`` key, with more, chunk ``i`` uses ``jax.random.fold_in(key, i)``. Images with NaN
or Inf values (a diverged checkpoint) are refused and nothing is written.

From an installed package (no repository needed) the same command is ``jaxgen-sample`` or
``python -m jaxgen.sample``.
"""

import os
import sys

import jax
import numpy as np
from absl import app, flags, logging

from jaxgen.data import DataError, load_splits
from jaxgen.engine import cli, loop, sampling
from jaxgen.engine.config import MAX_SEED
from jaxgen.engine.images import save_grid
from jaxgen.errors import CheckpointError, ConfigError
from jaxgen.files import atomic_path, target_of, unwritable_reason

_WORKDIR = flags.DEFINE_string("workdir", None, "A train.py workdir.")
_NUM = flags.DEFINE_integer("num", 64, "How many images.", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.", lower_bound=0, upper_bound=MAX_SEED)
_BATCH = flags.DEFINE_integer(
    "batch",
    256,
    "Images per compiled sampling call: --num is made in chunks of this many (bounds device "
    "memory). With --num <= --batch one call with the --seed key; with more, chunk i uses "
    "fold_in(key, i).",
    lower_bound=1,
)
_OUT = flags.DEFINE_string("out", None, "PNG path (default: <workdir>/samples.png).")
_RECON = flags.DEFINE_bool(
    "reconstruct",
    False,
    "Reconstruct the first --num test images instead (families that "
    "encode); the grid shows originals and reconstructions in alternate rows.",
)
_CLASS = flags.DEFINE_string(
    "class", None, "Class to generate: an index, or 'all' for one row per class (default: in turn)."
)
_PROMPT = flags.DEFINE_string(
    "prompt", None, "Text models: the prompt of every image (words of the run's vocab.json)."
)
_NEGATIVE_PROMPT = flags.DEFINE_string(
    "negative-prompt",
    None,
    "Text models with --guidance=cfg: steer away from this prompt (replaces the empty prompt).",
)
_PROMPTS_FILE = flags.DEFINE_string(
    "prompts-file", None, "Text models: a file of prompts, one per row of the grid."
)
flags.mark_flag_as_required("workdir")

_OPTIONS: dict = {}  # the workdir's family's sampling options as flags, defined by ``run``


def _reconstructions(setup, state, num):
    _, test = load_splits(setup.config.data)
    originals = test.get(np.arange(min(num, test.num_examples)))["image"]
    recon = sampling.reconstruct(setup, state, originals)
    originals = originals.astype(np.float32) / 255.0
    ncol = 8
    rows = []  # alternate rows: originals, then their reconstructions
    for i in range(0, len(originals), ncol):
        rows += [originals[i : i + ncol], recon[i : i + ncol]]
    return np.concatenate(rows), ncol, {"originals": originals, "reconstructions": recon}


def _check_writable(out, npz):
    for path, what in ((out, "--out"), (npz, "the .npz beside --out")):
        reason = unwritable_reason(path)
        if reason:
            raise ConfigError(f"{what} ({path}) {reason}")


def _write(grid, ncol, arrays, out, npz):
    """The PNG grid and the ``.npz``, each through a temporary file that is removed if
    anything fails (so a failed PNG leaves no ``.npz`` either)."""
    with atomic_path(npz) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        save_grid(grid, out, ncol)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    try:
        setup, state = loop.restore_for_inference(_WORKDIR.value)
        caps, name = setup.caps, setup.family.name
        reconstruct = _RECON.value
        prompt_flags = (_PROMPT.value, _NEGATIVE_PROMPT.value, _PROMPTS_FILE.value)
        if not caps.generates and any(v is not None for v in prompt_flags):
            raise ConfigError(
                f"--prompt: {_WORKDIR.value} holds a {name!r} model, which does not generate"
            )
        if not caps.generates and _CLASS.value is not None:
            raise ConfigError(
                f"--class={_CLASS.value}: {_WORKDIR.value} holds a {name!r} model, which does "
                "not generate (it reconstructs; train a prior on its codes to generate a class)"
                if caps.reconstructs
                else f"--class={_CLASS.value}: {_WORKDIR.value} holds a {name!r} model, which "
                "does not generate"
            )
        if not caps.generates and caps.reconstructs and not reconstruct:
            print(
                f"{name!r} does not generate on its own (train a prior on its codes for that); "
                "writing reconstructions of test images"
            )
            reconstruct = True
        out = _OUT.value or os.path.join(
            _WORKDIR.value, "reconstructions.png" if reconstruct else "samples.png"
        )
        npz = os.path.splitext(out)[0] + ".npz"
        _check_writable(out, npz)  # before any sampling
        if reconstruct:
            if _CLASS.value is not None or any(v is not None for v in prompt_flags):
                raise ConfigError("--class and --prompt are for sampling, not --reconstruct")
            grid, ncol, arrays = _reconstructions(setup, state, _NUM.value)
            made = arrays["reconstructions"]
        else:
            if not caps.generates:
                raise ConfigError(
                    f"{_WORKDIR.value} holds a {name!r} model, which does not generate; give "
                    "the workdir of a generative model"
                )
            values = cli.given_options(_OPTIONS)
            kwargs = sampling.prepare(setup, values, loop.restore_for_inference)
            num, ncol, label = sampling.class_choice(setup, kwargs, _CLASS.value, _NUM.value)
            if label is not None:
                kwargs["label"] = label
            num, prompt_ncol, prompt_kwargs, prompts = sampling.prompt_choice(
                setup, _WORKDIR.value, *prompt_flags, num
            )
            kwargs.update(prompt_kwargs)
            ncol = prompt_ncol or ncol
            key = jax.random.PRNGKey(_SEED.value)
            grid, labels = sampling.generate(setup, state, key, num, kwargs, batch=_BATCH.value)
            arrays = {"images": grid}
            made = grid
            if labels is not None:
                arrays["labels"] = labels
            if prompts is not None:
                arrays["prompts"] = np.array(prompts)
            if _NEGATIVE_PROMPT.value is not None:
                arrays["negative_prompt"] = np.array(_NEGATIVE_PROMPT.value)
        bad = sampling.count_nonfinite(made)
        if bad:
            raise ConfigError(
                f"{bad} of {len(made)} {'reconstructions' if reconstruct else 'images'} have "
                "NaN or Inf values; wrote nothing. Likely a diverged or corrupt checkpoint (a "
                f"NaN loss in {os.path.join(_WORKDIR.value, 'metrics.jsonl')}?) or a bad option "
                "value"
            )
        try:
            _write(grid, ncol, arrays, out, npz)
        except OSError as e:  # past _check_writable: a full disk, a folder made meanwhile
            path = str(e.filename2 or e.filename or out)
            path = target_of(path)  # the file meant, not its temporary name
            print(f"error: cannot write {path}: {e.strerror or e}", file=sys.stderr)
            sys.exit(2)
        print(f"wrote {out} and {npz} (step {int(state.step)}, family {name})")
    except (ConfigError, DataError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def run() -> None:
    """The command: ``sample.py``, ``jaxgen-sample`` and ``python -m jaxgen.sample``."""
    cli.prepare_process()
    _OPTIONS.update(cli.define_options(cli.family_named_by(sys.argv)))
    cli.show_in_help(__name__, __doc__)
    app.run(main, flags_parser=cli.parse_flags)


if __name__ == "__main__":
    run()
