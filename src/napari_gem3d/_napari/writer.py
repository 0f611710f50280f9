"""napari writers: Image and Labels layers to NIfTI, in the source file's geometry, atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..io import NIFTI_SUFFIXES


def _target(path: str) -> Path:
    p = Path(path)
    return p if p.name.lower().endswith(NIFTI_SUFFIXES) else p.with_name(p.name + ".nii.gz")


def _provenance(attributes: dict[str, Any]) -> dict | None:
    from .layers import RESULT_KEY

    info = (attributes.get("metadata") or {}).get(RESULT_KEY) or {}
    prov = info.get("provenance")
    if prov is None:
        return None
    extra = {k: info[k] for k in ("status", "stale", "windows_done") if k in info}
    return {**prov, **({"layer": extra} if extra else {})}


def open_sources(viewer=None) -> list[tuple[str, str]]:
    """(layer name, file) for every layer of ``viewer`` (default: napari's current one) read from a file."""
    from .layers import SOURCE_KEY

    if viewer is None:
        try:
            import napari

            viewer = napari.current_viewer()
        except ImportError:  # pragma: no cover - the writer runs inside napari
            viewer = None
    found = []
    for layer in viewer.layers if viewer is not None else []:
        header = (layer.metadata.get(SOURCE_KEY) or {}).get("header") or {}
        for file in (getattr(layer.source, "path", None), header.get("source")):
            if file:
                found.append((f"layer {layer.name!r}", str(file)))
    return found


def _write(path: str, data: Any, attributes: dict[str, Any], kind: str) -> list[str]:
    import numpy as np

    from ..io import write_volume
    from ..outputs import refuse_inputs
    from .layers import to_stored

    volume = to_stored(np.asarray(data), attributes)
    if kind == "labels" and volume.array.dtype.kind == "f":
        raise ValueError("a Labels layer must hold integers")
    target = _target(path)
    # never replace a file the user opened: this layer's own source (write_volume refuses it too) and
    # the file of every other layer in the viewer (a generated image saved over its mask, say)
    refuse_inputs([target], open_sources(), "")
    write_volume(volume, target, provenance=_provenance(attributes))
    return [str(target)]


def write_image(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write one Image layer to ``path`` (.nii or .nii.gz; other names get .nii.gz appended)."""
    return _write(path, data, attributes, "image")


def write_labels(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write one Labels layer to ``path`` (.nii or .nii.gz), keeping an integer dtype."""
    return _write(path, data, attributes, "labels")
