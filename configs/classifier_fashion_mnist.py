"""Classifiers of Fashion-MNIST (Debian's dataset-fashion-mnist IDX files).

By default the noise-aware classifier for classifier guidance of the diffusion models in
``configs/diffusion_fashion_mnist.py``: it sees images noised on the same linear 1000-step
schedule, at times drawn like the diffusion model's, and reports its test accuracy at several
noise levels. 32/64/64 channels at 28/14/7 pixels, one residual block a level.

Variants (comma-separated after the path):
- ``clean``: the evaluator, trained on clean images only; it scores guided samples, so it is a
  separate network from the guiding one;
- ``tiny``: a few steps of a very small network, for tests.
"""

from jaxgen.engine.config import base_config, parse_variants, tiny
from jaxgen.families import classifier


def get_config(arg=None):
    variants = parse_variants(arg, ("tiny", "clean"))
    c = base_config()
    classifier.add_defaults(c)
    classifier.defaults_28x28(c, variants)
    c.data.source = "idx"
    c.data.path = "/usr/share/datasets/fashion-mnist"
    if "tiny" in variants:
        tiny(c)
        classifier.tiny_model(c)
    return c
