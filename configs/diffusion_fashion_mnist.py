"""Diffusion (DDPM training, DPM-Solver++ sampling) on Fashion-MNIST (Debian's
dataset-fashion-mnist IDX files).

A small DDPM UNet on 28x28x1: widths 64/128/128 at 28/14/7 pixels, two residual blocks per
level, self-attention at 7x7; noise prediction on the linear schedule with 1000 steps, EMA
weights for sampling.

Variants (comma-separated after the path, e.g. ``configs/diffusion_fashion_mnist.py:demo,cond``):
- ``tiny``: 4 steps of a very small UNet, for tests and smoke runs;
- ``demo``: a narrow UNet (16 base channels) and a short run, about 10 minutes on a 2-core CPU;
- ``cond``: class-conditional on the 10 clothing classes, with label dropout
  (``diffusion.p_uncond = 0.1``) so the model also learns the unconditional case.
"""

from jaxgen.engine.config import base_config, parse_variants, tiny
from jaxgen.families import diffusion


def get_config(arg=None):
    variants = parse_variants(arg, ("tiny", "demo", "cond"))
    c = base_config()
    diffusion.add_defaults(c)
    c.data.source = "idx"
    c.data.path = "/usr/share/datasets/fashion-mnist"
    c.data.image_shape = (28, 28, 1)
    c.model.channels = 64
    c.model.channel_mult = (1, 2, 2)  # 28 -> 14 -> 7
    c.model.num_res_blocks = 2
    c.model.attention_resolutions = (7,)
    c.model.dropout = 0.1
    c.train.batch_size = 128
    c.train.num_steps = 50_000
    c.train.eval_every = 5_000
    c.train.sample_every = 5_000
    c.train.checkpoint_every = 2_000
    c.optimizer.learning_rate = 2e-4
    c.optimizer.warmup_steps = 1_000
    c.optimizer.grad_clip = 1.0
    c.diffusion.ema_decay = 0.9995
    if "cond" in variants:
        c.model.num_classes = 10
        c.diffusion.p_uncond = 0.1
    if "demo" in variants:
        # About 0.4 s a step on a 2-core CPU (3 s at the default width and batch 128).
        c.model.channels = 16
        c.model.num_res_blocks = 1
        c.model.dropout = 0.0
        c.train.batch_size = 32
        c.train.num_steps = 1_500
        c.train.eval_every = 500
        c.train.sample_every = 500
        c.train.checkpoint_every = 500
        c.optimizer.learning_rate = 2e-3
        c.optimizer.warmup_steps = 100
        c.diffusion.ema_decay = 0.995
        c.eval.batch_size = 200
        c.eval.num_examples = 400
        c.eval.final_num_examples = 1_000
    if "tiny" in variants:
        tiny(c)
        c.model.channels = 8
        c.model.channel_mult = (1,)  # no down-sampling: compiles in half the time
        c.model.num_res_blocks = 1
        c.model.attention_resolutions = ()  # the middle block keeps its attention
        c.model.dropout = 0.0
        c.optimizer.warmup_steps = 0
        c.diffusion.ema_decay = 0.9
        c.sampler.steps = 4
    return c
