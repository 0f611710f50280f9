"""Volumes with geometry, the model grid (volume <-> model slices), and intensity normalisation.

A :class:`Volume` is a 3-D array in stored voxel order (nibabel i, j, k) plus the (4, 4) affine that maps
voxel indices to world RAS+ millimetres. Geometry is never dropped: every derived volume carries an affine.

The model grid
--------------
The models work on stacks of square-ish 2-D slices, ``(Z, h, w)``. :func:`model_grid` decides how a volume
maps onto that stack and :func:`to_model` / :func:`from_model` move arrays there and back.

1. **Reorientation** (exact, a flip/transpose, never an interpolation). Axis 0 of the model frame is the
   slice (stacking) axis, axes 1 and 2 are the in-plane rows and columns. Index increases toward the
   anatomical direction in :data:`MODEL_AXCODES`:

   ============  =====================  ==============================================================
   slice_axis    model-frame axcodes    view
   ============  =====================  ==============================================================
   ``"S"``       ``('S', 'P', 'L')``    axial: inferior -> superior; rows anterior -> posterior;
                                        columns right -> left (radiological display, patient left on
                                        screen right). This is the (z, y, x) array order SimpleITK and
                                        nnU-Net give for an LPS-stored scan, i.e. what the official
                                        GEM-3D models were trained on.
   ``"A"``       ``('A', 'I', 'L')``    coronal: posterior -> anterior; rows superior -> inferior;
                                        columns right -> left.
   ``"R"``       ``('R', 'I', 'P')``    sagittal: left -> right; rows superior -> inferior;
                                        columns anterior -> posterior.
   ``"k"``       stored order (k, j, i) no anatomical reorientation: the third stored axis is the
                                        slice axis and the array is transposed to (k, j, i), exactly the
                                        (z, y, x) order SimpleITK/nnU-Net would use. No flips.
   ============  =====================  ==============================================================

   Oblique affines are mapped to the closest axes (``nibabel.orientations.io_orientation``).

2. **In-plane fit, aspect ratio preserved** (the official code stretched to a square; we do not). The
   oriented slice (H, W) with pixel spacing (sy, sx) mm covers H*sy by W*sx mm. It is resized to the
   largest (h', w') that fits the model size (h, w) with (nearly) square model pixels, then padded
   symmetrically with the background value to (h, w). There is no resampling along the slice axis.
   Images: ``skimage.transform.resize`` order 1 with anti-aliasing when shrinking; labels: order 0, no
   anti-aliasing, dtype kept. :func:`model_frame_affine` gives the exact affine of the model-grid array.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import nibabel as nib
import numpy as np
from nibabel import orientations as nio

SliceAxis = Literal["S", "A", "R", "k"]
ArrayKind = Literal["image", "labels"]

#: Model-frame axis codes per anatomical slice axis (axis 0 = slice axis, then rows, columns).
MODEL_AXCODES: dict[str, tuple[str, str, str]] = {
    "S": ("S", "P", "L"),
    "A": ("A", "I", "L"),
    "R": ("R", "I", "P"),
}
#: "k": stored (i, j, k) -> model (k, j, i), no flips. Row n: [model axis of stored axis n, flip].
_STORED_ORNT = np.array([[2, 1], [1, 1], [0, 1]], dtype=float)

_AFFINE_ATOL_MM = 1e-3  # tolerance when checking that a volume sits on a grid's source geometry


# --------------------------------------------------------------------------------------------- Volume
@dataclass(frozen=True, eq=False)
class Volume:
    """A 3-D array in stored voxel order plus its voxel -> world (RAS+, mm) affine.

    The caller's array is kept by reference and never written to; every derived array is new.
    ``header`` holds plain header facts (see :mod:`napari_gem3d.io`), including ``'provenance'`` if any.
    """

    array: np.ndarray
    affine: np.ndarray
    header: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        array = self.array if isinstance(self.array, np.ndarray) else np.asarray(self.array)
        if array.ndim != 3:
            hint = (
                " For 4-D data (channels or time points) pick one first, e.g. array[..., 0]."
                if array.ndim > 3
                else ""
            )
            raise ValueError(f"A Volume needs a 3-D array, got shape {array.shape}.{hint}")
        affine = np.array(self.affine, dtype=np.float64)  # our own copy
        if affine.shape != (4, 4):
            raise ValueError(f"The affine must be a (4, 4) matrix, got shape {affine.shape}.")
        if not np.all(np.isfinite(affine)):
            raise ValueError(f"The affine contains NaN or inf values:\n{affine}")
        if not np.allclose(affine[3], [0, 0, 0, 1]):
            raise ValueError(f"The affine's last row must be [0, 0, 0, 1], got {affine[3]}.")
        if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise ValueError(f"The affine is not invertible (zero spacing or collinear axes):\n{affine}")
        affine.flags.writeable = False
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "affine", affine)
        object.__setattr__(self, "header", dict(self.header))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.array.shape)  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the stored axes (column norms of the affine)."""
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return tuple(float(s) for s in norms)  # type: ignore[return-value]

    @property
    def axcodes(self) -> tuple[str, str, str]:
        """Anatomical direction each stored axis increases toward, e.g. ('L', 'A', 'S')."""
        return tuple(nib.aff2axcodes(self.affine))  # type: ignore[return-value]

    def with_array(self, array: np.ndarray, **header_updates: Any) -> Volume:
        """Same geometry, new data (e.g. a generated image or an edited mask)."""
        array = np.asarray(array)
        if array.shape != self.array.shape:
            raise ValueError(
                f"with_array needs an array of the same shape {self.shape}, got {array.shape}; "
                "to change the grid, build a new Volume with its own affine."
            )
        return Volume(array, self.affine, {**self.header, **header_updates})


def same_grid(a: Volume, b: Volume) -> bool:
    """Two volumes on one voxel grid: the same shape and voxel -> scanner affine (to a thousandth of a mm)."""
    return a.shape == b.shape and np.allclose(a.affine, b.affine, atol=1e-3)


def require_finite(array: np.ndarray, what: str) -> None:
    """Refuse NaN or infinite values with how many there are and where the first one is.

    A single NaN spreads through the normalisation and the networks into an all-NaN volume, so it is
    an input error, named with the fix, never something to generate from.
    """
    array = np.asarray(array)
    if array.dtype.kind not in "fc":
        return
    bad = ~np.isfinite(array)
    count = int(np.count_nonzero(bad))
    if count:
        nan = int(np.count_nonzero(np.isnan(array)))
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{what} holds {count} non-finite value(s) ({nan} NaN, {count - nan} infinite; the first at voxel "
            f"{first}); replace them (e.g. numpy.nan_to_num, or fill in your viewer) and save a new file"
        )


# ----------------------------------------------------------------------------------------- model grid
@dataclass(frozen=True, eq=False)
class ModelGrid:
    """How one source geometry maps onto the model's ``(Z, h, w)`` slice stack (see module docstring).

    Equality compares all fields (arrays by value).
    """

    slice_axis: str
    size: tuple[int, int]  # model in-plane (h, w)
    source_shape: tuple[int, int, int]
    source_affine: np.ndarray
    ornt: np.ndarray  # (3, 2) nibabel orientation transform: stored axes -> model frame
    oriented_shape: tuple[int, int, int]  # (Z, H, W) after reorientation, before the in-plane fit
    resized_shape: tuple[int, int]  # (h', w') in-plane after resizing, before padding
    pad: tuple[tuple[int, int], tuple[int, int]]  # ((top, bottom), (left, right)) padding to `size`

    @property
    def num_slices(self) -> int:
        """Z: number of slices in the model frame."""
        return self.oriented_shape[0]

    @property
    def model_shape(self) -> tuple[int, int, int]:
        return (self.num_slices, *self.size)

    @property
    def inverse_ornt(self) -> np.ndarray:
        """Orientation transform from the model frame back to the stored axes."""
        inv = np.empty_like(self.ornt)
        for stored_axis, (model_axis, flip) in enumerate(self.ornt):
            inv[int(model_axis)] = (stored_axis, flip)
        return inv

    @property
    def oriented_affine(self) -> np.ndarray:
        """Affine of the reoriented (Z, H, W) array, before the in-plane fit."""
        return self.source_affine @ nio.inv_ornt_aff(self.ornt, self.source_shape)

    @property
    def axcodes(self) -> tuple[str, str, str]:
        return tuple(nib.aff2axcodes(self.oriented_affine))  # type: ignore[return-value]

    @property
    def oriented_spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the model frame's (slice, row, column) axes, before the in-plane fit."""
        return tuple(float(s) for s in np.linalg.norm(self.oriented_affine[:3, :3], axis=0))  # type: ignore[return-value]

    def check_source(self, volume: Volume) -> None:
        """Raise ValueError unless ``volume`` has this grid's source shape and affine."""
        if volume.shape != self.source_shape:
            raise ValueError(
                f"Volume shape {volume.shape} does not match the model grid's source shape "
                f"{self.source_shape}; build the grid from this volume (model_grid) or resample it first."
            )
        if not np.allclose(volume.affine, self.source_affine, rtol=0, atol=_AFFINE_ATOL_MM):
            raise ValueError(
                "Volume affine does not match the model grid's source affine (image and mask must share "
                f"one geometry):\n{volume.affine}\nvs\n{self.source_affine}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe description (for provenance)."""
        return {
            "slice_axis": self.slice_axis,
            "size": list(self.size),
            "source_shape": list(self.source_shape),
            "source_affine": self.source_affine.tolist(),
            "model_axcodes": list(self.axcodes),
            "oriented_shape": list(self.oriented_shape),
            "resized_shape": list(self.resized_shape),
            "pad": [list(p) for p in self.pad],
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ModelGrid):
            return NotImplemented
        return (
            self.slice_axis == other.slice_axis
            and self.size == other.size
            and self.source_shape == other.source_shape
            and np.array_equal(self.source_affine, other.source_affine)
            and np.array_equal(self.ornt, other.ornt)
            and self.oriented_shape == other.oriented_shape
            and self.resized_shape == other.resized_shape
            and self.pad == other.pad
        )

    def __hash__(self) -> int:
        return hash((self.slice_axis, self.size, self.source_shape, self.source_affine.tobytes()))


def _as_size(size: int | tuple[int, int]) -> tuple[int, int]:
    pair = (size, size) if np.isscalar(size) else tuple(size)  # type: ignore[arg-type]
    if len(pair) != 2 or any(int(s) != s or int(s) < 1 for s in pair):
        raise ValueError(f"Model size must be a positive int or an (h, w) pair of ints, got {size!r}.")
    return int(pair[0]), int(pair[1])


def model_grid(volume: Volume, size: int | tuple[int, int], slice_axis: SliceAxis = "S") -> ModelGrid:
    """Plan the mapping of ``volume`` onto a model stack of ``size`` (h, w) slices along ``slice_axis``."""
    h, w = _as_size(size)
    if slice_axis == "k":
        ornt = _STORED_ORNT.copy()
    elif slice_axis in MODEL_AXCODES:
        ornt = nio.ornt_transform(
            nio.io_orientation(volume.affine), nio.axcodes2ornt(MODEL_AXCODES[slice_axis])
        )
    else:
        raise ValueError(
            f"slice_axis must be one of 'S' (axial), 'A' (coronal), 'R' (sagittal), 'k'; got {slice_axis!r}."
        )
    ornt.flags.writeable = False
    oriented_shape = tuple(int(volume.shape[int(ax)]) for ax in np.argsort(ornt[:, 0]))
    _, H, W = oriented_shape
    oriented_affine = volume.affine @ nio.inv_ornt_aff(ornt, volume.shape)
    sy, sx = np.linalg.norm(oriented_affine[:3, 1:3], axis=0)
    extent_y, extent_x = H * sy, W * sx
    pixel = max(extent_y / h, extent_x / w)  # mm per model pixel, so the whole slice fits
    rh = min(h, max(1, int(np.floor(extent_y / pixel + 0.5 + 1e-9))))
    rw = min(w, max(1, int(np.floor(extent_x / pixel + 0.5 + 1e-9))))
    pad = (((h - rh) // 2, h - rh - (h - rh) // 2), ((w - rw) // 2, w - rw - (w - rw) // 2))
    return ModelGrid(
        slice_axis=slice_axis,
        size=(h, w),
        source_shape=volume.shape,
        source_affine=volume.affine,
        ornt=ornt,
        oriented_shape=oriented_shape,  # type: ignore[arg-type]
        resized_shape=(rh, rw),
        pad=pad,
    )


def model_frame_affine(grid: ModelGrid) -> np.ndarray:
    """Voxel -> world affine of a ``(Z, h, w)`` model-grid array (so it can be saved or viewed in place)."""
    _, H, W = grid.oriented_shape
    (rh, rw), ((top, _), (left, _)) = grid.resized_shape, grid.pad
    fy, fx = H / rh, W / rw
    # skimage.transform.resize maps output pixel centre o to input coordinate (o + 0.5) * f - 0.5.
    model_to_oriented = np.array(
        [
            [1.0, 0, 0, 0],
            [0, fy, 0, (fy - 1) / 2 - fy * top],
            [0, 0, fx, (fx - 1) / 2 - fx * left],
            [0, 0, 0, 1],
        ]
    )
    return grid.oriented_affine @ model_to_oriented


def _resize_inplane(array: np.ndarray, shape_hw: tuple[int, int], kind: ArrayKind) -> np.ndarray:
    from skimage.transform import resize

    out_shape = (array.shape[0], *shape_hw)
    if kind == "labels":
        return resize(array, out_shape, order=0, anti_aliasing=False, preserve_range=True).astype(
            array.dtype, copy=False
        )
    shrinking = any(o < i for o, i in zip(out_shape, array.shape, strict=False))
    out = resize(array, out_shape, order=1, anti_aliasing=shrinking, preserve_range=True)
    return out.astype(np.float32, copy=False)


def _check_kind(kind: str) -> None:
    if kind not in ("image", "labels"):
        raise ValueError(f"kind must be 'image' or 'labels', got {kind!r}.")


def to_model(
    volume: Volume, grid: ModelGrid, kind: ArrayKind, pad_value: float | None = None
) -> np.ndarray:
    """Volume -> new ``(Z, h, w)`` array on the model grid.

    Images come back float32 (linear, anti-aliased when shrinking), labels keep their dtype (nearest).
    ``pad_value`` fills the in-plane padding: default the image minimum, or 0 for labels.
    """
    _check_kind(kind)
    grid.check_source(volume)
    oriented = nio.apply_orientation(volume.array, grid.ornt)
    if kind == "image":
        oriented = np.asarray(oriented, dtype=np.float32)
        if pad_value is None:
            pad_value = float(np.nanmin(oriented)) if oriented.size else 0.0
    elif pad_value is None:
        pad_value = 0
    else:
        cast = np.asarray(pad_value).astype(oriented.dtype)
        if cast != pad_value:
            raise ValueError(f"pad_value {pad_value!r} cannot be stored in the label dtype {oriented.dtype}.")
    if grid.resized_shape != grid.oriented_shape[1:]:
        oriented = _resize_inplane(oriented, grid.resized_shape, kind)
    return np.pad(oriented, ((0, 0), *grid.pad), mode="constant", constant_values=pad_value)


def from_model(array: np.ndarray, grid: ModelGrid, kind: ArrayKind, chunk: int = 8) -> Volume:
    """Model-grid ``(Z, h, w)`` array -> new Volume on the source shape and affine.

    Inverse of :func:`to_model`: crop the padding, resize back (labels nearest), undo the reorientation.
    The result has an empty header; use ``source.with_array(result.array)`` to keep the source's header.
    Built from :func:`slab_from_model` ``chunk`` slices at a time: the same numbers as one whole-stack
    pass (the in-plane fit is per slice), with the interpreter free between slabs, so a GUI thread
    stays responsive while a worker maps a large volume back.
    """
    _check_kind(kind)
    array = np.asarray(array)
    if array.shape != grid.model_shape:
        raise ValueError(
            f"Expected a model-grid array of shape {grid.model_shape} (Z, h, w), got {array.shape}."
        )
    out, step = None, max(1, int(chunk))
    for z0 in range(0, grid.num_slices, step):
        index, block = slab_from_model(array[z0 : z0 + step], z0, grid, kind)
        if out is None:  # new memory, never a view of the model array
            out = np.empty(grid.source_shape, dtype=block.dtype)
        out[index] = block
    return Volume(out, grid.source_affine)


# -------------------------------------------------------------------------------- intensity normalisation
@dataclass(frozen=True)
class FittedNorm:
    """Intensity window [lo, hi] (source units) <-> [-1, 1]."""

    lo: float
    hi: float

    def __post_init__(self) -> None:
        lo, hi = float(self.lo), float(self.hi)
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError(f"Intensity window bounds must be finite, got lo={lo}, hi={hi}.")
        if not hi > lo:
            raise ValueError(
                f"Intensity window is empty (lo={lo}, hi={hi}): the image is constant in the fitted region, "
                "or the window bounds are reversed. Check the image, the mask, or pass explicit bounds."
            )
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)

    def forward(self, array: np.ndarray) -> np.ndarray:
        """Clip to [lo, hi] and map linearly to [-1, 1] (new float32 array)."""
        x = np.clip(np.asarray(array, dtype=np.float64), self.lo, self.hi)
        return ((x - self.lo) / (self.hi - self.lo) * 2.0 - 1.0).astype(np.float32)

    def inverse(self, array: np.ndarray) -> np.ndarray:
        """Map [-1, 1] back to source intensity units (new float32 array); inputs are clipped to [-1, 1]."""
        x = np.clip(np.asarray(array, dtype=np.float64), -1.0, 1.0)
        return ((x + 1.0) / 2.0 * (self.hi - self.lo) + self.lo).astype(np.float32)

    def to_dict(self) -> dict[str, float]:
        return {"lo": self.lo, "hi": self.hi}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FittedNorm:
        return cls(lo=float(data["lo"]), hi=float(data["hi"]))


_NORM_KINDS = ("percentile", "window", "minmax")


@dataclass(frozen=True)
class IntensityNorm:
    """How to map intensities to [-1, 1].

    - ``"percentile"``: clip to the [low, high] percentiles (MRI; default 0.5 / 99.5);
    - ``"window"``: clip to the fixed window [low, high] in source units (CT Hounsfield units);
    - ``"minmax"``: the official GEM-3D per-volume min-max (low/high are ignored).

    With a ``mask`` (e.g. the body), statistics are computed inside it only. NaN/inf voxels are ignored.
    """

    kind: Literal["percentile", "window", "minmax"]
    low: float = 0.5
    high: float = 99.5

    def __post_init__(self) -> None:
        if self.kind not in _NORM_KINDS:
            raise ValueError(f"IntensityNorm kind must be one of {_NORM_KINDS}, got {self.kind!r}.")
        low, high = float(self.low), float(self.high)
        if not (np.isfinite(low) and np.isfinite(high)) or not low < high:
            raise ValueError(f"IntensityNorm needs finite low < high, got low={low}, high={high}.")
        if self.kind == "percentile" and not (low >= 0.0 and high <= 100.0):
            raise ValueError(f"Percentiles must lie in [0, 100], got low={low}, high={high}.")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    def fit(self, array: np.ndarray, mask: np.ndarray | None = None) -> FittedNorm:
        """Fit the window on ``array`` (inside ``mask`` when given)."""
        if self.kind == "window":
            return FittedNorm(self.low, self.high)
        values = np.asarray(array)
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != values.shape:
                raise ValueError(f"Mask shape {mask.shape} does not match the image shape {values.shape}.")
            values = values[mask.astype(bool)]
        values = values[np.isfinite(values)] if values.dtype.kind == "f" else values.ravel()
        if values.size == 0:
            raise ValueError("No finite voxels to fit the intensity window on (empty image or empty mask).")
        if self.kind == "minmax":
            lo, hi = float(values.min()), float(values.max())
        else:
            lo, hi = (float(v) for v in np.percentile(values, [self.low, self.high]))
        return FittedNorm(lo, hi)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "low": self.low, "high": self.high}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IntensityNorm:
        return cls(kind=data["kind"], low=float(data.get("low", 0.5)), high=float(data.get("high", 99.5)))


def slab_from_model(
    slices: np.ndarray, z0: int, grid: ModelGrid, kind: ArrayKind
) -> tuple[tuple[slice, ...], np.ndarray]:
    """Model-grid slices ``[z0, z0 + n)`` -> ``(index, block)`` with ``source_array[index] = block``.

    The in-plane fit is per slice and the reorientation is a flip/transpose, so a slab of model
    slices maps exactly onto a slab of the source array (live preview of a partial volume);
    :func:`from_model` is made of such slabs.
    """
    _check_kind(kind)
    slices = np.asarray(slices)
    n = slices.shape[0]
    if slices.ndim != 3 or tuple(slices.shape[1:]) != tuple(grid.size) or not 0 <= z0 <= grid.num_slices - n:
        raise ValueError(
            f"expected model slices (n, {grid.size[0]}, {grid.size[1]}) inside [0, {grid.num_slices}), "
            f"got shape {slices.shape} at z0={z0}"
        )
    (top, _), (left, _) = grid.pad
    rh, rw = grid.resized_shape
    inner = slices[:, top : top + rh, left : left + rw]
    if kind == "image":
        inner = inner.astype(np.float32, copy=False)
    if grid.resized_shape != grid.oriented_shape[1:]:
        inner = _resize_inplane(inner, grid.oriented_shape[1:], kind)  # type: ignore[arg-type]
    block = np.array(nio.apply_orientation(inner, grid.inverse_ornt), order="C", copy=True)
    stored_axis, flip = (int(v) for v in grid.inverse_ornt[0])  # the stored axis that is the model's slice axis
    lo, hi = (grid.num_slices - z0 - n, grid.num_slices - z0) if flip < 0 else (z0, z0 + n)
    index = tuple(slice(lo, hi) if ax == stored_axis else slice(None) for ax in range(3))
    return index, block


__all__ = [
    "MODEL_AXCODES",
    "ArrayKind",
    "FittedNorm",
    "IntensityNorm",
    "ModelGrid",
    "SliceAxis",
    "Volume",
    "from_model",
    "model_frame_affine",
    "model_grid",
    "slab_from_model",
    "to_model",
]
