"""Noise schedules and the DDIM step (torch + numpy only; no MONAI scheduler).

Imported lazily by the sampler: importing ``napari_gem3d`` does not import this package.
"""

from .ddim import (
    DDIMPlan,
    StepOutput,
    ddim_step,
    ddim_timesteps,
    make_ddim_plan,
    renoise_alpha_cumprod,
)
from .schedule import OFFICIAL_SCHEDULE, PREDICTIONS, SCHEDULE_KINDS, NoiseSchedule

__all__ = [
    "OFFICIAL_SCHEDULE",
    "PREDICTIONS",
    "SCHEDULE_KINDS",
    "DDIMPlan",
    "NoiseSchedule",
    "StepOutput",
    "ddim_step",
    "ddim_timesteps",
    "make_ddim_plan",
    "renoise_alpha_cumprod",
]
