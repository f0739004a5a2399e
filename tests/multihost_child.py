"""One process of the 2-process run in ``tests/test_multihost.py`` (not a test module).

``python tests/multihost_child.py PORT PROCESS_ID FRESH_WORKDIR RESUME_WORKDIR OUT.npz``

Joins a 2-process JAX run on localhost (gloo CPU collectives, 2 fake CPU devices per process:
the parent sets ``XLA_FLAGS`` and ``JAX_PLATFORMS``), then, recording every index the data
splits are asked for:

1. trains ``tiny_config()`` from scratch in ``FRESH_WORKDIR`` through
   ``loop.train_and_evaluate`` (checkpoints, final eval and sample grid included);
2. restores that run with ``loop.restore_for_inference`` and samples 8 images with
   ``sampling.generate``;
3. resumes the run in ``RESUME_WORKDIR`` (a 1-process checkpoint the parent wrote) to the end.

Everything the parent checks goes to ``OUT.npz``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

NUM_STEPS = 4
SAMPLE_NUM = 8


def tiny_config():
    """The tiny VAE on procedural 16x16 shapes: 4 steps of global batch 16, checkpoints at
    steps 2 and 4, a final eval of 32 test images and a final sample grid."""
    from jaxgen.configs import vae

    config = vae.get_config("mnist,tiny")
    config.data.source = "shapes"
    config.data.image_shape = (16, 16, 1)
    config.data.num_train, config.data.num_test = 256, 64
    config.train.num_steps = NUM_STEPS
    config.train.checkpoint_every = 2
    config.train.sample_num = SAMPLE_NUM
    config.train.progress = False
    return config


def flat_leaves(tree) -> dict:
    """``{path: numpy array}`` of a pytree of global arrays (gathered across processes where
    an array is split over devices of several processes)."""
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if isinstance(leaf, jax.Array) and not (
            leaf.is_fully_addressable or leaf.is_fully_replicated
        ):
            leaf = multihost_utils.process_allgather(leaf, tiled=True)
        out[jax.tree_util.keystr(path)] = np.asarray(jax.device_get(leaf))
    return out


def sample_images(setup, state):
    import jax

    from jaxgen.engine import loop, sampling

    kwargs = sampling.prepare(setup, {}, loop.restore_for_inference)
    out = sampling.generate(setup, state, jax.random.PRNGKey(7), SAMPLE_NUM, kwargs, progress=False)
    return out.images


def main(argv) -> None:
    port, process_id, fresh, resume, out = argv
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}",
        num_processes=2,
        process_id=int(process_id),
        initialization_timeout=60,
    )
    import numpy as np

    from jaxgen.engine import loop

    calls: dict[str, list] = {"train": [], "test": []}

    def recording(split, name):
        def get(indices):
            calls[name].append(np.array(indices, np.int64))
            return split.get(indices)

        return dataclasses.replace(split, get=get)

    real_load_splits = loop.load_splits

    def load_splits(data_config):
        train, test = real_load_splits(data_config)
        return recording(train, "train"), recording(test, "test")

    loop.load_splits = load_splits

    config = tiny_config()
    result = {
        "process_index": np.int64(jax.process_index()),
        "process_count": np.int64(jax.process_count()),
        "local_devices": np.int64(jax.local_device_count()),
        "devices": np.int64(jax.device_count()),
    }

    state, summary = loop.train_and_evaluate(config, fresh)
    result.update({f"fresh/{k}": v for k, v in flat_leaves(state).items()})
    result["fresh_train_calls"] = np.stack(calls["train"])
    result["fresh_test_calls"] = np.stack(calls["test"])
    result["fresh_summary"] = np.array(json.dumps(summary, default=str))

    setup, restored = loop.restore_for_inference(fresh)
    result.update({f"restored/{k}": v for k, v in flat_leaves(restored).items()})
    result["images"] = np.asarray(sample_images(setup, restored))

    calls["train"].clear()
    calls["test"].clear()
    state, summary = loop.train_and_evaluate(config, resume)
    result.update({f"resumed/{k}": v for k, v in flat_leaves(state).items()})
    result["resume_train_calls"] = np.stack(calls["train"])
    result["resume_summary"] = np.array(json.dumps(summary, default=str))

    np.savez(out, **result)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
