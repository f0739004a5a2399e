"""Gated PixelCNN prior over the codes of a trained MNIST VQ-VAE (``configs/vqvae_mnist.py``),
read from ``first_stage.workdir`` (default ``runs/vqvae_mnist``):

    python train.py --config=configs/vqvae_mnist.py --workdir=runs/vqvae_mnist
    python train.py --config=configs/pixelcnn_mnist.py:cond --workdir=runs/pixelcnn_mnist
    python sample.py --workdir=runs/pixelcnn_mnist --class=all --num=100

Variants (comma-separated after the path):
- ``cond``: class-conditional on the digit;
- ``tiny``: a few steps of a very small network, for tests (it still needs a first stage).
"""

import os

from jaxgen.engine.config import base_config, parse_variants, tiny
from jaxgen.families import pixelcnn

_HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PATH = os.path.normpath(os.path.join(_HERE, "..", "..", "shared", "data", "mnist.npz"))


def get_config(arg=None):
    variants = parse_variants(arg, ("tiny", "cond"))
    c = base_config()
    pixelcnn.add_defaults(c)
    pixelcnn.defaults_28x28(c, variants, "runs/vqvae_mnist")
    c.data.source = "npz"
    c.data.path = DEFAULT_PATH
    if "tiny" in variants:
        tiny(c)
        pixelcnn.tiny_model(c)
    return c
