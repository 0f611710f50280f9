"""napari-gem3d: GEM-3D generative enhancement of 3D medical images.

The library (everything outside ``_napari``) imports neither napari nor Qt, and
importing this package does not import torch: heavy modules load on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .volume import Volume

__version__ = "0.1.0"

_DATA = Path(__file__).parent / "data"


def demo_model_path() -> Path:
    """Folder of the bundled demo model (safetensors + JSON config)."""
    return _DATA / "demo_model"


def demo_case() -> tuple[Volume, Volume]:
    """The bundled demo case as ``(image, mask)`` Volumes, read from the package."""
    from .io import read_volume

    folder = _DATA / "demo_case"
    return read_volume(folder / "image.nii.gz"), read_volume(folder / "mask.nii.gz")


__all__ = ["__version__", "demo_case", "demo_model_path"]
