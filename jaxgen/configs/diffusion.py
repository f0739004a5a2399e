"""Denoising diffusion (DDPM training; DPM-Solver++ sampling by default) with EMA weights.

Data sets:
- ``mnist`` (default, ``../shared/data/mnist.npz``) and ``fashion_mnist`` (Debian's IDX files):
  a small DDPM UNet for 28x28x1, widths 64/128/128 at 28/14/7 pixels, two residual blocks per
  level, self-attention at 7x7; noise prediction on the linear 1000-step schedule;
- ``mnist_pairs``: 28x56 canvases of two MNIST digits (``jaxgen.data.derived``), the same UNet
  (a third halving gives 7x14 at the lowest level); pixel-space diffusion to compare latent
  diffusion (``configs/ldm.py``) with;
- ``cifar10``: DDPM on CIFAR-10 (Ho et al. 2020), the paper's 35.7M-parameter UNet (widths
  128/256/256/256 at 32/16/8/4 pixels, two residual blocks per level, attention at 16x16,
  dropout 0.1), Adam 2e-4 with 5,000 warm-up steps, clipping at 1, batch 128, EMA 0.9999,
  800,000 steps (the paper's random horizontal flips are not done). Read from a TFDS data dir
  with ``cifar10`` already prepared (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``; nothing
  is downloaded); its ``tiny`` variant trains on the procedural 16x16 ``shapes`` data instead.
"""

from jaxgen.configs import common

DATASETS = ("mnist", "fashion_mnist", "cifar10", "mnist_pairs")
VARIANTS = {
    "tiny": "4 steps of a very small UNet, for tests and smoke runs",
    "demo": "what make demo trains: a narrow UNet (16 base channels), 1,200 steps",
    "cpu": "the README's 28x28 model: 16/32/64 channels, 9,000 steps at batch 32",
    "cond": "class-conditional, with label dropout p_uncond = 0.1, sampled with classifier-free "
    "guidance at w = 2 unless sample.py says otherwise",
    "budget30": "the best 28x28 recipe found for 30 minutes of training on a 2-core CPU: the "
    "cpu UNet, 7,000 steps of batch 32, cosine decay, EMA 0.999",
}


def get_config(arg=None):
    dataset, variants = common.parse(arg, DATASETS, VARIANTS)
    c = common.new("diffusion", dataset)
    # The defaults are DDPM's CIFAR-10 UNet (35.7M parameters on 32x32x3).
    c.model = common.section(
        channels=128,
        channel_mult=(1, 2, 2, 2),  # one level per entry; a stride-2 conv between levels
        num_res_blocks=2,
        attention_resolutions=(16,),  # feature-map sides that get self-attention
        num_heads=1,
        dropout=0.1,
        num_classes=0,  # > 0: class-conditional, with a null class for guidance
    )
    c.diffusion = common.section(
        schedule="linear",  # linear | cosine | linear_vp
        num_steps=1000,
        prediction="eps",  # eps | x0 | v
        ema_decay=0.9999,
        ema_warmup=False,  # True: decay min(ema_decay, (1 + step) / (10 + step)), for short runs
        mixed_precision=False,  # True: bfloat16 compute, float32 parameters
        p_uncond=0.1,  # label dropout; used only when model.num_classes > 0
    )
    c.sampler = common.section(
        solver="dpm_solver++",  # ddpm | ddim | dpm_solver | dpm_solver++
        steps=20,
        order=2,
        method="multistep",  # multistep | singlestep
        eta=0.0,  # ddim only
        # Clip each x0 prediction to the data range [-1, 1] (DDPM's and guided-diffusion's
        # default for images); threshold_max > 1 makes it Imagen's dynamic thresholding.
        thresholding=True,
        threshold_max=1.0,
    )
    if dataset == "cifar10":
        c.train.batch_size = 128
        c.train.num_steps = 800_000
        c.train.eval_every = 10_000
        c.train.sample_every = 10_000
        c.train.checkpoint_every = 10_000
        c.optimizer.learning_rate = 2e-4
        c.optimizer.warmup_steps = 5_000
        c.optimizer.grad_clip = 1.0
    else:
        _small_unet_28x28(c)
    if "cond" in variants:
        c.model.num_classes = 10
        c.diffusion.p_uncond = 0.1
        # sample.py and jaxgen.eval guide by default (--guidance=none: the plain conditional
        # model); w = 2 is where class accuracy levels off on MNIST (docs/results.md).
        c.sample_defaults.guidance = "cfg"
        c.sample_defaults.scale = 2.0
    if "demo" in variants:
        # A narrow UNet for make demo (its time on a 2-core CPU: README).
        c.model.channels = 16
        c.model.num_res_blocks = 1
        c.model.dropout = 0.0
        c.train.batch_size = 32
        c.train.num_steps = 1_200
        c.train.eval_every = 600
        c.train.sample_every = 600
        c.train.checkpoint_every = 600
        c.optimizer.learning_rate = 2e-3
        c.optimizer.warmup_steps = 100
        c.diffusion.ema_decay = 0.995
        c.eval.batch_size = 200
        c.eval.num_examples = 400
        c.eval.final_num_examples = 1_000
    if variants & {"cpu", "budget30"}:
        # The README's 28x28 models: narrow at 28x28 where convolutions cost most, wider below
        # (16/32/64 channels), one residual block a level.
        c.model.channels = 16
        c.model.channel_mult = (1, 2, 4)
        c.model.num_res_blocks = 1
        c.model.dropout = 0.0
        c.train.batch_size = 32
        c.train.num_steps = 9_000
        c.train.eval_every = 3_000
        c.train.sample_every = 3_000
        c.train.checkpoint_every = 1_000
        c.optimizer.learning_rate = 1e-3
        c.optimizer.warmup_steps = 200
        c.diffusion.ema_decay = 0.999
        c.eval.batch_size = 200
        c.eval.num_examples = 400
        c.eval.final_num_examples = 1_000
    if "budget30" in variants:
        # 30 minutes on the README's 2-core CPU (docs/results.md, "30-minute budget"): the cpu
        # UNet at 4 steps/s; a cosine decay to 0 and fewer evals.
        c.train.num_steps = 7_000
        c.train.eval_every = 3_500
        c.train.sample_every = 3_500
        c.optimizer.decay_steps = c.train.get_ref("num_steps") - c.optimizer.get_ref("warmup_steps")
    if "tiny" in variants:
        common.tiny(c)
        if dataset == "cifar10":  # runs without CIFAR-10 on the machine
            c.data.source = "shapes"
            c.data.image_shape = (16, 16, 1)
            c.data.num_train, c.data.num_test = 256, 64
        c.model.channels = 8
        c.model.channel_mult = (1,)  # no down-sampling: compiles in half the time
        c.model.num_res_blocks = 1
        c.model.attention_resolutions = ()  # the middle block keeps its attention
        c.model.dropout = 0.0
        c.optimizer.warmup_steps = 0
        c.diffusion.ema_decay = 0.9
        c.sampler.steps = 4
    return c


def _small_unet_28x28(c) -> None:
    """The small DDPM UNet for 28x28x1 data and its schedule."""
    c.model.channels = 64
    c.model.channel_mult = (1, 2, 2)  # 28 -> 14 -> 7
    c.model.num_res_blocks = 2
    c.model.attention_resolutions = (7,)
    c.model.dropout = 0.1
    c.train.batch_size = 128
    c.train.num_steps = 50_000
    c.train.eval_every = 5_000
    c.train.sample_every = 5_000
    c.train.checkpoint_every = 2_000
    c.optimizer.learning_rate = 2e-4
    c.optimizer.warmup_steps = 1_000
    c.optimizer.grad_clip = 1.0
    c.diffusion.ema_decay = 0.9995
