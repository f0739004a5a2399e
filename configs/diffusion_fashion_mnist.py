"""Diffusion (DDPM training, DPM-Solver++ sampling) on Fashion-MNIST (Debian's
dataset-fashion-mnist IDX files).

A small DDPM UNet on 28x28x1: widths 64/128/128 at 28/14/7 pixels, two residual blocks per
level, self-attention at 7x7; noise prediction on the linear schedule with 1000 steps, EMA
weights for sampling.

Variants (comma-separated after the path, e.g. ``configs/diffusion_fashion_mnist.py:demo,cond``):
- ``tiny``: 4 steps of a very small UNet, for tests and smoke runs;
- ``demo``: a narrow UNet (16 base channels) and a short run, about 10 minutes on a 2-core CPU;
- ``cpu``: the README's model: 16/32/64 channels at 28/14/7 pixels, one residual block a level,
  9,000 steps at batch 32, about an hour on a 2-core CPU;
- ``cond``: class-conditional on the 10 clothing classes, with label dropout
  (``diffusion.p_uncond = 0.1``) so the model also learns the unconditional case.
"""

from jaxgen.engine.config import base_config, parse_variants, tiny
from jaxgen.families import diffusion


def get_config(arg=None):
    variants = parse_variants(arg, ("tiny", "demo", "cpu", "cond"))
    c = base_config()
    diffusion.add_defaults(c)
    diffusion.small_unet_28x28(c, variants)
    c.data.source = "idx"
    c.data.path = "/usr/share/datasets/fashion-mnist"
    if "tiny" in variants:
        tiny(c)
        diffusion.tiny_model(c)
    return c
