"""Run one configured stage: distributed set-up, seeds, the loop, clean shutdown."""

from __future__ import annotations

import random

import numpy as np
import torch

from .config import Config
from .engine.dist import init_distributed, shutdown
from .engine.loop import run_loop
from .stages import task_for


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_stage(cfg: Config, *, progress: bool = True) -> dict:
    """Train ``cfg.stage`` and write ``cfg.out/bundle`` (rank 0). Returns the loop's result dict."""
    return run_task(cfg, task_for(cfg.stage), progress=progress)


def run_task(cfg, task_class, *, progress: bool = True) -> dict:
    """Run ``task_class(cfg, info)`` in the shared loop (also ``pretrain-seg``, whose config is its own)."""
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    info = init_distributed(cfg.train.device)
    try:
        seed_everything(cfg.seed)  # same initialisation on every rank (DDP also broadcasts rank 0's)
        task = task_class(cfg, info)
        return run_loop(task, progress=progress)
    finally:
        shutdown(info)
