"""The worker side of the sampling dock (Qt-free): a run's or a regeneration's steps, each finished window
mapped into the source geometry and intensity units as a block the GUI thread copies into the layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def plan_for(config, num_slices: int, start: int, start_known: bool, options) -> list:
    """The window plan the sampler will follow (the same arguments ``propagate.generate`` uses)."""
    from ..sampling.plan import plan_windows

    overlap = config.overlap if options.overlap is None else options.overlap
    return plan_windows(
        num_slices, config.window, overlap, start, start_known=start_known, official=options.official_compat
    )


@dataclass(frozen=True)
class Prepared:
    """First message of a run: the reference intensity mapping (``None``: model range [-1, 1])."""

    reference: Any


@dataclass(frozen=True)
class WindowBlock:
    """One finished window, already mapped into the source array: ``data[index] = block``."""

    update: Any
    index: tuple
    block: np.ndarray


def sampling_steps(bundle, mask, *, image, informed, start, options, cancel):
    """Worker side of a run (Qt-free): prepare the request, drive the one sampler generator, map each
    window into the source geometry and intensity units, and return the finished ``GeneratedVolume``.

    Everything heavy (resampling to the model grid, sampling, resampling back) happens here, so the
    GUI thread only copies finished blocks into the preallocated layer.
    """
    from ..sampling.pipeline import finish, prepare_request
    from ..sampling.propagate import generate

    request, grid, reference = prepare_request(
        bundle.config, mask, image=image, informed=informed, start=start, options=options
    )
    yield Prepared(reference)
    result = yield from window_blocks(generate(bundle, request, cancel=cancel), grid, reference)
    return finish(result, grid, reference, mask)


def regeneration_steps(bundle, previous, edited, *, image, margin, cancel, **overrides):
    """Worker side of "Regenerate changes" (Qt-free): drive :func:`sampling.regenerate.regenerate` and map
    each refilled window into the source geometry, as :func:`sampling_steps` does for a full run."""
    from ..sampling.regenerate import regenerate
    from ..volume import FittedNorm, model_grid

    prov = previous.header["provenance"]
    reference = FittedNorm.from_dict(prov["intensity"]) if isinstance(prov.get("intensity"), dict) else None
    grid = model_grid(edited, bundle.config.image_size, bundle.config.slice_axis)
    gen = regenerate(bundle, previous, edited, image=image, margin=margin, cancel=cancel, **overrides)
    # clipped as regenerate() clips the slices it puts into the result, so the preview equals it
    return (yield from window_blocks(gen, grid, reference, clip=True))


def window_blocks(gen, grid, reference, *, clip: bool = False):
    """Drive a sampler generator; yield each finished window as a :class:`WindowBlock` in the source
    geometry and intensity units (``clip``: to the model range [-1, 1] first); return its value."""
    from ..volume import slab_from_model

    while True:
        try:
            update = next(gen)
        except StopIteration as stop:
            return stop.value
        slices = np.clip(update.slices, -1.0, 1.0) if clip else update.slices
        values = reference.inverse(slices) if reference is not None else slices
        index, block = slab_from_model(values, update.z0, grid, "image")
        yield WindowBlock(update, index, block)
