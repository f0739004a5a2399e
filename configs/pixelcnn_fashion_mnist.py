"""Gated PixelCNN prior over the codes of a trained Fashion-MNIST VQ-VAE
(``configs/vqvae_fashion_mnist.py``), read from ``first_stage.workdir`` (default
``runs/vqvae_fashion_mnist``):

    python train.py --config=configs/vqvae_fashion_mnist.py --workdir=runs/vqvae_fashion_mnist
    python train.py --config=configs/pixelcnn_fashion_mnist.py:cond \
        --workdir=runs/pixelcnn_fashion_mnist
    python sample.py --workdir=runs/pixelcnn_fashion_mnist --class=all --num=100

Variants (comma-separated after the path):
- ``cond``: class-conditional on the garment class;
- ``tiny``: a few steps of a very small network, for tests (it still needs a first stage).
"""

from jaxgen.engine.config import base_config, parse_variants, tiny
from jaxgen.families import pixelcnn


def get_config(arg=None):
    variants = parse_variants(arg, ("tiny", "cond"))
    c = base_config()
    pixelcnn.add_defaults(c)
    pixelcnn.defaults_28x28(c, variants, "runs/vqvae_fashion_mnist")
    c.data.source = "idx"
    c.data.path = "/usr/share/datasets/fashion-mnist"
    if "tiny" in variants:
        tiny(c)
        pixelcnn.tiny_model(c)
    return c
