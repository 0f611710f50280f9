"""Sharding work over processes launched by ``torchrun`` (no process group needed), and their devices.

Sharding (:func:`dist_env`, :func:`shard`)
    Launched with ``torchrun --nproc_per_node K``, each process reads ``RANK``, ``WORLD_SIZE`` and
    ``LOCAL_RANK`` and takes the jobs ``i`` with ``i % WORLD_SIZE == RANK`` of the sorted job list (no
    process group is needed). Each process uses ``cuda:LOCAL_RANK`` when CUDA is available; on the CPU
    the cores are split between the local processes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence


def dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) when not launched by it."""
    try:
        rank = int(os.environ.get("RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise ValueError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers: {exc}") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"invalid RANK={rank} for WORLD_SIZE={world}")
    return rank, world, local


def shard(items: Sequence, rank: int, world: int) -> list:
    """The items this process owns: index i with i % world == rank."""
    return [x for i, x in enumerate(items) if i % world == rank]


def rank_device(requested: str, local_rank: int) -> str:
    """``cuda:LOCAL_RANK`` for auto/cuda when CUDA is available, else the requested (or auto) device."""
    import torch

    from .sampling.device import resolve_device

    if requested in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{local_rank % torch.cuda.device_count()}"
    return str(resolve_device(requested))


def share_cpu_threads(device: str) -> None:
    """Split the CPU cores between the processes torchrun started on this machine.

    The share also becomes the generations' thread count (``GEM3D_THREADS``, one worker), unless the user set
    it: each rank measuring idle cores would see the others busy, or all cores idle when they start together."""
    import torch

    from .sampling.threads import ENV, WORKERS_ENV

    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    if device.startswith("cpu") and local_world > 1:
        share = max(1, (os.cpu_count() or 1) // local_world)
        torch.set_num_threads(share)
        if not os.environ.get(ENV):
            os.environ[ENV] = str(share)
            os.environ.setdefault(WORKERS_ENV, "1")
