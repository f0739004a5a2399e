"""The KL autoencoder (latent diffusion's first stage, Rombach et al. 2022) for 28x28 images and
28x56 MNIST pairs: the VQ-GAN's networks at the sizes its CPU recipes use (widths 16, 32, 64;
one residual block a level; attention at the lowest resolution) with a diagonal Gaussian
bottleneck of ``kl.dim`` channels, KL weight 1e-6 as in the paper, trained with L1 + LPIPS and
the PatchGAN with the adaptive weight (``configs/vqgan.py``).

Downsampling factor 4 by default (28x28 -> 7x7x4 latents, 196 values for 784 pixels; pairs
7x14x4); ``f2``: factor 2 (14x14x2, 392 values). A diffusion model trains on its latents with
``configs/ldm.py`` (``--config.first_stage.workdir=<this run>``).

Schedule: 1,200 Adam steps of batch 32 (pairs: 16, the same pixels a step) at 1e-3 (betas 0.5,
0.9, cosine decay); the discriminator trains from step 300 and is heard from step 600.

Variants:
- ``f2``: downsampling factor 2, ``kl.dim`` 2;
- ``noadv``: no adversarial term (L1 + LPIPS only);
- ``tiny``: a few steps of a very small model without LPIPS, for tests.

Needs the perceptual extra: ``pip install 'jaxgen[perceptual]'`` (``make install`` has it).
"""

from jaxgen.configs import common
from jaxgen.configs import vqgan as vqgan_config

DATASETS = ("mnist", "fashion_mnist", "mnist_pairs")
VARIANTS = {
    "f2": "downsampling factor 2 (14x14x2 latents for 28x28 images) instead of 4",
    "noadv": "no adversarial term: L1 + LPIPS only",
    "tiny": "a few steps of a very small model without LPIPS, for tests",
}


def get_config(arg=None):
    dataset, variants = common.parse(arg, DATASETS, VARIANTS)
    shared = [v for v in ("noadv", "tiny") if v in variants]
    c = vqgan_config.get_config(",".join([dataset, "demo", *shared]))
    c.family = "autoencoder_kl"
    del c["vq"]
    c.kl = common.section(
        dim=4,  # latent channels
        weight=1e-6,  # the paper's KL weight (module docstring of the family)
    )
    if "tiny" not in variants:
        c.train.num_steps = 1_200
        c.train.checkpoint_every = 600
        c.vqgan.disc_start = 300
        c.vqgan.adv_start = 600
        if dataset == "mnist_pairs":
            c.train.batch_size = 16  # the pixels of a Fashion-MNIST step (pairs are 28x56)
    if "f2" in variants:
        c.model.channel_mult = (1, 2)
        c.kl.dim = 2
    if "tiny" in variants:
        c.kl.dim = 2
    return c
