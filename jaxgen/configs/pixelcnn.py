"""Gated PixelCNN prior over the codes of a trained tokenizer (``configs/vqvae.py``), read from
``first_stage.workdir`` (default ``runs/vqvae_<data set>``)::

    python train.py --config=configs/vqvae.py:mnist --workdir=runs/vqvae_mnist
    python train.py --config=configs/pixelcnn.py:mnist,cond --workdir=runs/pixelcnn_mnist
    python sample.py --workdir=runs/pixelcnn_mnist --class=all --num=100

Data sets: ``mnist`` (default), ``fashion_mnist``; the prior trains on its tokenizer's data.
"""

from jaxgen.configs import common

DATASETS = ("mnist", "fashion_mnist")
VARIANTS = {
    "cond": "class-conditional on the label",
    "budget30": "the 30-minute budget's prior: 6,500 steps over runs/budget30/vqvae_<data set>",
    "tiny": "a few steps of a very small network, for tests (it still needs a first stage)",
}


def get_config(arg=None):
    dataset, variants = common.parse(arg, DATASETS, VARIANTS)
    c = common.new("pixelcnn", dataset)
    c.first_stage = common.first_stage(dataset)
    c.model = common.section(
        channels=64,
        num_layers=10,
        kernel_size=3,
        num_classes=10 if "cond" in variants else 0,  # > 0: class-conditional
    )
    common.schedule_28x28(c)
    if "budget30" in variants:
        # 5.6 steps/s on the README's 2-core CPU: about 20 minutes after its tokenizer's 7
        # (configs/vqvae.py:<data set>,budget30; bench/results/budget30_notes.md).
        c.first_stage.workdir = f"runs/budget30/vqvae_{dataset}"
        c.train.num_steps = 6_500
    if "tiny" in variants:
        common.tiny(c)
        c.model.channels = 8
        c.model.num_layers = 2
        c.optimizer.warmup_steps = 0
        c.optimizer.decay_steps = 0
    return c
