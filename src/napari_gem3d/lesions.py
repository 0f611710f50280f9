"""Lesion geometry on label volumes: stamp, move, scale, rotate, flip, grow, shrink, delete, augment.

Every operation takes a label array (any integer dtype) and returns an :class:`Edit` holding a **new**
array (the input is never modified) and the bounding box of the voxels that changed, so a viewer can
update (and record for undo) only that block.

Conventions
-----------
- Points and offsets are in **voxel** coordinates of the array (axis order of the array).
- Sizes (radii, dilation radius) are in **mm**: ``spacing`` gives the voxel size along each array axis,
  so a sphere is round in mm on an anisotropic grid, and rotations are rigid in mm.
- A lesion is the set of voxels whose value is in ``labels`` (one label or several, e.g. oedema, rim
  and core of one tumour). With a ``point``, only the connected component (26-connectivity) containing
  the point, or the one nearest to it, is used.
- Voxels a lesion leaves are refilled with the **nearest non-lesion label** (the surrounding tissue), or
  with a fixed label when ``fill`` is an int.
- ``region`` (boolean, optional) is where a lesion may be: voxels that would land outside it are dropped
  (e.g. the brain: ``region_of(mask)``, every voxel that is not the outside label).

:func:`random_augmentation` is the paper's mask augmentation (reference-gem3d.md section 10.1) with the
official bug B10 fixed: the translation is in true voxels along the intended axes, the flip happens with
a probability, and the lesion is clipped to the brain/body region.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

Box = tuple[slice, slice, slice]
Labels = int | Sequence[int]

_STRUCTURE_26 = np.ones((3, 3, 3), dtype=bool)


# ------------------------------------------------------------------------------------------ results
@dataclass(frozen=True, eq=False)
class Edit:
    """Result of one operation: the new mask, the changed block (None: nothing changed), parameters."""

    mask: np.ndarray
    box: Box | None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return self.box is not None

    def changes(self, old: np.ndarray) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
        """``(indices, values)`` of the voxels that differ from ``old`` (for ``Labels.data_setitem``)."""
        if self.box is None:
            empty = np.zeros(0, dtype=np.intp)
            return (empty, empty, empty), np.zeros(0, dtype=self.mask.dtype)
        differ = np.asarray(old[self.box]) != self.mask[self.box]
        local = np.nonzero(differ)
        indices = tuple(idx + s.start for idx, s in zip(local, self.box, strict=True))
        return indices, self.mask[indices]


def _changed_box(old: np.ndarray, new: np.ndarray, within: Box | None = None) -> Box | None:
    """Bounding box of ``old != new`` (searched inside ``within`` when given)."""
    offset = [0, 0, 0]
    a, b = old, new
    if within is not None:
        a, b = old[within], new[within]
        offset = [s.start for s in within]
    diff = a != b
    if not diff.any():
        return None
    box = []
    for axis in range(3):
        other = tuple(i for i in range(3) if i != axis)
        hit = np.flatnonzero(diff.any(axis=other))
        box.append(slice(int(hit[0]) + offset[axis], int(hit[-1]) + 1 + offset[axis]))
    return tuple(box)  # type: ignore[return-value]


def _edit(old: np.ndarray, new: np.ndarray, within: Box | None = None, **info: Any) -> Edit:
    return Edit(new, _changed_box(old, new, within), info)


# ------------------------------------------------------------------------------------------ helpers
def _check_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"lesion operations need a 3-D label array, got shape {mask.shape}")
    if mask.dtype.kind not in "iub":
        raise ValueError(f"lesion operations need an integer label array, got dtype {mask.dtype}")
    return mask


def _spacing(spacing: Sequence[float]) -> np.ndarray:
    sp = np.asarray(spacing, dtype=float)
    if sp.shape != (3,) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(f"spacing must be three positive voxel sizes in mm, got {spacing!r}")
    return sp


def label_set(labels: Labels) -> tuple[int, ...]:
    """``labels`` as a sorted tuple of ints (one int or a sequence)."""
    values = (labels,) if np.isscalar(labels) else tuple(labels)  # type: ignore[arg-type]
    if not values:
        raise ValueError("give at least one lesion label")
    out = []
    for v in values:
        if int(v) != v:
            raise ValueError(f"labels must be integers, got {v!r}")
        out.append(int(v))
    return tuple(sorted(set(out)))


def _fits(value: int, dtype: np.dtype) -> None:
    if np.asarray(value).astype(dtype) != value:
        raise ValueError(f"label {value} cannot be stored in a {dtype} mask")


def region_of(mask: np.ndarray, outside_label: int = 0) -> np.ndarray:
    """Where lesions may be: every voxel whose label is not ``outside_label`` (e.g. the brain)."""
    return np.asarray(mask) != outside_label


def bounding_box(selected: np.ndarray) -> Box | None:
    """Tight bounding box of a boolean volume (None if empty)."""
    if not selected.any():
        return None
    box = []
    for axis in range(3):
        other = tuple(i for i in range(3) if i != axis)
        hit = np.flatnonzero(selected.any(axis=other))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)  # type: ignore[return-value]


def lesion_mask(mask: np.ndarray, labels: Labels, point: Sequence[float] | None = None) -> np.ndarray:
    """Boolean voxels of the lesion: all ``labels`` voxels, or the component at/nearest ``point``."""
    mask = _check_mask(mask)
    values = label_set(labels)
    selected = np.isin(mask, values)
    if not selected.any():
        raise ValueError(f"the mask has no voxel with label(s) {list(values)}: nothing to edit")
    if point is None:
        return selected
    p = _as_point(point, mask.shape)
    components, count = ndimage.label(selected, structure=_STRUCTURE_26)
    at = components[tuple(int(round(c)) for c in p)]
    if at == 0 and count > 1:
        # nearest component: the one whose closest voxel is nearest to the point
        _, nearest = ndimage.distance_transform_edt(components == 0, return_indices=True)
        at = components[tuple(nearest[:, int(round(p[0])), int(round(p[1])), int(round(p[2]))])]
    elif at == 0:
        at = 1
    return components == at


def _as_point(point: Sequence[float], shape: tuple[int, ...]) -> np.ndarray:
    p = np.asarray(point, dtype=float)
    if p.shape != (3,) or not np.all(np.isfinite(p)):
        raise ValueError(f"a point needs three finite voxel coordinates, got {point!r}")
    rounded = np.round(p)
    if np.any(rounded < 0) or np.any(rounded > np.asarray(shape) - 1):
        raise ValueError(f"point {p.tolist()} (voxels) lies outside the volume of shape {tuple(shape)}")
    return p


def _fill_vacated(
    out: np.ndarray, vacated: np.ndarray, exclude: tuple[int, ...], fill: int | str, spacing: np.ndarray
) -> None:
    """Refill ``vacated`` voxels of ``out`` in place: ``fill`` label, or the nearest non-lesion label."""
    if not vacated.any():
        return
    if fill != "nearest":
        _fits(int(fill), out.dtype)
        out[vacated] = int(fill)
        return
    box = bounding_box(vacated)
    assert box is not None
    margin = 4
    while True:
        crop = tuple(
            slice(max(0, s.start - margin), min(n, s.stop + margin))
            for s, n in zip(box, out.shape, strict=True)
        )
        sub = out[crop]
        source = ~np.isin(sub, exclude) & ~vacated[crop]
        full = all(c.start == 0 and c.stop == n for c, n in zip(crop, out.shape, strict=True))
        if source.any() or full:
            break
        margin *= 4
    if not source.any():  # nothing but lesion in the whole volume: use the smallest label not in the lesion
        candidates = [v for v in range(0, 256) if v not in exclude]
        out[vacated] = candidates[0]
        return
    _, idx = ndimage.distance_transform_edt(~source, sampling=spacing, return_indices=True)
    local = vacated[crop]
    sub[local] = sub[tuple(i[local] for i in idx)]


def _box_corners(box: Box) -> np.ndarray:
    lo = np.array([s.start for s in box], float) - 0.5
    hi = np.array([s.stop for s in box], float) - 0.5
    return np.array([[(lo, hi)[b][a] for a, b in enumerate(bits)] for bits in np.ndindex(2, 2, 2)])


def _resample_lesion(
    mask: np.ndarray,
    selected: np.ndarray,
    matrix_vox: np.ndarray,
    pivot: np.ndarray,
    offset: np.ndarray,
) -> tuple[np.ndarray, Box | None]:
    """Labels of the lesion moved by ``x' = pivot + offset + M (x - pivot)`` (voxel coords), nearest.

    Returns an int32 array of the mask's shape (-1 where the moved lesion is absent) restricted to the
    returned box (None if the lesion left the volume entirely).
    """
    src_box = bounding_box(selected)
    assert src_box is not None
    corners = _box_corners(src_box)
    moved = (corners - pivot) @ matrix_vox.T + pivot + offset
    lo = np.maximum(np.floor(moved.min(axis=0) + 0.5).astype(int), 0)
    hi = np.minimum(np.ceil(moved.max(axis=0) + 0.5).astype(int), np.asarray(mask.shape))
    if np.any(hi <= lo):
        return np.zeros(0, np.int32), None
    dst_box: Box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))  # type: ignore[assignment]
    # one voxel of "absent" padding: scipy's constant mode drops points just outside [0, n-1]
    src = np.pad(np.where(selected[src_box], mask[src_box].astype(np.int32), -1), 1, constant_values=-1)
    a = np.array([s.start for s in src_box], float) - 1.0
    b = lo.astype(float)
    inv = np.linalg.inv(matrix_vox)
    # output voxel o (in the dst crop) comes from source x = pivot + inv (o + b - pivot - offset), crop at a
    sampled = ndimage.affine_transform(
        src,
        inv,
        offset=pivot - a + inv @ (b - pivot - offset),
        output_shape=tuple(hi - lo),
        order=0,
        mode="nearest",
    )
    return sampled, dst_box


def transform_lesion(
    mask: np.ndarray,
    labels: Labels,
    matrix_mm: np.ndarray | None = None,
    *,
    offset_vox: Sequence[float] = (0.0, 0.0, 0.0),
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    point: Sequence[float] | None = None,
    pivot: Sequence[float] | None = None,
    region: np.ndarray | None = None,
    fill: int | str = "nearest",
) -> Edit:
    """Apply ``x' = pivot + offset + M (x - pivot)`` to a lesion (M a 3x3 matrix acting in mm).

    The pivot defaults to the lesion's centroid. The lesion's old voxels are refilled (``fill``), then
    the moved lesion is written where it lands inside ``region`` (and inside the volume).
    """
    mask = _check_mask(mask)
    sp = _spacing(spacing)
    values = label_set(labels)
    selected = lesion_mask(mask, values, point)
    matrix_mm = np.eye(3) if matrix_mm is None else np.asarray(matrix_mm, dtype=float)
    if matrix_mm.shape != (3, 3) or abs(np.linalg.det(matrix_mm)) < 1e-9:
        raise ValueError("the lesion transform must be an invertible 3x3 matrix")
    matrix_vox = np.diag(1.0 / sp) @ matrix_mm @ np.diag(sp)
    centre = np.array(ndimage.center_of_mass(selected)) if pivot is None else np.asarray(pivot, float)
    offset = np.asarray(offset_vox, dtype=float)
    if offset.shape != (3,) or not np.all(np.isfinite(offset)):
        raise ValueError(f"offset must be three finite voxel shifts, got {offset_vox!r}")
    out = mask.copy()
    _fill_vacated(out, selected, values, fill, sp)
    sampled, box = _resample_lesion(mask, selected, matrix_vox, centre, offset)
    if box is not None:
        place = sampled >= 0
        if region is not None:
            place &= np.asarray(region, dtype=bool)[box]
        out[box][place] = sampled[place].astype(out.dtype)
    return _edit(mask, out)


# ------------------------------------------------------------------------------------ the operations
def add_ellipsoid(
    mask: np.ndarray,
    center: Sequence[float],
    radii_mm: Sequence[float],
    label: int,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    region: np.ndarray | None = None,
    preserve: Sequence[int] = (),
) -> Edit:
    """Stamp an axis-aligned ellipsoid of ``label`` (semi-axes in mm) centred at ``center`` (voxels).

    Voxels whose label is in ``preserve`` are left alone (e.g. keep a core when adding oedema).
    """
    mask = _check_mask(mask)
    sp = _spacing(spacing)
    _fits(int(label), mask.dtype)
    c = _as_point(center, mask.shape)
    radii = np.asarray(radii_mm, dtype=float)
    if radii.shape != (3,) or np.any(~np.isfinite(radii)) or np.any(radii <= 0):
        raise ValueError(f"radii must be three positive sizes in mm, got {radii_mm!r}")
    half = np.ceil(radii / sp).astype(int)
    lo = np.maximum(np.floor(c).astype(int) - half, 0)
    hi = np.minimum(np.ceil(c).astype(int) + half + 1, np.asarray(mask.shape))
    box: Box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))  # type: ignore[assignment]
    grids = np.ogrid[box]
    inside = sum(((g - ci) * s / r) ** 2 for g, ci, s, r in zip(grids, c, sp, radii, strict=True)) <= 1.0
    if region is not None:
        inside &= np.asarray(region, dtype=bool)[box]
    if preserve:
        inside &= ~np.isin(mask[box], label_set(preserve))
    out = mask.copy()
    out[box][inside] = label
    return _edit(mask, out, box, center=c.tolist(), radii_mm=radii.tolist(), label=int(label))


def add_sphere(
    mask: np.ndarray, center: Sequence[float], radius_mm: float, label: int, **kwargs: Any
) -> Edit:
    """A ball of ``radius_mm`` (round in mm whatever the voxel spacing); see :func:`add_ellipsoid`."""
    return add_ellipsoid(mask, center, (radius_mm,) * 3, label, **kwargs)


def move(mask: np.ndarray, labels: Labels, offset_vox: Sequence[float], **kwargs: Any) -> Edit:
    """Translate a lesion by ``offset_vox`` voxels (rounded to whole voxels: the shape is kept exactly)."""
    offset = np.round(np.asarray(offset_vox, dtype=float))
    return transform_lesion(mask, labels, None, offset_vox=offset, **kwargs)


def scale(mask: np.ndarray, labels: Labels, factor: float | Sequence[float], **kwargs: Any) -> Edit:
    """Scale a lesion about its centroid by ``factor`` (one factor, or one per axis)."""
    f = np.broadcast_to(np.asarray(factor, dtype=float), (3,))
    if np.any(~np.isfinite(f)) or np.any(f <= 0):
        raise ValueError(f"scale factors must be positive, got {factor!r}")
    return transform_lesion(mask, labels, np.diag(f), **kwargs)


def rotation_matrix(angle_deg: float, axes: tuple[int, int]) -> np.ndarray:
    """3x3 rotation by ``angle_deg`` in the plane of array ``axes`` (from the first toward the second)."""
    a, b = axes
    if a == b or not {a, b} <= {0, 1, 2}:
        raise ValueError(f"axes must be two different array axes among 0, 1, 2; got {axes!r}")
    t = np.deg2rad(angle_deg)
    m = np.eye(3)
    m[a, a], m[a, b], m[b, a], m[b, b] = np.cos(t), -np.sin(t), np.sin(t), np.cos(t)
    return m


def rotate(
    mask: np.ndarray, labels: Labels, angle_deg: float, axes: tuple[int, int] = (1, 2), **kwargs: Any
) -> Edit:
    """Rotate a lesion about its centroid by ``angle_deg`` in the plane of ``axes`` (rigid in mm)."""
    return transform_lesion(mask, labels, rotation_matrix(angle_deg, axes), **kwargs)


def flip(
    mask: np.ndarray, labels: Labels, axis: int, *, point: Sequence[float] | None = None, **kwargs: Any
) -> Edit:
    """Mirror a lesion along ``axis`` about the centre of its bounding box (exact, voxel for voxel)."""
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
    box = bounding_box(lesion_mask(mask, labels, point))
    assert box is not None
    pivot = np.array([(s.start + s.stop - 1) / 2.0 for s in box])
    m = np.eye(3)
    m[axis, axis] = -1.0
    return transform_lesion(mask, labels, m, point=point, pivot=pivot, **kwargs)


def _ball(radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    half = np.floor(radius_mm / spacing).astype(int)
    grids = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    return sum((g * s) ** 2 for g, s in zip(grids, spacing, strict=True)) <= radius_mm**2 + 1e-9


def dilate(
    mask: np.ndarray,
    labels: Labels,
    radius_mm: float,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    point: Sequence[float] | None = None,
    region: np.ndarray | None = None,
) -> Edit:
    """Grow a lesion by ``radius_mm``; new voxels take the label of the nearest lesion voxel."""
    mask = _check_mask(mask)
    sp = _spacing(spacing)
    values = label_set(labels)
    selected = lesion_mask(mask, values, point)
    grown = ndimage.binary_dilation(selected, structure=_ball(float(radius_mm), sp))
    new = grown & ~selected
    if region is not None:
        new &= np.asarray(region, dtype=bool)
    out = mask.copy()
    if new.any():
        _, idx = ndimage.distance_transform_edt(~selected, sampling=sp, return_indices=True)
        out[new] = mask[tuple(i[new] for i in idx)]
    return _edit(mask, out, radius_mm=float(radius_mm))


def erode(
    mask: np.ndarray,
    labels: Labels,
    radius_mm: float,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    point: Sequence[float] | None = None,
    fill: int | str = "nearest",
) -> Edit:
    """Shrink a lesion by ``radius_mm``; freed voxels are refilled (``fill``)."""
    mask = _check_mask(mask)
    sp = _spacing(spacing)
    values = label_set(labels)
    selected = lesion_mask(mask, values, point)
    kept = ndimage.binary_erosion(selected, structure=_ball(float(radius_mm), sp))
    out = mask.copy()
    _fill_vacated(out, selected & ~kept, values, fill, sp)
    return _edit(mask, out, radius_mm=float(radius_mm))


def delete(
    mask: np.ndarray,
    labels: Labels,
    *,
    point: Sequence[float] | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    fill: int | str = "nearest",
) -> Edit:
    """Remove a lesion (the component at ``point``, or every voxel of ``labels``); refill its voxels."""
    mask = _check_mask(mask)
    values = label_set(labels)
    selected = lesion_mask(mask, values, point)
    out = mask.copy()
    _fill_vacated(out, selected, values, fill, _spacing(spacing))
    return _edit(mask, out)


# ------------------------------------------------------------------------------ random augmentation
def _rotation_about_centre(
    mask: np.ndarray, angles_deg: Sequence[float], spacing: np.ndarray, cval: int
) -> np.ndarray:
    """Whole-volume rigid rotation (mm) about the volume centre, nearest neighbour, padded with ``cval``."""
    m = np.eye(3)
    for axis, angle in enumerate(
        angles_deg
    ):  # rotation about array axis `axis` = in the other two axes' plane
        plane = tuple(a for a in range(3) if a != axis)
        m = rotation_matrix(float(angle), plane) @ m  # type: ignore[arg-type]
    m_vox = np.diag(1.0 / spacing) @ m @ np.diag(spacing)
    inv = np.linalg.inv(m_vox)
    centre = (np.asarray(mask.shape, float) - 1.0) / 2.0
    out = ndimage.affine_transform(
        mask, inv, offset=centre - inv @ centre, order=0, mode="constant", cval=cval
    )
    return out.astype(mask.dtype, copy=False)


def random_augmentation(
    mask: np.ndarray,
    rng: np.random.Generator,
    *,
    lesion_labels: Labels,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    outside_label: int = 0,
    max_angle_deg: float = 2.5,
    flip_axis: int | None = 2,
    flip_probability: float = 0.5,
    shift_range: tuple[int, int] = (20, 60),
    clip_to_region: bool = True,
) -> Edit:
    """The paper's mask augmentation, done as intended (reference-gem3d.md section 10.1, bug B10 fixed).

    1. Rotate the whole mask by angles drawn uniformly in +-``max_angle_deg`` about each of the three
       axes (rigid in mm, about the volume centre, nearest neighbour, padding = ``outside_label``).
    2. With probability ``flip_probability`` mirror it along ``flip_axis`` (the official code always
       flips the last array axis; pass the left-right axis of your volume).
    3. Cut the lesion (all ``lesion_labels`` voxels) out; its voxels take the nearest surrounding label.
    4. Translate the lesion toward the volume centre by d voxels, d drawn uniformly from the integers in
       ``shift_range`` (inclusive) and capped at the lesion centroid's distance to the centre, along the
       unit vector from the centroid to the centre in voxel index space, rounded to whole voxels.
    5. Paste it back; with ``clip_to_region`` lesion voxels landing outside the (augmented) region, i.e.
       on ``outside_label``, are dropped.

    ``info`` records the drawn angles, flip and shift (provenance).
    """
    mask = _check_mask(mask)
    sp = _spacing(spacing)
    values = label_set(lesion_labels)
    _fits(int(outside_label), mask.dtype)
    if not 0.0 <= flip_probability <= 1.0:
        raise ValueError(f"flip_probability must be in [0, 1], got {flip_probability}")
    lo, hi = (int(v) for v in shift_range)
    if not 0 <= lo <= hi:
        raise ValueError(f"shift_range must be (low, high) with 0 <= low <= high, got {shift_range!r}")
    if not np.isin(mask, values).any():
        raise ValueError(f"the mask has no voxel with lesion label(s) {list(values)}: nothing to augment")

    angles = rng.uniform(-max_angle_deg, max_angle_deg, size=3)
    out = _rotation_about_centre(mask, angles, sp, int(outside_label))
    flipped = bool(flip_axis is not None and rng.random() < flip_probability)
    if flipped:
        out = np.ascontiguousarray(np.flip(out, axis=int(flip_axis)))  # type: ignore[arg-type]
    selected = np.isin(out, values)
    info: dict[str, Any] = {
        "angles_deg": angles.tolist(),
        "flipped": flipped,
        "flip_axis": flip_axis,
        "shift_vox": [0, 0, 0],
        "distance_vox": 0,
    }
    if not selected.any():  # the rotation pushed the lesion out of the volume
        return _edit(mask, out, **info)
    region = region_of(out, outside_label) if clip_to_region else None
    centroid = np.array(ndimage.center_of_mass(selected))
    centre = (np.asarray(mask.shape, float) - 1.0) / 2.0
    to_centre = centre - centroid
    distance = float(np.linalg.norm(to_centre))
    d = min(float(rng.integers(lo, hi + 1)), distance)
    shift = np.round(to_centre / distance * d) if distance > 0 else np.zeros(3)
    info.update(shift_vox=[int(v) for v in shift], distance_vox=float(np.linalg.norm(shift)))
    lesion = out.copy()
    _fill_vacated(out, selected, values, "nearest", sp)
    if region is not None:
        region = region | selected  # the lesion's old place stays inside the region
    sampled, box = _resample_lesion(lesion, selected, np.eye(3), centroid, shift)
    if box is not None:
        place = sampled >= 0
        if region is not None:
            place &= region[box]
        out[box][place] = sampled[place].astype(out.dtype)
    return _edit(mask, out, **info)


__all__ = [
    "Edit",
    "add_ellipsoid",
    "add_sphere",
    "bounding_box",
    "delete",
    "dilate",
    "erode",
    "flip",
    "label_set",
    "lesion_mask",
    "move",
    "random_augmentation",
    "region_of",
    "rotate",
    "rotation_matrix",
    "scale",
    "transform_lesion",
]
