"""VQ-VAE (van den Oord et al. 2017): K = 512 codes of D = 64 on a 7x7 grid for 28x28 images,
EMA codebook (decay 0.99) with dead-code restarts after 100 unused steps.

Data sets: ``mnist`` (default, ``../shared/data/mnist.npz``), ``fashion_mnist`` (Debian's IDX
files). The PixelCNN prior over its codes: ``configs/pixelcnn.py``.
"""

from jaxgen.configs import common

DATASETS = ("mnist", "fashion_mnist")
VARIANTS = {
    "tiny": "a few steps of a very small model, for tests",
    "loss": "the codebook learned by the VQ loss instead of EMA, seeded from the first batch",
    "norestart": "no dead-code restarts (to see what they buy)",
    "budget30": "the 30-minute budget's tokenizer: 3,000 steps (its PixelCNN prior has the rest)",
}


def get_config(arg=None):
    dataset, variants = common.parse(arg, DATASETS, VARIANTS)
    c = common.new("vqvae", dataset)
    c.model = common.section(
        channels=(32, 64),  # one stride-2 stage each: 28x28 -> 7x7 codes
        num_res_blocks=2,
        res_hidden=32,
    )
    c.vq = common.section(
        num_codes=512,  # K
        dim=64,  # D
        beta=0.25,  # on the commitment term
        codebook="ema",  # ema | loss
        ema_decay=0.99,
        ema_eps=1e-5,
        restart_after=100,  # steps unused before a code is re-seeded; 0: never
        # Seed every code from the first batch's encoder outputs at step 0. The :loss variant
        # needs it (README, "Codebook usage without restarts"); EMA rows were measured without.
        seed_from_data=False,
    )
    common.schedule_28x28(c)
    c.train.sample_every = 0  # reconstructions come from sample.py
    if "loss" in variants:
        c.vq.codebook = "loss"
        c.vq.seed_from_data = True
    if "norestart" in variants:
        c.vq.restart_after = 0
    if "budget30" in variants:
        # 7.5 steps/s on the README's 2-core CPU: about 7 minutes, leaving 23 to the PixelCNN
        # prior (configs/pixelcnn.py:<data set>,cond,budget30; bench/results/budget30_notes.md).
        c.train.num_steps = 3_000
    if "tiny" in variants:
        common.tiny(c)
        c.model.channels = (8, 8)
        c.model.num_res_blocks = 1
        c.model.res_hidden = 8
        c.vq.num_codes = 16
        c.vq.dim = 4
        c.vq.restart_after = 2
        c.optimizer.warmup_steps = 0
        c.optimizer.decay_steps = 0
    return c
