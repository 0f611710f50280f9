"""Whole-volume generation in the user's geometry: Volume in, Volume out.

mask Volume (+ image Volume) -> model grid -> :func:`generate` -> back to the source shape and
affine (and the image's intensity units when an image or a picked informed slice gives them).
The GUI, the CLI and the studies call :func:`sample_volume`; it drives the one generator.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..masks import require_label_map
from ..volume import FittedNorm, ModelGrid, Volume, from_model, model_grid, require_finite, same_grid, to_model
from .cancel import CancelToken
from .informed import pick_informed, relative_index
from .request import InformedSlice, SamplingOptions, SamplingRequest, SamplingResult, WindowUpdate


@dataclass
class GeneratedVolume:
    volume: Volume  # source geometry, intensity units of the reference image when known
    result: SamplingResult  # model-grid arrays, plan, timings
    grid: ModelGrid
    provenance: dict[str, Any]


def mask_to_model(mask: Volume, config) -> tuple[np.ndarray, ModelGrid]:
    """Label volume -> (Z, h, w) model-grid labels (nearest) and the grid; labels are validated."""
    grid = model_grid(mask, config.image_size, config.slice_axis)
    labels = require_label_map(mask.array)
    config.labels.validate(labels)
    return to_model(mask.with_array(labels), grid, "labels"), grid


def prepare_request(
    config,
    mask: Volume,
    *,
    image: Volume | None = None,
    informed: InformedSlice | None = None,
    position: float = 0.5,
    options: SamplingOptions | None = None,
    start: int | None = None,
) -> tuple[SamplingRequest, ModelGrid, FittedNorm | None]:
    """Snapshot everything a generation needs (GUI thread); nothing here touches the networks.

    The start slice is ``start`` (an index along the model's slice axis, used exactly) when given, else the
    slice at relative ``position``.
    """
    options = options or SamplingOptions()
    if image is not None and not same_grid(image, mask):
        raise ValueError(
            f"image {image.shape} and mask {mask.shape} must share one geometry (shape and affine); "
            "resample the mask onto the image first"
        )
    if image is not None:
        require_finite(image.array, "the image")
    model_mask, grid = mask_to_model(mask, config)
    if start is None:
        start = relative_index(position, grid.num_slices)
    elif not 0 <= int(start) < grid.num_slices:
        raise ValueError(f"start slice {start} is outside 0..{grid.num_slices - 1} along the model's slice axis")
    start = int(start)
    reference = None
    if options.mode == "gem3d" and informed is None:
        if image is None:
            raise ValueError("GEM-3D needs an informed slice: give an image, pick one from a volume, or generate one")
        informed = pick_informed(image, config, index=start, name=str(image.header.get("source", "image")),
                                 is_true_slice=True)
    if image is not None:
        reference = config.intensity.fit(np.asarray(image.array, dtype=np.float32))
    elif informed is not None and "intensity" in informed.source:
        reference = FittedNorm.from_dict(informed.source["intensity"])
    request = SamplingRequest(mask=model_mask, start=start, informed=informed, options=options)
    return request, grid, reference


def sample_volume(
    bundle,
    mask: Volume,
    *,
    image: Volume | None = None,
    informed: InformedSlice | None = None,
    position: float = 0.5,
    options: SamplingOptions | None = None,
    cancel: CancelToken | None = None,
    start: int | None = None,
) -> Generator[WindowUpdate, None, GeneratedVolume]:
    """Yield every window update, return the generated volume in the mask's geometry (starting at slice
    ``start`` when given, else at relative ``position``)."""
    from .propagate import generate

    request, grid, reference = prepare_request(
        bundle.config, mask, image=image, informed=informed, position=position, options=options, start=start
    )
    result = yield from generate(bundle, request, cancel=cancel)
    return finish(result, grid, reference, mask)


def finish(result: SamplingResult, grid: ModelGrid, reference: FittedNorm | None, source: Volume) -> GeneratedVolume:
    """Model-grid result -> Volume in the source geometry, with provenance in its header."""
    model = np.clip(result.volume, -1.0, 1.0)
    values = reference.inverse(model) if reference is not None else model
    back = from_model(values, grid, "image").array
    provenance = dict(result.provenance)
    provenance["grid"] = grid.to_dict()
    provenance["intensity"] = reference.to_dict() if reference is not None else "model range [-1, 1]"
    volume = Volume(back.astype(np.float32), source.affine, {"provenance": provenance})
    return GeneratedVolume(volume=volume, result=result, grid=grid, provenance=provenance)


def run_to_end(gen: Generator) -> Any:
    """Drive a generator to completion and return its value (CLI and tests)."""
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
