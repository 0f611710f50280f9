"""Layers <-> Volumes, and the one function that copies a layer's placement onto derived layers.

napari world frame
------------------
napari cannot show a 2-D view of a layer whose transform permutes axes (the displayed 2x2 block of the
matrix becomes singular), so a volume is shown **reoriented** (an exact flip/transpose, nibabel
orientation) to the closest of :data:`WORLD_AXCODES` = ("S", "P", "L"): slider = inferior -> superior,
rows anterior -> posterior, columns right -> left. That is the radiological axial view, and it is the
model frame of an axial model (``volume.MODEL_AXCODES["S"]``). World coordinates are millimetres in that
frame: ``world = (z, -y, -x)`` of RAS+ scanner coordinates. Every layer's ``scale``/``translate``
(and ``rotate``/``shear`` for oblique scans) come from the file's affine, so layers from different files
line up in scanner space.

``layer.metadata["gem3d_source"]`` keeps what the writer needs to put a layer back in the file's own
voxel order and header: the full header (NIfTI header object included), the stored affine and shape,
and the orientation transform stored -> displayed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from nibabel import orientations as nio

from ..volume import Volume

if TYPE_CHECKING:  # pragma: no cover
    from napari.layers import Layer

WORLD_AXCODES = ("S", "P", "L")
#: RAS+ scanner mm -> napari world mm (S, P, L)
RAS_TO_WORLD = np.array([[0.0, 0, 1, 0], [0, -1, 0, 0], [-1, 0, 0, 0], [0, 0, 0, 1]])
WORLD_TO_RAS = np.linalg.inv(RAS_TO_WORLD)
SOURCE_KEY = "gem3d_source"
RESULT_KEY = "gem3d"
TRANSFORM_ATTRS = ("scale", "translate", "rotate", "shear", "affine", "units")


# ------------------------------------------------------------------------------------------ helpers
def display_ornt(affine: np.ndarray) -> np.ndarray:
    """Orientation transform taking stored voxel axes to the display (world) axes."""
    return nio.ornt_transform(nio.io_orientation(affine), nio.axcodes2ornt(WORLD_AXCODES))


def _inverse_ornt(ornt: np.ndarray) -> np.ndarray:
    inv = np.empty_like(ornt)
    for axis, (target, flip) in enumerate(ornt):
        inv[int(target)] = (axis, flip)
    return inv


def reorient(volume: Volume) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(display array (new, C-contiguous), display RAS affine, ornt stored->display)``."""
    ornt = display_ornt(volume.affine)
    data = np.ascontiguousarray(nio.apply_orientation(np.asarray(volume.array), ornt))
    affine = volume.affine @ nio.inv_ornt_aff(ornt, volume.shape)
    return data, affine, ornt


def transform_kwargs(ras_affine: np.ndarray) -> dict[str, Any]:
    """napari ``scale/translate/rotate/shear/units`` for data whose voxel -> RAS affine is given."""
    from napari.utils.transforms import Affine

    decomposed = Affine(affine_matrix=RAS_TO_WORLD @ np.asarray(ras_affine, dtype=float))
    return {
        "scale": tuple(float(v) for v in decomposed.scale),
        "translate": tuple(float(v) for v in decomposed.translate),
        "rotate": np.asarray(decomposed.rotate, dtype=float),
        "shear": np.asarray(decomposed.shear, dtype=float),
        "units": ("mm", "mm", "mm"),
    }


def affine_from_state(state: Mapping[str, Any], ndim: int = 3) -> np.ndarray:
    """Voxel -> RAS+ affine of a layer (or a layer's state dict, as writers receive it)."""
    from napari.utils.transforms import Affine

    if ndim != 3:
        raise ValueError(f"GEM-3D works on 3-D layers; this layer has {ndim} dimensions")
    physical = Affine(
        scale=state.get("scale", (1.0,) * 3),
        translate=state.get("translate", (0.0,) * 3),
        rotate=state.get("rotate"),
        shear=state.get("shear"),
        ndim=3,
    ).affine_matrix
    extra = state.get("affine")
    if extra is None:
        extra_m = np.eye(4)
    elif hasattr(extra, "affine_matrix"):
        extra_m = np.asarray(extra.affine_matrix, dtype=float)
    else:
        extra_m = np.asarray(extra, dtype=float)
    return WORLD_TO_RAS @ extra_m @ physical


def layer_affine(layer: Layer) -> np.ndarray:
    """Voxel -> RAS+ affine of a napari layer, from all its transforms."""
    state = {name: getattr(layer, name) for name in ("scale", "translate", "rotate", "shear", "affine")}
    return affine_from_state(state, layer.ndim)


def copy_transforms(source: Layer, *targets: Layer) -> None:
    """Copy scale, translate, rotate, shear, affine and units from ``source`` onto every target.

    The one place derived layers (generated images, new masks, window boxes) get their placement.
    """
    for target in targets:
        if target.ndim != source.ndim:
            raise ValueError(
                f"cannot copy the placement of {source.name!r} ({source.ndim}-D) onto "
                f"{target.name!r} ({target.ndim}-D)"
            )
        for name in TRANSFORM_ATTRS:
            value = getattr(source, name)
            if name == "affine":
                value = value.affine_matrix
            setattr(target, name, np.array(value) if isinstance(value, np.ndarray) else value)


def transforms_of(layer: Layer) -> dict[str, Any]:
    """Keyword arguments that place a new layer exactly like ``layer``."""
    out = {}
    for name in TRANSFORM_ATTRS:
        value = getattr(layer, name)
        out[name] = value.affine_matrix if name == "affine" else value
    return out


# -------------------------------------------------------------------------------- volume <-> layer
def is_generated(layer) -> bool:
    """A GEM-3D result (made by a dock, or a generated file read back), not a scan: its provenance names a
    model. (Files prepared by GEM-3D tools carry provenance too, without a model.)"""
    info = layer.metadata.get(RESULT_KEY) or {}
    return "plan" in info or "model" in (info.get("provenance") or {})


def is_labels_volume(volume: Volume, path: str = "", max_labels: int = 64) -> bool:
    """Integer volumes with few values (or integral float volumes with few values and a mask-like
    file name) are label maps."""
    array = np.asarray(volume.array)
    if array.dtype.kind not in "iubf" or array.size == 0:
        return False
    sample = array.ravel()[:: max(1, array.size // 200_000)]
    if np.unique(sample).size > max_labels:
        return False
    if array.dtype.kind == "f":
        hint = any(word in path.lower() for word in ("mask", "seg", "label", "lesion"))
        if not hint or not np.all(np.isfinite(array)) or np.any(np.mod(array, 1) != 0):
            return False
    return np.unique(array).size <= max_labels


def _labels_dtype(array: np.ndarray) -> np.ndarray:
    """uint8 when the labels fit (fast 3-D painting), else int32."""
    if array.size and array.min() >= 0 and array.max() <= 255:
        return array.astype(np.uint8, copy=False)
    return array.astype(np.int32, copy=False)


def volume_to_layer(volume: Volume, kind: str = "image", name: str = "") -> tuple[np.ndarray, dict[str, Any]]:
    """``(data, layer kwargs)`` for ``viewer.add_image``/``add_labels`` (or a reader's layer tuple).

    The data is the volume reoriented for display (a new array); placement, units and the metadata the
    writer needs come with it. Provenance in the header is exposed as ``metadata["gem3d"]["provenance"]``.
    """
    if kind not in ("image", "labels"):
        raise ValueError(f"kind must be 'image' or 'labels', got {kind!r}")
    data, ras_affine, ornt = reorient(volume)
    if kind == "labels":
        data = _labels_dtype(data)
    kwargs: dict[str, Any] = transform_kwargs(ras_affine)
    facts = {k: v for k, v in volume.header.items() if not k.startswith("_")}
    kwargs["metadata"] = {
        SOURCE_KEY: {
            "header": dict(volume.header),
            "facts": facts,
            "stored_affine": np.array(volume.affine),
            "stored_shape": volume.shape,
            "ornt": ornt,
            "display_affine": ras_affine,
        }
    }
    if "provenance" in volume.header:
        kwargs["metadata"][RESULT_KEY] = {"provenance": volume.header["provenance"], "status": "complete"}
    if name:
        kwargs["name"] = name
    if kind == "image" and data.size:
        finite = data[np.isfinite(data)] if data.dtype.kind == "f" else data
        lo, hi = (float(v) for v in np.percentile(finite, [0.5, 99.5])) if finite.size else (0.0, 1.0)
        kwargs["contrast_limits"] = (lo, hi if hi > lo else lo + 1.0)
    return data, kwargs


def layer_to_volume(layer: Layer, *, copy: bool = True) -> Volume:
    """The layer as a Volume in display voxel order with its true RAS+ affine.

    ``copy=True`` snapshots the data (the user may keep painting while a worker reads it).
    """
    data = np.asarray(layer.data)
    if data.ndim != 3:
        raise ValueError(f"layer {layer.name!r} is {data.ndim}-D; GEM-3D needs a 3-D image or mask")
    if copy:
        data = data.copy()
    header = dict(layer.metadata.get(SOURCE_KEY, {}).get("header", {}))
    header.pop("_nifti_header", None)  # describes the stored order, not this array
    return Volume(data, layer_affine(layer), header)


def to_stored(data: np.ndarray, state: Mapping[str, Any]) -> Volume:
    """Layer data + layer state -> Volume in the source file's voxel order and header (for writing).

    Layers that did not come from a file (or whose shape changed) are written in display order with
    their RAS+ affine.
    """
    data = np.asarray(data)
    affine = affine_from_state(state, data.ndim)
    source = dict(state.get("metadata") or {}).get(SOURCE_KEY)
    if source is None or tuple(np.asarray(data).shape) != tuple(
        int(source["stored_shape"][int(i)]) for i in np.argsort(np.asarray(source["ornt"])[:, 0])
    ):
        return Volume(data, affine, {})
    ornt = np.asarray(source["ornt"])
    inv = _inverse_ornt(ornt)
    stored = np.ascontiguousarray(nio.apply_orientation(data, inv))
    stored_affine = affine @ nio.inv_ornt_aff(inv, data.shape)
    header = dict(source.get("header", {}))
    header.pop("provenance", None)
    return Volume(stored, stored_affine, header)


def model_slice_index(grid, data_index) -> int:
    """Model-grid slice index of a voxel given in the grid's source voxel order."""
    stored_axis, flip = (int(v) for v in grid.inverse_ornt[0])
    k = int(round(float(data_index[stored_axis])))
    return grid.num_slices - 1 - k if flip < 0 else k


def window_index_range(grid, start: int, stop: int) -> tuple[int, tuple[int, int]]:
    """``(axis, (lo, hi))``: model slices ``[start, stop)`` as an index range of the grid's source array."""
    stored_axis, flip = (int(v) for v in grid.inverse_ornt[0])
    if flip < 0:
        return stored_axis, (grid.num_slices - stop, grid.num_slices - start)
    return stored_axis, (start, stop)


__all__ = [
    "RAS_TO_WORLD",
    "WORLD_AXCODES",
    "affine_from_state",
    "copy_transforms",
    "is_labels_volume",
    "layer_affine",
    "layer_to_volume",
    "model_slice_index",
    "reorient",
    "to_stored",
    "transform_kwargs",
    "transforms_of",
    "volume_to_layer",
    "window_index_range",
]
