"""Masked bidirectional transformer prior (MaskGIT, Chang et al. 2022) over the codes of a trained
tokenizer, read from ``first_stage.workdir`` (default ``runs/vqvae_<data set>``; any VQ-VAE or
VQ-GAN run)::

    python train.py --config=configs/vqvae.py:mnist --workdir=runs/vqvae_mnist
    python train.py --config=configs/maskgit.py:mnist,cond --workdir=runs/maskgit_mnist
    python sample.py --workdir=runs/maskgit_mnist --class=all --num=100 [--steps=8] [--scale=2]

The GPT prior's transformer (width 128, 4 layers, 4 heads) without the causal mask, over the 49
codes plus a ``[MASK]`` token; masking rates from the cosine schedule (at least
``maskgit.min_mask_rate`` = 0.5), label smoothing 0.1, the class dropped for 10% of examples;
decoding in ``maskgit.steps`` = 12 steps with choice temperature 4.5. Schedule as the GPT
prior's (from 1e-3: 4.95 bits per masked code after 600 steps on MNIST's VQ-VAE codes, 5.16 from
5e-4, both with no minimum masking rate; 4.87 with 0.5, on masks from 0.5).
"""

from jaxgen.configs import common

DATASETS = ("mnist", "fashion_mnist")
VARIANTS = {
    "cond": "class-conditional on the label (with 10% condition dropout for CFG)",
    "budget30": "the 30-minute budget's prior: 3,500 steps over runs/budget30/vqgan_<data set>",
    "tiny": "a few steps of a very small network, for tests (it still needs a first stage)",
}


def get_config(arg=None):
    dataset, variants = common.parse(arg, DATASETS, VARIANTS)
    c = common.new("maskgit", dataset)
    c.first_stage = common.first_stage(dataset)
    c.model = common.section(
        width=128,
        depth=4,
        heads=4,
        mlp_ratio=4,
        num_classes=10 if "cond" in variants else 0,  # > 0: class-conditional
        p_uncond=0.1 if "cond" in variants else 0.0,  # share trained on the null class
    )
    c.maskgit = common.section(
        # Masking rates below this are raised to it; 0.5 as the class-conditional reference.
        # MNIST VQ-VAE codes, 600 steps, one seed each, 0.5 against 0: FD 65.7 vs 71.9, class
        # accuracy 73.4% vs 70.8% (2,000 samples, a 400-step evaluator), masked NLL 4.97 vs
        # 5.02 bits under masks from 0 (4.94 vs 5.00 from 0.5).
        min_mask_rate=0.5,
        label_smoothing=0.1,
        steps=12,  # decoding steps T
        choice_temperature=4.5,  # Gumbel noise on the confidences, annealed as (1 - (t+1)/T)
    )
    common.schedule_28x28(c)
    if "budget30" in variants:
        # 4.0 steps/s on the README's 2-core CPU: the minutes its tokenizer
        # (configs/vqgan.py:<data set>,budget30) leaves of the 30 (bench/results/budget30_notes.md).
        c.first_stage.workdir = f"runs/budget30/vqgan_{dataset}"
        c.train.num_steps = 3_500
    if "tiny" in variants:
        common.tiny(c)
        c.model.width = 16
        c.model.depth = 1
        c.model.heads = 2
        c.model.mlp_ratio = 2
        c.maskgit.steps = 4
        c.optimizer.warmup_steps = 0
        c.optimizer.decay_steps = 0
    return c
