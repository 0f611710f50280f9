"""Yellow boxes around the windows being generated, on top of the result layer."""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from .layers import transforms_of, window_index_range

BOX_NAME = "GEM-3D window"
BOX_KEY = "gem3d_window_box"  # metadata flag of the box layers (found again by a reopened dock)


class WindowBoxes:
    """Yellow bounding boxes around the running windows: the bounding-box overlay of a Vectors layer whose
    one invisible vector runs from a window's first corner to its last.

    Vectors, not Points: a Points layer draws a (possibly empty) text visual, and vispy renders ten font
    glyphs the first time one is drawn (~0.15 s on the GUI thread at the first Run). The box layers are
    made once and reused (hidden between runs): adding and removing layers costs far more GUI time than
    moving a box.
    """

    def __init__(self, viewer):
        self.viewer = viewer
        self.layers: list[Any] = []
        self.grid = None
        self.like: Any = None

    def attach(self, like_layer, grid) -> None:
        self.like, self.grid = weakref.ref(like_layer), grid

    def adopt(self) -> None:
        """Reuse the box layers a previous sampling dock of this viewer left (a reopened dock makes none new)."""
        found = [layer for layer in self.viewer.layers if layer.metadata.get(BOX_KEY)]
        self.layers = found + [layer for layer in self.layers if layer not in found]

    def raise_to_top(self) -> None:
        """Keep the boxes above a newly added result layer."""
        layers = self.viewer.layers
        for layer in [lyr for lyr in self.layers if lyr in layers]:
            layers.move(layers.index(layer), len(layers))

    def show(self, windows: list[tuple[int, int]]) -> None:
        like = self.like() if self.like is not None else None
        if like is None:
            windows = []
        self.layers = [layer for layer in self.layers if layer in self.viewer.layers]
        while len(self.layers) < len(windows):
            self.layers.append(self._new_layer(like, len(self.layers)))
        for layer, (start, stop) in zip(
            self.layers, windows, strict=False
        ):  # more layers than windows: rest hidden
            axis, (lo, hi) = window_index_range(self.grid, start, stop)
            a, b = np.zeros(3), np.asarray(like.data.shape, float) - 1
            a[axis], b[axis] = lo, hi - 1
            if any(
                getattr(layer, name) is not None and not np.allclose(getattr(layer, name), value)
                for name, value in (("scale", like.scale), ("translate", like.translate))
            ):
                for name, value in transforms_of(like).items():
                    setattr(layer, name, value)
            layer.data = np.stack([a, b - a])[None]  # one vector: position, projection
            # toggling the overlay, not the layer: a layer's visibility re-slices and redraws the scene
            if not layer.bounding_box.visible:
                layer.bounding_box.visible = True
        for layer in self.layers[len(windows) :]:
            if layer.bounding_box.visible:
                layer.bounding_box.visible = False

    def reserve(self, count: int, delay_ms: int = 0) -> None:
        """Make box layers (hidden) until there are ``count``, one per turn of the event loop, so that a
        later round of windows only moves boxes: each new layer costs the GUI thread ~0.1 s."""
        from qtpy.QtCore import QTimer

        like = self.like() if self.like is not None else None
        self.layers = [layer for layer in self.layers if layer in self.viewer.layers]
        if like is None or len(self.layers) >= count:
            return
        layer = self._new_layer(like, len(self.layers))
        layer.bounding_box.visible = False
        self.layers.append(layer)
        QTimer.singleShot(delay_ms, lambda: self.reserve(count, delay_ms))

    def _new_layer(self, like, k: int):
        active = self.viewer.layers.selection.active
        layer = self.viewer.add_vectors(
            np.zeros((1, 2, 3)),
            name=BOX_NAME if k == 0 else f"{BOX_NAME} {k + 1}",
            opacity=0.0,
            metadata={BOX_KEY: True},
            **transforms_of(like),
        )
        layer.bounding_box.visible = True
        layer.bounding_box.points = False
        layer.bounding_box.line_color = "yellow"
        layer.bounding_box.line_thickness = 2
        self.viewer.layers.selection.active = active  # keep the user's active layer (e.g. the mask)
        return layer

    def hide(self) -> None:
        self.show([])
