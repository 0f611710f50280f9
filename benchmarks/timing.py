"""One timing loop and one output line for the benchmark scripts (run as ``python benchmarks/<script>.py``, so
importable)."""

from __future__ import annotations

import json
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


def emit(result: dict, save: str | None = None) -> None:
    """Print ``result`` as the script's one JSON line, and append it to ``save`` when given."""
    line = json.dumps(result)
    print(line)
    if save:
        with open(save, "a") as fh:
            fh.write(line + "\n")
