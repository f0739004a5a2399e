"""Sample from a trained jaxgen model.

    python sample.py --workdir=runs/vae --num=64 [--seed=0] [--out=samples.png] [--reconstruct]

Restores the latest checkpoint (EMA parameters where the family keeps them) and writes a PNG grid
and an ``.npz`` of the images (float32 ``[N, H, W, C]`` in [0, 1]) beside it. Family options are
flags too (e.g. --temperature for the VAE).
"""

import os
import sys

import jax
import numpy as np
from absl import app, flags, logging

from jaxgen.data import DataError, load_splits
from jaxgen.engine import loop
from jaxgen.engine.images import save_grid
from jaxgen.errors import CheckpointError, ConfigError
from jaxgen.families import FAMILIES, get_family

_WORKDIR = flags.DEFINE_string("workdir", None, "A train.py workdir.")
_NUM = flags.DEFINE_integer("num", 64, "How many images.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_OUT = flags.DEFINE_string("out", None, "PNG path (default: <workdir>/samples.png).")
_RECON = flags.DEFINE_bool(
    "reconstruct",
    False,
    "Reconstruct the first --num test images instead (families that "
    "encode); the grid shows originals and reconstructions in alternate rows.",
)
flags.mark_flag_as_required("workdir")

# Each family's sampling options become flags, typed by their defaults; only the chosen
# family's options are passed on.
_DEFINE = {
    bool: flags.DEFINE_bool,
    int: flags.DEFINE_integer,
    float: flags.DEFINE_float,
    str: flags.DEFINE_string,
}
_OPTION_FLAGS = {}
for _name in FAMILIES:
    for _opt, (_default, _help) in get_family(_name).SAMPLE_OPTIONS.items():
        if _opt not in _OPTION_FLAGS:
            _OPTION_FLAGS[_opt] = _DEFINE[type(_default)](_opt, _default, _help)


def _reconstructions(setup, state, num):
    family = setup.family
    if not hasattr(family, "reconstruct"):
        raise ConfigError(f"family {setup.config.family!r} does not reconstruct")
    _, test = load_splits(setup.config.data)
    originals = test.get(np.arange(min(num, test.num_examples)))["image"]
    recon = jax.jit(lambda s, x: family.reconstruct(setup.config, s, x))(state, originals)
    originals = originals.astype(np.float32) / 255.0
    recon = np.asarray(recon)
    ncol = 8
    rows = []  # alternate rows: originals, then their reconstructions
    for i in range(0, len(originals), ncol):
        rows += [originals[i : i + ncol], recon[i : i + ncol]]
    return np.concatenate(rows), ncol, {"originals": originals, "reconstructions": recon}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    try:
        if _NUM.value < 1:
            raise ConfigError(f"--num={_NUM.value} must be >= 1")
        setup, state = loop.restore_for_inference(_WORKDIR.value)
        name = "reconstructions.png" if _RECON.value else "samples.png"
        out = _OUT.value or os.path.join(_WORKDIR.value, name)
        if _RECON.value:
            grid, ncol, arrays = _reconstructions(setup, state, _NUM.value)
        else:
            family = setup.family
            options = {k: _OPTION_FLAGS[k].value for k in family.SAMPLE_OPTIONS}
            fn = jax.jit(lambda s, r: family.sample(setup.config, s, r, _NUM.value, **options))
            grid = np.asarray(fn(state, jax.random.PRNGKey(_SEED.value)))
            ncol, arrays = None, {"images": grid}
        save_grid(grid, out, ncol)
        npz = os.path.splitext(out)[0] + ".npz"
        np.savez_compressed(npz, **arrays)
        print(f"wrote {out} and {npz} (step {int(state.step)}, family {setup.config.family})")
    except (ConfigError, DataError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
