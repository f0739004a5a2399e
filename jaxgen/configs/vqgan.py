"""VQ-GAN tokenizer (Esser et al. 2021) for 28x28 images: the VQ-VAE's code budget (K = 512 codes
of D = 64 on a 7x7 grid, EMA codebook with dead-code restarts) between a residual encoder and
decoder with GroupNorm and attention at 7x7, trained with L1 + LPIPS (VGG16, images upsampled to
32x32) and a 2-layer PatchGAN (5x5 patch logits) with the adaptive weight.

Schedule: the VQ-VAE's (2,000 Adam steps of batch 64 at 1e-3, cosine decay) with betas
(0.5, 0.9) as in taming-transformers; the discriminator trains from step 500 (Adam 2e-4) and its
loss reaches the autoencoder from step 1,000 (``disc_weight`` 0.8, taming's value).

Variants:
- ``noadv``: no adversarial term (L1 + LPIPS only), to see what the PatchGAN buys;
- ``r1``: MaskGIT's tokenizer recipe: a fixed adversarial weight 0.1 instead of the adaptive
  one, a non-saturating loss and an R1 penalty (gamma 10, on the gradient of the mean patch
  logit: MaskGIT's strength on its one logit per image) on a GroupNorm discriminator;
- ``loss``: the codebook learned by the VQ loss instead of EMA; ``norestart``: no restarts;
- ``demo``: what the README's comparison trains on a 2-core CPU: a narrower network (widths
  16, 32, 64) and a short schedule (600 steps of batch 32; the discriminator from step 150,
  heard from step 300), the same code budget and losses;
- ``budget30``: the tokenizer of the 30-minute budget (docs/results.md): the ``demo`` network
  for 800 steps of batch 32 (about 12 minutes on the 2-core CPU; the discriminator from step
  200, heard from step 400), leaving the rest of the 30 minutes to its prior
  (``configs/gpt.py`` or ``configs/maskgit.py`` with ``budget30``);
- ``tiny``: a few steps of a very small model without LPIPS, for tests.

Needs the perceptual extra: ``pip install 'jaxgen[perceptual]'`` (``make install`` has it).
"""

from jaxgen.configs import common

DATASETS = ("mnist", "fashion_mnist", "mnist_pairs")
VARIANTS = {
    "noadv": "no adversarial term: L1 + LPIPS only",
    "r1": "fixed adversarial weight 0.1, non-saturating loss, R1 penalty (MaskGIT's tokenizer)",
    "loss": "the codebook learned by the VQ loss instead of EMA",
    "norestart": "no dead-code restarts",
    "demo": "the README's CPU comparison: widths 16/32/64, 600 steps of batch 32",
    "budget30": "the 30-minute budget's tokenizer: the demo network for 800 steps of batch 32",
    "tiny": "a few steps of a very small model without LPIPS, for tests",
}


def _optimizer(c, lr, b1, b2):
    o = common.section(**c.optimizer.to_dict())
    o.update(name="adam", learning_rate=lr, b1=b1, b2=b2)
    return o


def get_config(arg=None):
    dataset, variants = common.parse(arg, DATASETS, VARIANTS)
    c = common.new("vqgan", dataset)
    c.model = common.section(
        channels=32,  # widths channels * channel_mult: 32, 64, 64
        channel_mult=(1, 2, 2),  # two halvings: 28x28 -> 7x7 codes
        num_res_blocks=1,
        attention=True,  # self-attention at the lowest resolution
    )
    c.vq = common.section(
        num_codes=512,
        dim=64,
        beta=0.25,
        codebook="ema",  # ema | loss
        ema_decay=0.99,
        ema_eps=1e-5,
        restart_after=100,
        seed_from_data=True,  # every code seeded from the first batch's encoder outputs
    )
    c.disc = common.section(
        channels=64,
        n_layers=2,  # 28x28 -> a 5x5 map of patch logits (3 layers collapse it to 1x1)
        norm="batch",  # batch | group | none
    )
    c.vqgan = common.section(
        rec_loss="l1",  # l1 | l2, on [-1, 1] pixels
        perceptual_weight=1.0,  # LPIPS weight; 0: none
        lpips_size=32,  # the shorter side before VGG16 (28 reaches conv5_3 at 1x1); 0: none
        lpips_weights="",  # path to vgg16.ckpt or our .npz; "": the installed extra's
        gan_loss="hinge",  # hinge | nonsaturating
        disc_weight=0.8,  # times the adaptive weight (or the fixed weight); 0: no adversary
        adaptive=True,
        disc_start=500,  # the discriminator trains from this step
        adv_start=1_000,  # its loss reaches the autoencoder from this step (>= disc_start)
        # R1 penalty gamma on real images: gamma / 2 * E_b |grad_x mean_patches D(x_b)|^2, the
        # gradient of the patch logits' mean (what the losses see), as strong as MaskGIT's
        # recipe on one logit per image (of their sum it would be patches^2 = 625x stronger).
        r1_gamma=0.0,
    )
    common.schedule_28x28(c)
    c.optimizer.b1, c.optimizer.b2 = 0.5, 0.9
    c.optimizer_d = _optimizer(c, 2e-4, 0.5, 0.9)
    c.optimizer_d.warmup_steps = 0
    c.optimizer_d.decay_steps = 0
    c.train.sample_every = 0  # reconstructions come from sample.py

    if "noadv" in variants:
        c.vqgan.disc_weight = 0.0
    if "r1" in variants:
        c.vqgan.adaptive = False
        c.vqgan.disc_weight = 0.1
        c.vqgan.gan_loss = "nonsaturating"
        c.vqgan.r1_gamma = 10.0
        c.disc.norm = "group"
    if "loss" in variants:
        c.vq.codebook = "loss"
    if "norestart" in variants:
        c.vq.restart_after = 0
    if "demo" in variants or "budget30" in variants:
        # The full recipe is ~5 s a step on a 2-core CPU (LPIPS alone ~2 s at batch 64), hours
        # for 2,000 steps; this one is ~1.5 s a step (README, VQ-GAN).
        c.model.channels = 16
        c.model.channel_mult = (1, 2, 4)
        c.train.batch_size = 32
        c.train.num_steps = 600
        c.train.checkpoint_every = 300
        c.vqgan.disc_start = 150
        c.vqgan.adv_start = 300
        c.eval.final_num_examples = 2_000  # LPIPS over 10,000 test images would add minutes
    if "budget30" in variants:
        # 1.2 steps/s on the README's 2-core CPU (bench/results/budget30_notes.md).
        c.train.num_steps = 800
        c.train.checkpoint_every = 400
        c.vqgan.disc_start = 200
        c.vqgan.adv_start = 400
    if "tiny" in variants:
        common.tiny(c)
        c.model.channels = 8
        c.model.channel_mult = (1, 2, 2)
        c.model.attention = True
        c.vq.num_codes = 16
        c.vq.dim = 4
        c.vq.restart_after = 2
        c.disc.channels = 8
        c.vqgan.perceptual_weight = 0.0
        c.vqgan.disc_start = 1
        c.vqgan.adv_start = 2
        for o in (c.optimizer, c.optimizer_d):
            o.warmup_steps = 0
            o.decay_steps = 0
    return c
