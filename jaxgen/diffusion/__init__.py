"""Diffusion: VP noise schedules in continuous time, prediction conversions, and samplers that
run a whole solver in one ``lax.scan``, and guidance wrappers (``jaxgen.diffusion.guidance``).
Works with any ``model_fn(x, t)``, not only ours."""

from jaxgen.diffusion import guidance
from jaxgen.diffusion.predictions import PREDICTIONS, dynamic_threshold, to_eps, to_v, to_x0
from jaxgen.diffusion.samplers import SOLVERS, SPACINGS, nfe, sample, timesteps
from jaxgen.diffusion.schedules import (
    Schedule,
    cosine_betas,
    discrete_schedule,
    linear_betas,
    linear_vp_schedule,
    make_schedule,
)

__all__ = [
    "guidance",
    "PREDICTIONS",
    "SOLVERS",
    "SPACINGS",
    "Schedule",
    "cosine_betas",
    "discrete_schedule",
    "dynamic_threshold",
    "linear_betas",
    "linear_vp_schedule",
    "make_schedule",
    "nfe",
    "sample",
    "timesteps",
    "to_eps",
    "to_v",
    "to_x0",
]
