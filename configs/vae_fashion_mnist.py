"""VAE on Fashion-MNIST (IDX files from Debian's dataset-fashion-mnist package).

Variants (comma-separated after the path, e.g. ``configs/vae_fashion_mnist.py:tiny``):
- ``tiny``: 4 steps of a small model, for tests and smoke runs;
- ``demo``: what ``make demo`` trains, sized to finish within 10 minutes on 2 CPU cores;
- ``mlp``: the MLP encoder/decoder instead of the conv pair;
- ``bernoulli``: Bernoulli likelihood on dynamically binarised images.
"""

from jaxgen.engine.config import base_config, parse_variants, tiny
from jaxgen.families import vae


def get_config(arg=None):
    variants = parse_variants(arg, ("tiny", "demo", "mlp", "bernoulli"))
    c = base_config()
    vae.add_defaults(c)
    c.data.source = "idx"
    c.data.path = "/usr/share/datasets/fashion-mnist"
    c.data.image_shape = (28, 28, 1)
    # Grey-level clothes: a discretised Gaussian is a true likelihood over the 256 levels.
    c.loss.likelihood = "discretized_gaussian"
    c.loss.binarize = "none"
    c.model.latent_dim = 32
    c.train.batch_size = 128
    c.train.num_steps = 20_000
    c.optimizer.learning_rate = 1e-3
    c.optimizer.warmup_steps = 200
    # Cosine decay to the last step; follows --config.train.num_steps overrides.
    c.optimizer.decay_steps = c.train.get_ref("num_steps") - c.optimizer.warmup_steps
    if "mlp" in variants:
        c.model.kind = "mlp"
    if "bernoulli" in variants:
        c.loss.likelihood = "bernoulli"
        c.loss.binarize = "dynamic"
    if "demo" in variants:
        # Narrower convs: about 3x the throughput of (32, 64) on a 2-core CPU.
        c.model.channels = (16, 32)
        c.model.hidden = (256,)
        c.train.num_steps = 2_000
        c.train.eval_every = 1_000
        c.train.sample_every = 1_000
        c.train.checkpoint_every = 500
        c.eval.num_examples = 1_000
        c.eval.final_num_examples = 2_000
        c.eval.iwae_k = 16
    if "tiny" in variants:
        tiny(c)
        c.model.latent_dim = 4
        c.model.channels = (8, 8)
        c.model.hidden = (32, 32)
        c.optimizer.warmup_steps = 0
        c.optimizer.decay_steps = 0
        c.eval.iwae_k = 4
        c.eval.iwae_chunk = 2
    return c
