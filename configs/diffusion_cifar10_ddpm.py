"""DDPM on CIFAR-10 (Ho et al. 2020): the paper's 35.7M-parameter UNet and training recipe.

UNet widths 128/256/256/256 at 32/16/8/4 pixels, two residual blocks per level, self-attention
at 16x16, dropout 0.1; linear schedule with 1000 steps, noise prediction, the simple loss;
Adam at 2e-4 with 5000 warm-up steps, gradient clipping at 1, batch 128, EMA decay 0.9999.
(The paper also flips training images horizontally at random; this config does not.)

Data: the TFDS ``cifar10`` data set, already prepared in a data dir (nothing is downloaded):
``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets`` by default; set it with
``--config.data.path=/path/to/tensorflow_datasets``.

Variants: ``tiny``: a very small UNet for tests and smoke runs. It trains on the procedural
16x16 one-channel ``shapes`` data (``data.source='shapes'``, ``data.image_shape=(16, 16, 1)``),
so it runs without CIFAR-10 on the machine.
"""

import os

from jaxgen.engine.config import base_config, parse_variants, tiny
from jaxgen.families import diffusion

DEFAULT_PATH = os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))


def get_config(arg=None):
    variants = parse_variants(arg, ("tiny",))
    c = base_config()
    diffusion.add_defaults(c)  # the defaults are this paper's UNet
    c.data.source = "tfds"
    c.data.name = "cifar10"
    c.data.path = DEFAULT_PATH
    c.data.image_shape = (32, 32, 3)
    c.model.channels = 128
    c.model.channel_mult = (1, 2, 2, 2)
    c.model.num_res_blocks = 2
    c.model.attention_resolutions = (16,)
    c.model.dropout = 0.1
    c.diffusion.schedule = "linear"
    c.diffusion.num_steps = 1000
    c.diffusion.prediction = "eps"
    c.diffusion.ema_decay = 0.9999
    c.train.batch_size = 128
    c.train.num_steps = 800_000
    c.train.eval_every = 10_000
    c.train.sample_every = 10_000
    c.train.checkpoint_every = 10_000
    c.optimizer.learning_rate = 2e-4
    c.optimizer.warmup_steps = 5_000
    c.optimizer.grad_clip = 1.0
    if "tiny" in variants:
        tiny(c)
        c.data.source = "shapes"
        c.data.image_shape = (16, 16, 1)
        c.data.num_train, c.data.num_test = 256, 64
        diffusion.tiny_model(c)
    return c
