"""One Task per training stage."""

from .diffusion import DiffusionTask
from .vae import VAETask


def task_for(stage: str):
    return VAETask if stage == "vae" else DiffusionTask


__all__ = ["DiffusionTask", "VAETask", "task_for"]
