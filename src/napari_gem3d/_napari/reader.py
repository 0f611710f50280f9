"""napari reader: NIfTI (.nii, .nii.gz) and NRRD (.nrrd, .nhdr) volumes as Image or Labels layers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..io import READ_SUFFIXES

LayerData = tuple[Any, dict[str, Any], str]


def _readable(path: Any) -> bool:
    return isinstance(path, (str, Path)) and str(path).lower().endswith(READ_SUFFIXES)


def napari_get_reader(path: str | Sequence[str]) -> Callable[[Any], list[LayerData]] | None:
    """Return :func:`read_volumes` if every path is a NIfTI/NRRD file, else None (never raises)."""
    if isinstance(path, (str, Path)):
        paths = [path]
    elif isinstance(path, (list, tuple)):
        paths = list(path)
    else:  # anything else napari (or a caller) hands over is not ours to read
        return None
    if not paths or not all(_readable(p) for p in paths):
        return None
    return read_volumes


def _layer_name(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def read_volumes(path: str | Sequence[str]) -> list[LayerData]:
    """One layer per file: Labels for integer volumes with few values, Image otherwise.

    A Labels layer's values are named (features ``index``/``name``, shown in the status bar) with the label
    scheme of the model loaded in the current viewer, else of the bundled demo model; its data is as read.
    Data are shown in the plugin's world frame (see ``layers.py``); placement comes from the header and the
    header facts, stored affine and orientation go into ``layer.metadata["gem3d_source"]``.
    """
    from ..io import read_volume
    from .label_names import label_features, present_values, viewer_scheme
    from .layers import is_labels_volume, volume_to_layer

    paths = [path] if isinstance(path, (str, Path)) else list(path)
    out: list[LayerData] = []
    for p in paths:
        p = Path(p)
        volume = read_volume(p)
        kind = "labels" if is_labels_volume(volume, p.name) else "image"
        data, kwargs = volume_to_layer(volume, kind, name=_layer_name(p))
        if kind == "labels":
            kwargs["features"] = label_features(viewer_scheme(), present_values(data))
        out.append((data, kwargs, kind))
    return out
