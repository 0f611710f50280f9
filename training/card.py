"""The model card a training run writes into its bundle: what it was told (``model.card``) and what it measured.

Told (the config's ``model.card`` mapping): modality, contrast, body region, which labels are tissue and
which are lesions, intensity units, skull stripping, training data, intended use, limits.
Measured over the training cases (as the model saw them, after cropping): the voxel spacing in-plane and
between slices, the in-plane field of view, and the range of the raw intensities the normalisation mapped
to [-1, 1] (the lowest 0.5th and highest 99.5th percentile).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from napari_gem3d.models import ModelCard
from napari_gem3d.volume import ModelGrid


def measured_geometry(grids: Sequence[ModelGrid]) -> dict[str, Any]:
    """{"spacing_mm": {"in_plane": [lo, hi], "slice": [lo, hi]}, "fov_mm": {"in_plane": [lo, hi]}}."""
    if not grids:
        return {}
    slices, in_plane, fov = [], [], []
    for g in grids:
        sz, sr, sc = g.oriented_spacing
        _, rows, cols = g.oriented_shape
        slices.append(sz)
        in_plane += [sr, sc]
        fov.append(max(rows * sr, cols * sc))

    def span(values):
        return [round(min(values), 3), round(max(values), 3)]

    return {"spacing_mm": {"in_plane": span(in_plane), "slice": span(slices)}, "fov_mm": {"in_plane": span(fov)}}


def training_card(told: dict[str, Any], cases: Sequence[Any]) -> ModelCard:
    """The card of a bundle trained on ``cases`` (``training.data.preprocess.CachedCase``)."""
    told = dict(told or {})
    if not told:
        return ModelCard.unknown()
    fitted = [c.meta.get("intensity") or {} for c in cases]
    lows = [float(f["lo"]) for f in fitted if "lo" in f]
    highs = [float(f["hi"]) for f in fitted if "hi" in f]
    measured: dict[str, Any] = measured_geometry([c.grid() for c in cases])
    if lows and highs:
        measured["intensity_range"] = [min(lows), max(highs)]
    return ModelCard.from_dict({**measured, **told})


__all__ = ["measured_geometry", "training_card"]
