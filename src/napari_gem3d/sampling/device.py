"""Device and precision selection (CUDA, then MPS, then CPU) and the autocast context."""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "bf16", "fp16")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then MPS, then CPU; an unavailable explicit device is a clear error."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "device 'cuda' was requested but this torch has no CUDA (install a CUDA build of torch, "
            "or choose device 'auto' or 'cpu')"
        )
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError("device 'mps' was requested but MPS is not available; choose 'auto' or 'cpu'")
    return dev


def effective_precision(precision: str, device: torch.device) -> str:
    """Half precision runs only on GPUs; on the CPU the networks run in fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision if device.type in ("cuda", "mps") else "fp32"


def autocast(device: torch.device, precision: str):
    """Autocast context for the network calls (the sampler's arithmetic stays float32)."""
    if precision == "fp32" or device.type not in ("cuda", "mps"):
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def release_memory(device: torch.device, collect: bool = True) -> None:
    """Collect garbage, then return cached device memory to the driver (nothing to return on the CPU).

    ``collect=False`` skips the garbage collection: that is what a worker thread wants at the end of
    every run, since a full collection holds the GIL (measured: ~0.5 s in a napari session, a frozen
    GUI for that long); the tensors of a run are freed by reference counting anyway.
    """
    if collect:
        import gc

        gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()
