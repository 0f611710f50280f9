"""One timing loop for the benchmark scripts (run as ``python benchmarks/<script>.py``, so importable)."""

from __future__ import annotations

import time

import torch


def timed(fn, reps: int, device: torch.device) -> float:
    """Mean seconds per call of ``fn`` over ``reps`` calls, after one warm-up call (CUDA synchronised)."""

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync()
    return (time.perf_counter() - t0) / reps
