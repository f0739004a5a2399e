"""Autoregressive transformer prior (GPT-style, VQGAN's training) over the codes of a trained
tokenizer, read from ``first_stage.workdir`` (default ``runs/vqvae_<data set>``; any VQ-VAE or
VQ-GAN run)::

    python train.py --config=configs/vqvae.py:mnist --workdir=runs/vqvae_mnist
    python train.py --config=configs/gpt.py:mnist,cond --workdir=runs/gpt_mnist
    python sample.py --workdir=runs/gpt_mnist --class=all --num=100 [--scale=2] [--top-k=100]

A 4-layer transformer of width 128 (4 heads) over the 49 codes of a 7x7 grid plus the class
position; inputs kept with probability ``gpt.pkeep`` = 0.9 (the rest replaced by random codes);
the class dropped for 10% of examples (classifier-free guidance). The schedule of the PixelCNN
prior: 2,000 Adam steps of batch 64, cosine decay from 1e-3 (5e-4 gave 3.70 bits per code
against 3.27 after 600 steps on MNIST's VQ-VAE codes).
"""

from jaxgen.configs import common

DATASETS = ("mnist", "fashion_mnist")
VARIANTS = {
    "cond": "class-conditional on the label (with 10% condition dropout for CFG)",
    "budget30": "the 30-minute budget's prior: 4,000 steps over runs/budget30/vqgan_<data set>",
    "tiny": "a few steps of a very small network, for tests (it still needs a first stage)",
}


def get_config(arg=None):
    dataset, variants = common.parse(arg, DATASETS, VARIANTS)
    c = common.new("gpt", dataset)
    c.first_stage = common.first_stage(dataset)
    c.model = common.section(
        width=128,
        depth=4,
        heads=4,
        mlp_ratio=4,
        num_classes=10 if "cond" in variants else 0,  # > 0: class-conditional
        p_uncond=0.1 if "cond" in variants else 0.0,  # share trained on the null class
    )
    c.gpt = common.section(pkeep=0.9)  # 1: plain teacher forcing
    common.schedule_28x28(c)
    if "budget30" in variants:
        # 4.5 steps/s on the README's 2-core CPU: the minutes its tokenizer
        # (configs/vqgan.py:<data set>,budget30) leaves of the 30 (bench/results/budget30_notes.md).
        c.first_stage.workdir = f"runs/budget30/vqgan_{dataset}"
        c.train.num_steps = 4_000
    if "tiny" in variants:
        common.tiny(c)
        c.model.width = 16
        c.model.depth = 1
        c.model.heads = 2
        c.model.mlp_ratio = 2
        c.optimizer.warmup_steps = 0
        c.optimizer.decay_steps = 0
    return c
