"""The model card: what a bundle's model knows, so that a scan outside it is refused instead of faked.

Stored as ``card`` in a bundle's ``config.json``; written by training (``training/card.py``), by
``gem3d convert-official`` and for the bundled demo model. A bundle without one loads with
:meth:`ModelCard.unknown`, which the domain check (:mod:`napari_gem3d.domain`) reports as unknown.

Fields
------
``modality``            "MR" or "CT" ("unknown" for an old bundle)
``contrast``            sequence or contrast, e.g. "T1", "FLAIR", "non-contrast CT"
``body_region``         e.g. "brain", "abdomen"
``tissue_labels``       label values that must be present: the anatomy the model draws (brain: CSF/GM/WM)
``lesion_labels``       label values that may be present: lesions the model can add
``background_labels``   label values of "outside the body/organ" (usually 0)
``intensity_units``     "arbitrary (MR)" or "HU"
``intensity_range``     [low, high] of the raw intensities the model was trained on (percentiles 0.5/99.5)
``spacing_mm``          {"in_plane": [min, max], "slice": [min, max]} of the training volumes, in mm
``fov_mm``              {"in_plane": [min, max]}: largest in-plane extent of the training volumes, in mm
``skull_stripped``      whether the training images had the skull removed (brain models)
``training_data``       where the training volumes came from
``intended_use``        what the model is for
``limits``              what it is known not to do
The model grid (in-plane size, slice axis) and the label names come from the rest of the config.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

MODALITIES = ("MR", "CT", "unknown")


def _pair(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    lo, hi = (float(v) for v in value)
    if not lo <= hi:
        raise ValueError(f"a range needs low <= high, got {value}")
    return lo, hi


def _ranges(value: Any, keys: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    if not value:
        return {}
    unknown = set(value) - set(keys)
    if unknown:
        raise ValueError(f"unknown range key(s) {sorted(unknown)}; known: {list(keys)}")
    return {k: _pair(v) for k, v in value.items()}  # type: ignore[misc]


@dataclass(frozen=True)
class ModelCard:
    modality: str = "unknown"
    contrast: str = "unknown"
    body_region: str = "unknown"
    tissue_labels: tuple[int, ...] = ()
    lesion_labels: tuple[int, ...] = ()
    background_labels: tuple[int, ...] = (0,)
    intensity_units: str = "unknown"
    intensity_range: tuple[float, float] | None = None
    spacing_mm: dict[str, tuple[float, float]] = field(default_factory=dict)
    fov_mm: dict[str, tuple[float, float]] = field(default_factory=dict)
    skull_stripped: bool | None = None
    training_data: str = "unknown"
    intended_use: str = "unknown"
    limits: tuple[str, ...] = ()

    def __post_init__(self):
        if self.modality not in MODALITIES:
            raise ValueError(f"card modality must be one of {MODALITIES}, got {self.modality!r}")
        for name in ("tissue_labels", "lesion_labels", "background_labels"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        overlap = set(self.tissue_labels) & set(self.lesion_labels)
        if overlap:
            raise ValueError(f"labels {sorted(overlap)} are listed both as tissue and as lesion labels")
        object.__setattr__(self, "intensity_range", _pair(self.intensity_range))
        object.__setattr__(self, "spacing_mm", _ranges(self.spacing_mm, ("in_plane", "slice")))
        object.__setattr__(self, "fov_mm", _ranges(self.fov_mm, ("in_plane",)))
        object.__setattr__(self, "limits", tuple(str(v) for v in self.limits))

    @property
    def known(self) -> bool:
        return self.modality != "unknown"

    @classmethod
    def unknown(cls) -> ModelCard:
        """The card of a bundle written before cards existed: nothing is known, nothing can be checked."""
        return cls(limits=("this bundle has no model card: its domain is unknown",))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("tissue_labels", "lesion_labels", "background_labels", "limits"):
            d[key] = list(d[key])
        d["intensity_range"] = None if self.intensity_range is None else list(self.intensity_range)
        d["spacing_mm"] = {k: list(v) for k, v in self.spacing_mm.items()}
        d["fov_mm"] = {k: list(v) for k, v in self.fov_mm.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ModelCard:
        if d is None:
            return cls.unknown()
        if not isinstance(d, dict):
            raise ValueError(f"card must be a JSON object, got {type(d).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"card: unknown field(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    def describe(self, label_names: dict[int, str], image_size: tuple[int, int], slice_axis: str) -> list[str]:
        """The card as lines for people (``gem3d info``, the plugin)."""

        def names(values):
            return ", ".join(f"{v} {label_names.get(v, '?')}" for v in values) or "none"

        def rng(r, unit="mm"):
            return f"{r[0]:.4g}-{r[1]:.4g} {unit}" if r else "unknown"

        return [
            f"modality: {self.modality}; contrast: {self.contrast}; body region: {self.body_region}"
            + ("" if self.skull_stripped is None else f"; skull-stripped: {'yes' if self.skull_stripped else 'no'}"),
            f"required tissue labels: {names(self.tissue_labels)}",
            f"optional lesion labels: {names(self.lesion_labels)}",
            f"background labels: {names(self.background_labels)}",
            f"intensities: {self.intensity_units}, trained on {rng(self.intensity_range, '')}".rstrip(),
            f"training voxel spacing: in-plane {rng(self.spacing_mm.get('in_plane'))}, "
            f"slices {rng(self.spacing_mm.get('slice'))}; in-plane field of view {rng(self.fov_mm.get('in_plane'))}",
            f"model grid: {image_size[0]}x{image_size[1]} slices stacked along {slice_axis} "
            "(any file orientation is reoriented exactly)",
            f"training data: {self.training_data}",
            f"intended use: {self.intended_use}",
            *(f"limit: {limit}" for limit in self.limits),
        ]


__all__ = ["MODALITIES", "ModelCard"]
