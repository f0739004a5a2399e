"""Classifiers of MNIST (``../shared/data/mnist.npz`` by default).

By default the noise-aware classifier for classifier guidance of the diffusion models in
``configs/diffusion_mnist.py`` (same linear 1000-step schedule); 32/64/64 channels at 28/14/7
pixels, one residual block a level.

Variants: ``clean`` (the evaluator, trained on clean images only, a separate network from the
guiding one), ``tiny`` (a few steps of a very small network, for tests).
"""

import os

from jaxgen.engine.config import base_config, parse_variants, tiny
from jaxgen.families import classifier

_HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PATH = os.path.normpath(os.path.join(_HERE, "..", "..", "shared", "data", "mnist.npz"))


def get_config(arg=None):
    variants = parse_variants(arg, ("tiny", "clean"))
    c = base_config()
    classifier.add_defaults(c)
    classifier.defaults_28x28(c, variants)
    c.data.source = "npz"
    c.data.path = DEFAULT_PATH
    if "tiny" in variants:
        tiny(c)
        classifier.tiny_model(c)
    return c
