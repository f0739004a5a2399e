"""Pure loss functions: arrays in, arrays out; no Flax state, no I/O."""

from jaxgen.losses.vae import (
    bernoulli_log_likelihood,
    bits_per_dim,
    diag_gaussian_log_prob,
    discretized_gaussian_log_likelihood,
    elbo,
    gaussian_kl,
    gaussian_kl_per_dim,
    iwae_bound,
    kl_with_free_bits,
)

__all__ = [
    "bernoulli_log_likelihood",
    "bits_per_dim",
    "diag_gaussian_log_prob",
    "discretized_gaussian_log_likelihood",
    "elbo",
    "gaussian_kl",
    "gaussian_kl_per_dim",
    "iwae_bound",
    "kl_with_free_bits",
]
