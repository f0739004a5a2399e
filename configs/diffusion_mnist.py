"""Diffusion (DDPM training, DPM-Solver++ sampling) on MNIST (``../shared/data/mnist.npz`` by
default).

The same small DDPM UNet as ``diffusion_fashion_mnist.py``: widths 64/128/128 at 28/14/7
pixels, two residual blocks per level, self-attention at 7x7, noise prediction on the linear
schedule, EMA weights for sampling.

Variants: ``tiny`` (tests: 4 steps of a very small UNet), ``demo`` (a narrow UNet and a short
run for a 2-core CPU), ``cpu`` (the README's model: 16/32/64 channels, 9,000 steps at batch 32,
about an hour on a 2-core CPU), ``cond`` (class-conditional on the 10 digits, label dropout 0.1).
"""

import os

from jaxgen.engine.config import base_config, parse_variants, tiny
from jaxgen.families import diffusion

_HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PATH = os.path.normpath(os.path.join(_HERE, "..", "..", "shared", "data", "mnist.npz"))


def get_config(arg=None):
    variants = parse_variants(arg, ("tiny", "demo", "cpu", "cond"))
    c = base_config()
    diffusion.add_defaults(c)
    diffusion.small_unet_28x28(c, variants)
    c.data.source = "npz"
    c.data.path = DEFAULT_PATH
    if "tiny" in variants:
        tiny(c)
        diffusion.tiny_model(c)
    return c
