"""Noise schedules, the DDIM step and DPM-Solver++(2M) (torch + numpy only; no MONAI scheduler).

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
from .dpm import DPMPlan, data_prediction, dpm_step, make_dpm_plan
from .schedule import OFFICIAL_SCHEDULE, PREDICTIONS, SCHEDULE_KINDS, NoiseSchedule

__all__ = [
    "OFFICIAL_SCHEDULE",
    "PREDICTIONS",
    "SCHEDULE_KINDS",
    "DDIMPlan",
    "DPMPlan",
    "NoiseSchedule",
    "StepOutput",
    "data_prediction",
    "ddim_step",
    "ddim_timesteps",
    "dpm_step",
    "make_ddim_plan",
    "make_dpm_plan",
    "renoise_alpha_cumprod",
]
