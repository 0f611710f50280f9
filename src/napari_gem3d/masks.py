"""Label masks: declared label sets, the model's mask encoding, an "outside body" helper, hashing.

Two encodings of a mask slice stack ``(Z, H, W)`` into a model condition ``(Z, C, H, W)`` float32:

- ``"official"`` (GEM-3D, reference-gem3d.md section 2.4): one channel. Each user label maps to an
  nnU-Net seg level, then ``level / max_level * 2 - 1``. Brain: outside brain -> -1.667, brain -> -1,
  oedema -> -0.333, non-enhancing tumour -> 0.333, enhancing tumour -> 1.
- ``"onehot"``: one channel per declared label, in sorted label order, with values -1 (absent) and +1
  (present), i.e. the same [-1, 1] range as the images.

Nearest-neighbour resizing commutes with both encodings, so masks are resized as labels
(``volume.to_model(..., "labels")``) and encoded afterwards.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

_MAX_LISTED = 20


class UndeclaredLabelsError(ValueError):
    """A mask holds label values that its LabelSpec does not declare."""


def require_label_map(labels: np.ndarray, what: str = "the mask") -> np.ndarray:
    """``labels`` as integers, or a ValueError: non-finite values, non-integers, or nothing labelled."""
    from .volume import require_finite

    labels = np.asarray(labels)
    require_finite(labels, what)
    if not np.issubdtype(labels.dtype, np.integer):
        rounded = np.rint(labels)
        if not np.array_equal(rounded, labels):
            raise ValueError(f"{what} holds non-integer values; a label volume must contain integer labels")
        labels = rounded.astype(np.int32)
    if not labels.any():
        raise ValueError(
            f"{what} is empty (every voxel is 0, background): there is nothing to generate; "
            "draw or load a label map of the anatomy (and lesion) first"
        )
    return labels


def _int_key(key: Any) -> int:
    """Label key as int; accepts ints, integral floats and their string forms (JSON keys)."""
    try:
        value = float(key)
    except (TypeError, ValueError):
        raise ValueError(f"Label values must be integers, got {key!r}.") from None
    if not np.isfinite(value) or value != int(value):
        raise ValueError(f"Label values must be integers, got {key!r}.")
    return int(value)


def _present_labels(mask: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an integer-valued mask (fast path for small integer ranges)."""
    if mask.size == 0:
        return np.zeros(0, dtype=np.int64)
    if mask.dtype == np.bool_:
        mask = mask.view(np.uint8)
    if mask.dtype.kind == "f":
        if not np.all(np.isfinite(mask)):
            raise ValueError("Mask contains NaN or inf values; a label mask must hold integers.")
        values = np.unique(mask)
        if np.any(values != np.round(values)):
            bad = values[values != np.round(values)][:_MAX_LISTED]
            raise ValueError(
                f"Mask holds non-integer values {bad.tolist()}; a label mask must hold integers."
            )
        return values.astype(np.int64)
    if mask.dtype.kind not in "iu":
        raise ValueError(f"A label mask must have an integer (or integral float) dtype, got {mask.dtype}.")
    lo, hi = int(mask.min()), int(mask.max())
    if hi - lo < 1 << 20:
        counts = np.bincount(mask.ravel().astype(np.int64) - lo)
        return np.flatnonzero(counts).astype(np.int64) + lo
    return np.unique(mask).astype(np.int64)


@dataclass(frozen=True)
class LabelSpec:
    """The declared labels of the user's mask and how to encode them for the model.

    ``names`` maps each label value of the user's mask to a name. For ``encoding="official"``, ``levels``
    maps user labels to nnU-Net seg levels (default: the label value itself) and ``max_level`` is the
    official ``max_seg`` (default: the largest level). ``levels``/``max_level`` must be unset for onehot.
    """

    names: Mapping[int, str]
    encoding: Literal["official", "onehot"]
    levels: Mapping[int, float] | None = None
    max_level: float | None = None

    def __post_init__(self) -> None:
        if self.encoding not in ("official", "onehot"):
            raise ValueError(f"encoding must be 'official' or 'onehot', got {self.encoding!r}.")
        if not self.names:
            raise ValueError("LabelSpec needs at least one declared label in `names`.")
        names = {_int_key(k): str(v) for k, v in self.names.items()}
        if len(names) != len(self.names):
            raise ValueError(f"Duplicate label values in names: {list(self.names)}.")
        object.__setattr__(self, "names", dict(sorted(names.items())))
        if self.encoding == "onehot":
            if self.levels is not None or self.max_level is not None:
                raise ValueError(
                    "levels and max_level apply to the 'official' encoding only; leave them unset."
                )
            return
        levels = {k: float(k) for k in names} if self.levels is None else {
            _int_key(k): float(v) for k, v in self.levels.items()
        }
        if set(levels) != set(names):
            raise ValueError(
                f"levels must give a level for every declared label: names {sorted(names)}, "
                f"levels {sorted(levels)}."
            )
        if not all(np.isfinite(v) for v in levels.values()):
            raise ValueError(f"levels must be finite numbers, got {levels}.")
        max_level = max(levels.values()) if self.max_level is None else float(self.max_level)
        if not (np.isfinite(max_level) and max_level > 0):
            raise ValueError(f"max_level must be a positive number, got {max_level}.")
        object.__setattr__(self, "levels", dict(sorted(levels.items())))
        object.__setattr__(self, "max_level", max_level)

    @property
    def labels(self) -> tuple[int, ...]:
        """Declared label values, sorted."""
        return tuple(self.names)

    @property
    def num_channels(self) -> int:
        return 1 if self.encoding == "official" else len(self.names)

    def encoded_values(self) -> dict[int, float]:
        """Official encoding: user label -> encoded grey value (``level / max_level * 2 - 1``)."""
        if self.encoding != "official":
            raise ValueError("encoded_values applies to the 'official' encoding only.")
        assert self.levels is not None and self.max_level is not None
        return {k: v / self.max_level * 2.0 - 1.0 for k, v in self.levels.items()}

    def validate(self, mask: np.ndarray) -> None:
        """Raise :class:`UndeclaredLabelsError` if ``mask`` holds values not in ``names``."""
        present = _present_labels(np.asarray(mask))
        undeclared = np.setdiff1d(present, np.asarray(self.labels, dtype=np.int64))
        if undeclared.size:
            shown = undeclared[:_MAX_LISTED].tolist()
            more = f" (and {undeclared.size - _MAX_LISTED} more)" if undeclared.size > _MAX_LISTED else ""
            raise UndeclaredLabelsError(
                f"The mask holds label values {shown}{more} that the label spec does not declare; declared: "
                f"{dict(self.names)}. Fix: translate the mask to the model's labels with `gem3d make-mask --image "
                "IMG --lesion MASK --label-map VALUE:NAME,... --out MODEL_MASK` (or 'Mask from image' in the mask "
                "editor); in Python, map them (np.where(mask == old, new, mask)) or add them to LabelSpec.names."
            )

    def encode(self, mask_slices: np.ndarray) -> np.ndarray:
        """``(Z, H, W)`` label slices -> new ``(Z, C, H, W)`` float32 condition (see module docstring)."""
        mask = np.asarray(mask_slices)
        if mask.ndim != 3:
            raise ValueError(f"encode expects mask slices of shape (Z, H, W), got {mask.shape}.")
        self.validate(mask)
        labels = np.asarray(self.labels, dtype=np.int64)
        if self.encoding == "official":
            lut = np.asarray([self.encoded_values()[k] for k in self.labels], dtype=np.float32)
            index = np.searchsorted(labels, mask.astype(np.int64, copy=False))
            return lut[index][:, None]
        out = np.empty((mask.shape[0], len(labels), *mask.shape[1:]), dtype=np.float32)
        for c, label in enumerate(labels):
            out[:, c] = np.where(mask == label, 1.0, -1.0)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (label keys become strings)."""
        return {
            "names": {str(k): v for k, v in self.names.items()},
            "encoding": self.encoding,
            "levels": None if self.levels is None else {str(k): v for k, v in self.levels.items()},
            "max_level": self.max_level,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelSpec:
        levels = data.get("levels")
        return cls(
            names={_int_key(k): v for k, v in data["names"].items()},
            encoding=data["encoding"],
            levels=None if levels is None else {_int_key(k): float(v) for k, v in levels.items()},
            max_level=None if data.get("max_level") is None else float(data["max_level"]),
        )


def official_brain_spec() -> LabelSpec:
    """Official brain model (MSD Task01 FLAIR): user labels 0..4 -> nnU-Net levels -1..3, max_seg 3."""
    return LabelSpec(
        names={
            0: "outside brain",
            1: "brain",
            2: "oedema",
            3: "non-enhancing tumour",
            4: "enhancing tumour",
        },
        encoding="official",
        levels={0: -1.0, 1: 0.0, 2: 1.0, 3: 2.0, 4: 3.0},
        max_level=3.0,
    )


def official_abdomen_spec() -> LabelSpec:
    """Official abdomen model (AbdomenCT-1K): labels 0..4 -> levels 0..4, max_seg 4."""
    return LabelSpec(
        names={0: "background", 1: "liver", 2: "kidney", 3: "spleen", 4: "pancreas"},
        encoding="official",
        levels={0: 0.0, 1: 1.0, 2: 2.0, 3: 3.0, 4: 4.0},
        max_level=4.0,
    )


def _threshold(image: np.ndarray, threshold: float | None) -> float:
    if threshold is not None:
        return float(threshold)
    from skimage.filters import threshold_otsu

    finite = image[np.isfinite(image)] if image.dtype.kind == "f" else image
    if finite.size == 0 or np.min(finite) == np.max(finite):
        raise ValueError("Cannot find the body in a constant image; pass an explicit threshold.")
    return float(threshold_otsu(finite))


def body_region(image: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Boolean body mask: largest connected component of ``image > threshold`` (Otsu by default), holes
    filled. New array; the image is not modified."""
    image = np.asarray(image)
    return _largest_filled(image > _threshold(image, threshold))


def largest_component(foreground: np.ndarray, *, connectivity: int = 1) -> np.ndarray:
    """The largest connected component of ``foreground`` (``connectivity`` as scipy's: 1 faces, up to ndim
    for faces, edges and corners); all False when there is none."""
    from scipy import ndimage

    foreground = np.asarray(foreground)
    structure = ndimage.generate_binary_structure(foreground.ndim, connectivity)
    labelled, count = ndimage.label(foreground, structure=structure)
    if count == 0:
        return np.zeros(foreground.shape, dtype=bool)
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    return labelled == int(np.argmax(sizes))


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Holes filled in 3-D and then slice by slice along every axis (a cavity that opens only through the
    edge of the volume, e.g. a cut-off neck, still gets filled); 2-D masks are filled once."""
    from scipy import ndimage

    out = ndimage.binary_fill_holes(mask)
    if out.ndim == 3:
        for axis in range(3):  # 2-D filling: no connectivity along `axis`
            structure = ndimage.generate_binary_structure(3, 1)
            structure[tuple(0 if a == axis else 1 for a in range(3))] = False
            structure[tuple(2 if a == axis else 1 for a in range(3))] = False
            out = ndimage.binary_fill_holes(out, structure=structure)
    return out


def _largest_filled(foreground: np.ndarray) -> np.ndarray:
    """Largest connected component with its holes filled (:func:`fill_holes`, then once more in 3-D)."""
    from scipy import ndimage

    body = fill_holes(largest_component(foreground))
    return ndimage.binary_fill_holes(body) if body.ndim == 3 else body


def outside_from_image(
    image: np.ndarray,
    mask: np.ndarray,
    outside_label: int = 0,
    body_label: int = 1,
    threshold: float | None = None,
    background_label: int = 0,
) -> np.ndarray:
    """Add an "outside body" region to a mask that has none (e.g. for :func:`official_brain_spec`).

    The body is the largest connected component of ``image > threshold`` (Otsu by default) together with
    the lesion voxels, holes filled (in 3-D and slice by slice). Voxels of ``mask`` equal to
    ``background_label`` become ``body_label`` inside the body and ``outside_label`` outside it; every
    other (lesion) label is kept. Returns a new array of the mask's dtype; the inputs are never modified.
    For a brain, pass a skull-stripped image or a threshold that separates brain from skull, since the
    official "outside" means outside the brain.
    """
    image, mask = np.asarray(image), np.asarray(mask)
    if image.shape != mask.shape:
        raise ValueError(
            f"Image shape {image.shape} and mask shape {mask.shape} differ; they must share a grid."
        )
    background = mask == background_label
    if body_label != background_label and np.any(mask == body_label):
        raise ValueError(
            f"The mask already contains body_label {body_label}; lesion voxels with that value would be "
            "indistinguishable from body. Remap the lesion labels first or choose another body_label."
        )
    body = _largest_filled((image > _threshold(image, threshold)) | ~background)
    for label in (outside_label, body_label):
        if np.asarray(label).astype(mask.dtype) != label:
            raise ValueError(f"Label {label} cannot be stored in the mask dtype {mask.dtype}.")
    out = mask.copy()
    out[background & body] = body_label
    out[background & ~body] = outside_label
    return out


def mask_hash(mask: np.ndarray) -> str:
    """sha256 hex digest of a mask's dtype, shape and bytes (native byte order, C order), for provenance."""
    array = np.asarray(mask)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256()
    digest.update(f"{array.dtype.str}|{array.shape}|".encode())
    digest.update(memoryview(array).cast("B") if array.size else b"")
    return digest.hexdigest()


def mask_slice_hashes(slices: np.ndarray, chars: int = 12) -> list[str]:
    """A short sha256 per slice of a ``(Z, H, W)`` label stack: which slices an edit touched, without
    keeping the old mask (local regeneration)."""
    stack = np.ascontiguousarray(np.asarray(slices).astype(np.int16, copy=False))
    return [hashlib.sha256(stack[z].tobytes()).hexdigest()[:chars] for z in range(stack.shape[0])]


__all__ = [
    "LabelSpec",
    "UndeclaredLabelsError",
    "body_region",
    "fill_holes",
    "largest_component",
    "mask_hash",
    "mask_slice_hashes",
    "official_abdomen_spec",
    "official_brain_spec",
    "outside_from_image",
]
