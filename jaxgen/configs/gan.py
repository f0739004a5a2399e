"""GAN, WGAN and WGAN-GP recipes with their papers' defaults (jaxgen.families.gan).

- ``dcgan`` (default; Radford et al. 2016): non-saturating loss, Adam 2e-4 with beta1 0.5 for
  both players, N(0, 0.02) initialisation, batch norm in both (none after D's first layer),
  one discriminator update per generator update, batch 64 (the 28x28 pair: 7 -> 14 -> 28).
- ``minimax``: DCGAN with the original ``log(1 - D(G(z)))`` generator loss.
- ``hinge``, ``lsgan``: DCGAN with those losses.
- ``wgan`` (Arjovsky et al. 2017): Wasserstein loss, every critic weight clipped to
  [-0.01, 0.01], RMSProp 5e-5, 5 critic updates per generator update (batch norm kept in the
  critic, as in the paper's DCGAN critic).
- ``wgan_gp`` (Gulrajani et al. 2017): Wasserstein loss with the gradient penalty, lambda 10,
  Adam 1e-4 with betas (0, 0.9), 5 critic updates, layer norm in the critic (never batch norm).
- ``fd``: the in-loop sample evaluation (FD, KID, precision/recall on the data set's evaluator
  features; README, Evaluation) every 1,000 steps on 2,000 samples; needs ``make evaluators``.
- ``tiny``: a few steps of a small pair, for tests.

Recipes compose in this order, later ones winning: dcgan, then minimax / hinge / lsgan, then
wgan, then wgan_gp. ``points(config)`` turns any of them into the MLP pair of the 2-D
mode-collapse benchmark (bench/gan_modes.py), which feeds the step points itself.
"""

from jaxgen.configs import common

DATASETS = ("mnist", "fashion_mnist")
VARIANTS = {
    "dcgan": "non-saturating GAN, Adam 2e-4 (beta1 0.5), batch norm (the default)",
    "minimax": "DCGAN with the minimax generator loss",
    "hinge": "DCGAN with the hinge loss",
    "lsgan": "DCGAN with the least-squares loss",
    "wgan": "WGAN: weight clipping 0.01, RMSProp 5e-5, n_critic 5",
    "wgan_gp": "WGAN-GP: lambda 10 (0.1 with points), Adam 1e-4 (0, 0.9), n_critic 5",
    "fd": "FD/KID/precision/recall of 2,000 samples every 1,000 steps (needs make evaluators)",
    "budget30": "the best recipe found for 30 minutes on a 2-core CPU: 12,500 DCGAN steps; "
    "with wgan_gp 5,200 generator steps of one critic update at 3x the rate (3e-4)",
    "tiny": "a few steps of a small pair, for tests",
}


def _optimizer(c, lr, b1, b2, name="adam"):
    """The engine's optimizer section (every key it has) with these values."""
    o = common.section(**c.optimizer.to_dict())
    o.update(name=name, learning_rate=lr, b1=b1, b2=b2)
    return o


def get_config(arg=None):
    dataset, variants = common.parse(arg, DATASETS, VARIANTS)
    c = common.new("gan", dataset)
    c.model = common.section(
        kind="conv",  # conv | mlp
        noise_dim=100,
        g_channels=(128, 64),  # conv generator: widths at 7x7 and 14x14 (then the image's C)
        d_channels=(64, 128),  # conv discriminator: one stride-2 4x4 conv per entry
        g_hidden=(256, 256, 256),  # mlp generator
        d_hidden=(256, 256, 256),  # mlp discriminator
        g_norm="batch",  # batch | layer | none
        d_norm="batch",
        init_std=0.02,  # N(0, std) weights (DCGAN); 0: Flax's default initialisers
    )
    c.gan = common.section(
        loss="nonsaturating",  # minimax | nonsaturating | hinge | lsgan | wasserstein
        n_critic=1,  # discriminator updates (each on its own data batch) per generator update
        clip=0.0,  # > 0: WGAN weight clipping to [-clip, clip]
        gp_weight=0.0,  # WGAN-GP lambda
        r1_gamma=0.0,  # R1 penalty gamma (the term is gamma / 2 * E |grad D(real)|^2)
        pack=1,  # PacGAN: D judges packs of this many samples (all real or all fake)
        ema_decay=0.0,  # > 0: sample from an EMA of the generator's weights
    )
    # optimizer: the generator's; optimizer_d: the discriminator's (critic's).
    c.optimizer = _optimizer(c, 2e-4, 0.5, 0.999)
    c.optimizer_d = _optimizer(c, 2e-4, 0.5, 0.999)
    c.train.batch_size = 64
    c.train.num_steps = 10_000
    c.train.log_every = 100
    c.train.sample_every = 1_000
    c.train.checkpoint_every = 1_000
    c.evals = common.section()  # no held-out split metric: a GAN has no likelihood

    if "minimax" in variants:
        c.gan.loss = "minimax"
    if "hinge" in variants:
        c.gan.loss = "hinge"
    if "lsgan" in variants:
        c.gan.loss = "lsgan"
    if "wgan" in variants:
        c.gan.loss = "wasserstein"
        c.gan.clip = 0.01
        c.gan.n_critic = 5
        c.optimizer = _optimizer(c, 5e-5, 0.0, 0.999, "rmsprop")
        c.optimizer_d = _optimizer(c, 5e-5, 0.0, 0.999, "rmsprop")
    if "wgan_gp" in variants:
        c.gan.loss = "wasserstein"
        c.gan.clip = 0.0
        c.gan.gp_weight = 10.0
        c.gan.n_critic = 5
        c.model.d_norm = "layer"
        c.optimizer = _optimizer(c, 1e-4, 0.0, 0.9)
        c.optimizer_d = _optimizer(c, 1e-4, 0.0, 0.9)
    if "budget30" in variants:
        # 30 minutes on the README's 2-core CPU (docs/results.md, "30-minute budget"; the
        # candidates tried: bench/results/budget30_notes.md). The DCGAN pair makes 7.8 steps/s;
        # a generator EMA, cosine decay, two time-scale rates and the hinge loss did not beat
        # the plain recipe at this budget. WGAN-GP makes 0.8 generator steps/s with the paper's
        # 5 critic updates, 3.3 with one: one update of a critic that learns 3x faster (TTUR)
        # and 4x the generator steps beat 5 updates (FD 83 against 169 on MNIST).
        c.train.num_steps = 12_500
        if "wgan_gp" in variants:
            c.gan.n_critic = 1
            c.optimizer_d.learning_rate = 3e-4
            c.train.num_steps = 5_200
        c.train.sample_every = c.train.num_steps // 3
    if "fd" in variants:
        c.evals.samples = common.section(type="samples", every=1_000, num=2_000, batch=500)
    if "tiny" in variants:
        common.tiny(c)
        c.model.noise_dim = 8
        c.model.g_channels = (16, 8)
        c.model.d_channels = (8, 16)
        c.model.g_hidden = (16, 16)
        c.model.d_hidden = (16, 16)
        c.evals = common.section()
    return c


def points(c):
    """The 2-D benchmark's players, in place: MLPs of three hidden layers of 128 ReLUs on 2-D
    noise, no normalisation, Flax's default initialisers, samples of shape (2,), batch 256. A
    gradient penalty becomes lambda 0.1, the toy value of the WGAN-GP code ("smaller lambda
    makes things faster for toy tasks"); images use 10."""
    c.data.dataset = ""
    c.data.image_shape = (2,)
    c.model.kind = "mlp"
    c.model.noise_dim = 2
    c.model.g_hidden = (128, 128, 128)
    c.model.d_hidden = (128, 128, 128)
    c.model.g_norm = "none"
    c.model.d_norm = "none"
    c.model.init_std = 0.0
    c.train.batch_size = 256
    c.evals = common.section()
    if c.gan.gp_weight > 0:
        c.gan.gp_weight = 0.1
    return c
