"""Sampling: window plans, the propagation generator, informed slices, variant studies, local regeneration."""

from .cancel import Cancelled, CancelToken
from .plan import Window, coverage, plan_windows, rounds
from .request import InformedSlice, SamplingOptions, SamplingRequest, SamplingResult, WindowUpdate


def generate(*args, **kwargs):
    """See :func:`napari_gem3d.sampling.propagate.generate` (imported lazily: it needs torch)."""
    from .propagate import generate as _generate

    return _generate(*args, **kwargs)


__all__ = [
    "CancelToken",
    "Cancelled",
    "InformedSlice",
    "SamplingOptions",
    "SamplingRequest",
    "SamplingResult",
    "Window",
    "WindowUpdate",
    "coverage",
    "generate",
    "plan_windows",
    "rounds",
]
