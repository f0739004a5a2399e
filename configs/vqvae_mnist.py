"""VQ-VAE on MNIST (``../shared/data/mnist.npz`` by default): K = 512 codes of D = 64 on a 7x7
grid, EMA codebook (decay 0.99) with dead-code restarts after 100 unused steps.

Variants (comma-separated after the path):
- ``loss``: the codebook learned by the VQ loss instead of EMA;
- ``norestart``: no dead-code restarts (to see what they buy);
- ``tiny``: a few steps of a very small model, for tests.

The PixelCNN prior over its codes: ``configs/pixelcnn_mnist.py``.
"""

import os

from jaxgen.engine.config import base_config, parse_variants, tiny
from jaxgen.families import vqvae

_HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PATH = os.path.normpath(os.path.join(_HERE, "..", "..", "shared", "data", "mnist.npz"))


def get_config(arg=None):
    variants = parse_variants(arg, ("tiny", "loss", "norestart"))
    c = base_config()
    vqvae.add_defaults(c)
    vqvae.defaults_28x28(c, variants)
    c.data.source = "npz"
    c.data.path = DEFAULT_PATH
    if "tiny" in variants:
        tiny(c)
        vqvae.tiny_model(c)
    return c
