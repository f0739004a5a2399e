"""VAE (Kingma & Welling 2014): Gaussian latent, analytic KL, ELBO, IWAE test NLL.

Data sets:
- ``mnist`` (default): the README's likelihood result on dynamically binarised MNIST
  (``../shared/data/mnist.npz``): Bernoulli decoder, the MLP pair (two hidden layers of 512,
  32 latents; far faster than the conv pair on a CPU: bench/results/vae_cpu.md), 50,000
  steps, test NLL by the IWAE estimate with 128 samples per image over the whole test set;
- ``fashion_mnist``: Debian's IDX files; grey levels under a discretised Gaussian (a true
  likelihood over the 256 levels, also in bits/dim), the conv pair, 20,000 steps.
"""

from jaxgen.configs import common

DATASETS = ("mnist", "fashion_mnist")
VARIANTS = {
    "tiny": "4 steps of a small model, for tests and smoke runs",
    "demo": "what make demo-vae trains: narrower convs, 2,000 steps",
    "conv": "the conv encoder/decoder pair",
    "mlp": "the MLP encoder/decoder pair",
    "bernoulli": "Bernoulli likelihood on dynamically binarised images",
    "long": "100,000 steps",
    "budget30": "the best recipe found for 30 minutes on a 2-core CPU: MNIST the MLP pair for "
    "100,000 steps; Fashion-MNIST the demo's narrow convs for 19,000 steps",
}


def get_config(arg=None):
    dataset, variants = common.parse(arg, DATASETS, VARIANTS)
    c = common.new("vae", dataset)
    c.model = common.section(
        kind="conv",  # conv | mlp
        latent_dim=32,
        channels=(32, 64),  # conv: one stride-2 conv per entry
        hidden=(512, 512),  # mlp: hidden widths; conv: hidden[0] is the dense width
    )
    c.loss = common.section(
        likelihood="bernoulli",  # bernoulli | discretized_gaussian
        binarize="dynamic",  # dynamic | none (bernoulli only)
        beta=1.0,
        kl_warmup_steps=0,
        free_bits=0.0,  # nats per latent dimension
    )
    c.eval.iwae_k = 64
    c.eval.iwae_chunk = 16
    c.train.batch_size = 128
    c.optimizer.learning_rate = 1e-3
    if dataset == "mnist":
        c.model.kind = "mlp"
        c.train.num_steps = 50_000
        c.train.eval_every = 5_000
        c.train.sample_every = 5_000
        c.train.checkpoint_every = 2_000
        c.optimizer.warmup_steps = 500
        c.eval.iwae_k = 128
        c.eval.final_num_examples = 0  # whole test set at the end
    else:
        c.loss.likelihood = "discretized_gaussian"
        c.loss.binarize = "none"
        c.train.num_steps = 20_000
        c.optimizer.warmup_steps = 200
    # Cosine decay to the last step; follows --config.train.num_steps overrides.
    c.optimizer.decay_steps = c.train.get_ref("num_steps") - c.optimizer.warmup_steps
    if "conv" in variants:
        c.model.kind = "conv"
    if "mlp" in variants:
        c.model.kind = "mlp"
    if "bernoulli" in variants:
        c.loss.likelihood = "bernoulli"
        c.loss.binarize = "dynamic"
    if "long" in variants:
        c.train.num_steps = 100_000
    if "demo" in variants or ("budget30" in variants and dataset == "fashion_mnist"):
        # Narrower convs, for throughput on a CPU (bench/results/vae_cpu.md).
        c.model.channels = (16, 32)
        c.model.hidden = (256,)
        c.train.num_steps = 2_000
        c.train.eval_every = 1_000
        c.train.sample_every = 1_000
        c.train.checkpoint_every = 500
        c.eval.num_examples = 1_000
        c.eval.final_num_examples = 2_000
        c.eval.iwae_k = 16
    if "budget30" in variants:
        # 30 minutes on the README's 2-core CPU (docs/results.md, "30-minute budget"): the MLP
        # pair runs about 88 steps/s, the demo's convs about 11.5 with jaxgen.xla_cpu's flags,
        # periodic evals included (2026-12-04; 6 before the flags, bench/results/vae_cpu.md).
        if dataset == "mnist":
            c.train.num_steps = 100_000
            c.train.eval_every = 25_000
            c.train.sample_every = 25_000
            c.train.checkpoint_every = 5_000
        else:  # the demo's convs (above), longer
            c.train.num_steps = 19_000
            c.train.eval_every = 9_500
            c.train.sample_every = 9_500
            c.train.checkpoint_every = 1_000
    if "tiny" in variants:
        common.tiny(c)
        c.model.latent_dim = 4
        c.model.channels = (8, 8)
        c.model.hidden = (32, 32)
        c.optimizer.warmup_steps = 0
        c.optimizer.decay_steps = 0
        c.eval.iwae_k = 4
        c.eval.iwae_chunk = 2
    return c
