"""Diffusion: VP noise schedules in continuous time, prediction conversions, training-time math
(noising, training times, targets and loss: ``jaxgen.diffusion.training``), samplers that run a
whole solver in one ``lax.scan``, and guidance wrappers and label dropout
(``jaxgen.diffusion.guidance``). Works with any ``model_fn(x, t)``, not only ours."""

from jaxgen.diffusion import guidance
from jaxgen.diffusion.guidance import drop_labels
from jaxgen.diffusion.predictions import PREDICTIONS, dynamic_threshold, to_eps, to_v, to_x0
from jaxgen.diffusion.samplers import (
    METHODS,
    SOLVERS,
    SPACINGS,
    check_sampler_options,
    nfe,
    sample,
    timesteps,
)
from jaxgen.diffusion.schedules import (
    Schedule,
    cosine_betas,
    discrete_schedule,
    linear_betas,
    linear_vp_schedule,
    make_schedule,
)
from jaxgen.diffusion.training import (
    add_noise,
    denoising_loss,
    prediction_target,
    sample_training_times,
)

__all__ = [
    "guidance",
    "METHODS",
    "PREDICTIONS",
    "SOLVERS",
    "SPACINGS",
    "Schedule",
    "add_noise",
    "check_sampler_options",
    "cosine_betas",
    "denoising_loss",
    "discrete_schedule",
    "drop_labels",
    "dynamic_threshold",
    "linear_betas",
    "linear_vp_schedule",
    "make_schedule",
    "nfe",
    "prediction_target",
    "sample",
    "sample_training_times",
    "timesteps",
    "to_eps",
    "to_v",
    "to_x0",
]
