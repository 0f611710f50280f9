"""How a generated layer looks while it fills and when it is done, and what it is called.

While a run fills it, a result must not hide the scan beneath: its unfilled voxels hold a value below the
contrast window that the "filling" colour map draws fully transparent, so the layers underneath (the
scan, the mask) show until each window arrives; filled voxels are opaque grey. When the run ends the layer
gets plain grey over the intensity window.
"""

from __future__ import annotations

import itertools

LEVELS = 256  # grey levels of the filling colour map; level 0 is the transparent "not yet filled"
_RUNS = itertools.count(1)


def filling_colormap():
    """Grey whose lowest 1/LEVELS is transparent: three control points (a long colour map becomes a long
    shader that takes napari's renderer a noticeable time to build)."""
    from napari.utils.colormaps import Colormap

    colors = [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]]
    return Colormap(colors=colors, controls=[0.0, 1.0 / LEVELS, 1.0], name="gem3d filling", interpolation="linear")


def filling_display(lo: float, hi: float) -> tuple[float, dict]:
    """``(unfilled value, layer attributes)`` for a result filling over the intensity window [lo, hi]:
    the unfilled value maps to the transparent level, ``lo`` to opaque black."""
    step = (float(hi) - float(lo)) / (LEVELS - 1)
    floor = float(lo) - step
    return floor, {"colormap": filling_colormap(), "contrast_limits": (floor, float(hi))}


def fill_display(layer, lo: float, hi: float) -> float:
    """Set ``layer`` to the filling display over [lo, hi]; returns the unfilled value."""
    floor, attrs = filling_display(lo, hi)
    layer.colormap = attrs["colormap"]
    layer.contrast_limits = attrs["contrast_limits"]
    return floor


def done_display(layer, lo: float, hi: float) -> None:
    """A finished result: plain grey over the intensity window."""
    layer.colormap = "gray"
    layer.contrast_limits = (float(lo), float(hi))


def result_name(mode: str, seed: int, what: str = "") -> str:
    """A short, distinct layer name: ``GEM-3D #3 seed 0`` (``#`` counts the runs of this session)."""
    label = {"gem3d": "GEM-3D", "baseline": "Mask-only"}.get(mode, mode)
    extra = f" {what}" if what else ""
    return f"{label} #{next(_RUNS)} seed {seed}{extra}"
