"""Tri-planar montages (axial, coronal, sagittal) of volumes, written as PNG (matplotlib, Agg)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from nibabel.orientations import apply_orientation

from .volume import Volume, model_grid

VIEWS = ("S", "A", "R")  # axial, coronal, sagittal
VIEW_NAMES = {"S": "axial", "A": "coronal", "R": "sagittal"}


def planes(volume: Volume, index: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Middle slice (or ``index[view]``) of each anatomical view, oriented for display."""
    out = {}
    for view in VIEWS:
        grid = model_grid(volume, (1, 1), view)  # the size is unused: only the reorientation matters
        oriented = apply_orientation(np.asarray(volume.array), grid.ornt)
        out[view] = oriented[(index or {}).get(view, oriented.shape[0] // 2)]
    return out


def _aspect(volume: Volume, view: str) -> float:
    grid = model_grid(volume, (1, 1), view)
    sy, sx = np.linalg.norm(grid.oriented_affine[:3, 1:3], axis=0)
    return float(sy / sx)


def save_montage(
    rows: Sequence[tuple[str, Volume]],
    path: str | os.PathLike,
    *,
    kinds: Sequence[str] | None = None,
    title: str = "",
    index: dict[str, int] | None = None,
    labels_max: int | None = None,
) -> Path:
    """One row per volume, three columns (axial, coronal, sagittal); labels use a categorical map.

    All rows must share the first row's grid (same shape); the slice indices are the middle of it
    unless ``index`` gives them. ``labels_max``: the label value the colour map ends at (the model's largest
    label, so a label keeps its colour whichever labels a mask holds); None: each label row's own maximum.
    Written atomically.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .io import atomic_path

    kinds = list(kinds or ["image"] * len(rows))
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)), squeeze=False)
    for r, ((name, vol), kind) in enumerate(zip(rows, kinds, strict=True)):
        pl = planes(vol, index)
        finite = np.asarray(vol.array, dtype=np.float32)
        if kind == "image":
            lo, hi = np.percentile(finite, [0.5, 99.5])
        else:
            lo, hi = 0, max(1, labels_max if labels_max is not None else int(finite.max()))
        for c, view in enumerate(VIEWS):
            ax = axes[r][c]
            cmap = "gray" if kind == "image" else "tab10"
            ax.imshow(pl[view], cmap=cmap, vmin=lo, vmax=hi, aspect=_aspect(vol, view), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(VIEW_NAMES[view])
            if c == 0:
                ax.set_ylabel(name)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path

