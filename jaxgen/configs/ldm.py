"""Latent diffusion (Rombach et al. 2022) over a trained first stage, conditioned on captions:
the diffusion family (``configs/diffusion.py``) with ``first_stage.workdir`` naming a KL
autoencoder run (``configs/autoencoder_kl.py``; a VQ-GAN run gives its pre-quantisation
latents), a small transformer text encoder trained jointly with the UNet, and cross-attention.

Data sets: ``mnist_pairs`` (two digits side by side, captions that name them, their order and
their parity) and ``fashion_mnist`` (names, descriptions and super-categories). The first stage
is read from ``runs/autoencoder_kl_<data set>`` unless ``first_stage.workdir`` says otherwise:

    python train.py --config=configs/autoencoder_kl.py:mnist_pairs \\
        --workdir=runs/autoencoder_kl_mnist_pairs
    python train.py --config=configs/ldm.py:mnist_pairs --workdir=runs/ldm_pairs
    python sample.py --workdir=runs/ldm_pairs --prompt "a 3 to the left of a 7" \\
        --negative-prompt "" --scale 7.5 --sampler dpm_solver++ --steps 20 --num 16

The UNet works on the latent grid: at factor 4 (7x7x4, pairs 7x14x4) one level of 64 channels,
two residual blocks, self-attention and cross-attention at 7; at factor 2 (``f2``: 14x14x2)
levels of 64 and 128 channels, attention and cross-attention at 7 (cross-attention at 14 as
well read the caption no better and cost 5% more a step: ``docs/families/latent.md``). The
linear 1000-step schedule, the model trained to predict ``v = alpha eps - sigma x0`` (Salimans
and Ho 2022): with ``eps`` the loss hardly weighs the noise levels where the digits and their
places are decided, and the condition went unlearned (``docs/families/latent.md``).
``diffusion.latent_scale = 0`` measures ``1 / std`` of the first batch's latents
(``scale_by_std``). 4,000 Adam steps at 1e-3 (200 warm-up, cosine decay), batch 64 (pairs: 32,
the same pixels a step), EMA 0.999. Captions are dropped to the empty prompt with probability
0.1; samples use classifier-free guidance at w = 7.5 by default, as the notes and Stable
Diffusion do (``--scale`` changes it).

Variants:
- ``cond``: class-conditional on the labels instead of text (pairs: 100 classes, ``10 * left +
  right``), guided at w = 7.5 too;
- ``uncond``: unconditional;
- ``f2``: over the factor-2 first stage (``runs/autoencoder_kl_<data set>_f2``);
- ``small``: a UNet of 48 channels and one residual block a level, trained for 8,000 steps (the
  default's train time on a CPU) and sampling at half its cost: at factor 4 on Fashion-MNIST,
  unconditional, 4.5x pixel diffusion's sampling rate at FD 40 against 76 after the same train
  time (``docs/families/latent.md``);
- ``tiny``: a few steps of a very small model, for tests (set ``first_stage.workdir``).
"""

from jaxgen.configs import common
from jaxgen.configs import diffusion as diffusion_config
from jaxgen.data import captions

FAMILY = "diffusion"  # a recipe of the diffusion family, not a family of its own
DATASETS = ("mnist_pairs", "fashion_mnist")
VARIANTS = {
    "cond": "class-conditional on the labels instead of text",
    "uncond": "unconditional",
    "f2": "over the factor-2 first stage (runs/autoencoder_kl_<data set>_f2)",
    "small": "a UNet of 48 channels and one residual block a level: sampling at half the "
    "default's cost, trained for twice the steps",
    "tiny": "a few steps of a very small model, for tests (set first_stage.workdir)",
}


def get_config(arg=None):
    dataset, variants = common.parse(arg, DATASETS, VARIANTS)
    tiny = "tiny" in variants
    c = diffusion_config.get_config(f"{dataset},{'tiny' if tiny else 'cpu'}")
    c.first_stage = common.first_stage(dataset)
    suffix = "_f2" if "f2" in variants else ""
    c.first_stage.workdir = f"runs/autoencoder_kl_{dataset}{suffix}"
    c.diffusion.latent_scale = 0.0  # 0: 1 / std of the first batch's latents
    # v, not eps: an eps loss weighs the clean image's error by SNR, about 0.01 where the layout
    # is decided, so 4,000 steps learned almost nothing of the condition (a pixel-space control
    # on MNIST pairs, 100 classes: 2% of samples right with eps, 84.5% with v;
    # bench/results/condition_gap.md).
    c.diffusion.prediction = "v"
    c.sampler.thresholding = False  # latents are not pixels
    # The UNet on the latent grid (module docstring).
    c.model.dropout = 0.0
    c.model.num_heads = 4
    c.model.channels = 64
    c.model.attention_resolutions = (7,)
    # At factor 2 the caption pays at the coarse level: at 7 alone 89.5% of MNIST pairs samples
    # followed their prompts after 1,500 steps, at 14 and 7 80.0% (text_prompts_levels_*.md).
    c.model.context_resolutions = (7,)
    if "f2" in variants:
        c.model.channel_mult = (1, 2)
    else:
        c.model.channel_mult = (1,)
        c.model.num_res_blocks = 2
    c.model.pooled_context = False  # True: the caption's mean also joins the time embedding
    c.data.captions = dataset
    vocab = captions.caption_set(dataset).vocabulary()
    c.text = common.section(width=64, depth=2, heads=4, vocab_size=vocab.size)
    c.diffusion.p_uncond = 0.1
    c.sample_defaults.guidance = "cfg"
    c.sample_defaults.scale = 7.5
    c.train.batch_size = 32 if dataset == "mnist_pairs" else 64  # the same pixels a step
    c.train.num_steps = 4_000
    c.train.eval_every = 2_000
    c.train.sample_every = 2_000
    c.train.checkpoint_every = 1_000
    c.optimizer.learning_rate = 1e-3
    c.optimizer.warmup_steps = 200
    c.optimizer.decay_steps = c.train.get_ref("num_steps") - c.optimizer.get_ref("warmup_steps")
    c.diffusion.ema_decay = 0.999
    # Warm-up, as latent diffusion's EMA has: nothing clips a latent sample, so the share of the
    # zero-initialised output layer a plain EMA keeps (0.999 ** 4000: 2%) would shrink every
    # noise prediction by it, and the sampler's first steps divide that error by alpha ~ 0.006.
    c.diffusion.ema_warmup = True
    if "small" in variants:
        # At factor 4 on the CPU: half the default UNet's train step and sampling time (551
        # against 278-306 train img/s, 88 against 44 sampling img/s:
        # bench/results/ldm_table.md), so twice the steps cost the default's train time.
        c.model.channels = 48
        c.model.num_res_blocks = 1
        c.train.num_steps = 8_000
    if "cond" in variants or "uncond" in variants:
        c.text.width = 0
        c.data.captions = ""
        c.model.context_resolutions = ()
    if "cond" in variants:
        c.model.num_classes = 100 if dataset == "mnist_pairs" else 10
    if "uncond" in variants:
        c.sample_defaults = common.section()
    if tiny:
        common.tiny(c)
        c.model.channels = 16
        c.model.num_heads = 2
        if c.text.width:
            c.text.update(width=16, depth=1, heads=2)
        c.optimizer.warmup_steps = 0
        c.optimizer.decay_steps = 0  # a constant rate: tests train more than the 4 steps
        c.diffusion.ema_decay = 0.9
        c.sampler.steps = 4
    return c
