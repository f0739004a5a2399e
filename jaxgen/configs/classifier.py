"""Image classifiers for 28x28 data: by default the noise-aware classifier behind classifier
guidance of ``configs/diffusion.py``'s models (it sees images noised on the same linear
1000-step schedule, at times drawn like the diffusion model's, and reports its test accuracy
at several noise levels); 32/64/64 channels at 28/14/7 pixels, one residual block a level.

Data sets: ``mnist`` (default, ``../shared/data/mnist.npz``), ``fashion_mnist`` (Debian's IDX
files).
"""

from jaxgen.configs import common

DATASETS = ("mnist", "fashion_mnist")
VARIANTS = {
    "evaluator": "jaxgen.eval's evaluator: a small CNN on clean, augmented images, long enough "
    "for 99.3% on MNIST and 92% on Fashion-MNIST",
    "clean": "the guide's network trained on clean images only (the evaluator before 'evaluator')",
    "tiny": "a few steps of a very small network, for tests",
}


def get_config(arg=None):
    dataset, variants = common.parse(arg, DATASETS, VARIANTS)
    c = common.new("classifier", dataset)
    c.model = common.section(
        arch="unet",
        # unet: the UNet's down path (jaxgen.nn.classifier)
        channels=32,
        channel_mult=(1, 2, 2),
        num_res_blocks=1,
        # cnn: the evaluator's plain CNN (jaxgen.nn.evaluator_cnn)
        widths=(32, 64),
        features=256,
        dropout=0.0,
        num_classes=10,
    )
    c.classifier = common.section(
        noisy=not variants & {"clean", "evaluator"},
        eval_times=(0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0),
        augment_shift=0,  # pixels of random translation (clean classifiers)
        augment_flip=False,  # random left-right flips (clean classifiers)
    )
    # The noise schedule of the diffusion model to guide.
    c.diffusion = common.section(schedule="linear", num_steps=1000)
    c.train.batch_size = 64
    c.train.num_steps = 2_500
    c.train.eval_every = 1_000
    c.train.sample_every = 0
    c.train.checkpoint_every = 1_000
    c.optimizer.learning_rate = 1e-3
    c.optimizer.warmup_steps = 100
    c.optimizer.weight_decay = 0.0
    if not c.classifier.noisy:
        # the evaluator: annealed, since its accuracy bounds what it can tell apart
        c.optimizer.decay_steps = c.train.get_ref("num_steps") - c.optimizer.get_ref("warmup_steps")
    c.eval.batch_size = 400
    c.eval.num_examples = 2_000
    c.eval.final_num_examples = 10_000
    if "evaluator" in variants:
        # Small CNN, GroupNorm, dropout before the head, shifts of 2 pixels (and left-right
        # flips for clothes, which are symmetric; digits are not): 6 epochs of MNIST and 16 of
        # Fashion-MNIST at batch 128, cosine-annealed.
        c.model.arch = "cnn"
        c.model.dropout = 0.3
        c.classifier.augment_shift = 2
        c.classifier.augment_flip = dataset == "fashion_mnist"
        c.train.batch_size = 128
        c.train.num_steps = 2_800 if dataset == "mnist" else 7_500
        c.train.eval_every = 1_000
        c.train.checkpoint_every = 500
        c.optimizer.decay_steps = c.train.get_ref("num_steps") - c.optimizer.get_ref("warmup_steps")
    if "tiny" in variants:
        common.tiny(c)
        c.model.channels = 8
        c.model.channel_mult = (1, 2)
        c.model.widths = (8, 16)
        c.model.features = 32
        c.optimizer.warmup_steps = 0
        c.optimizer.decay_steps = 0  # a constant rate: the tests' short runs
    return c
