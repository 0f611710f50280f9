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
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"unknown device {device!r}; choose auto, cpu, cuda, cuda:N or mps") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {device!r} is not supported; choose auto, cpu, cuda, cuda:N or mps")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {device!r} was requested but this torch has no CUDA (install a CUDA build of torch, "
            "or choose device 'auto' or 'cpu')"
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise RuntimeError(
            f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s), "
            f"cuda:0 to cuda:{torch.cuda.device_count() - 1}"
        )
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError("device 'mps' was requested but MPS is not available; choose 'auto' or 'cpu'")
    return dev


def effective_precision(precision: str, device: torch.device) -> str:
    """The precision the networks will run in; half precision is refused on the CPU, not faked.

    On the CPU, bf16/fp16 would be slower than fp32 (no tensor cores) and a run that silently used fp32
    would record a precision it did not use, so asking for it is an error that names the fix.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "fp32" and device.type not in ("cuda", "mps"):
        raise ValueError(f"precision {precision} runs on a GPU only; on the CPU ({device}) use fp32")
    return precision


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
