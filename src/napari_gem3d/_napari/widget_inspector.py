"""Consistency inspector dock: axial / coronal / sagittal views of a volume and a plot of adjacent-slice
differences (generated against source) with the sampler's window boundaries marked.

- "Axial / Coronal / Sagittal" set the main canvas to that view (dims order + vertical orientation).
- A tri-planar panel shows all three planes through the viewer's current point (crosshairs), updated
  (throttled) as the point moves.
- The plot shows the mean absolute difference between neighbouring slices along the model's slice axis
  (``studies.adjacent_differences``): a seam between generated windows shows up as a spike at a window
  boundary (taken from the result's plan in ``layer.metadata["gem3d"]``).
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import ComboBox, Container, PushButton
from superqt.utils import qthrottled

from ._qt_helpers import DockWidget, layer_choices, note
from .layers import RESULT_KEY, layer_affine, layer_to_volume

# world axes of the plugin's frame: 0 = S (slider by default), 1 = P, 2 = L
VIEWS = {
    "Axial": ((0, 1, 2), "down"),
    "Coronal": ((1, 0, 2), "up"),
    "Sagittal": ((2, 0, 1), "up"),
}


def planes_at(data: np.ndarray, point) -> dict[str, np.ndarray]:
    """Axial, coronal and sagittal planes of an (S, P, L)-ordered array through ``point`` (voxels),
    oriented for display (superior up in coronal and sagittal)."""
    z, y, x = (int(np.clip(round(float(p)), 0, n - 1)) for p, n in zip(point, data.shape, strict=True))
    return {
        "Axial": data[z],
        "Coronal": np.flipud(data[:, y, :]),
        "Sagittal": np.flipud(data[:, :, x]),
    }


class InspectorWidget(DockWidget):
    def __init__(self, viewer: napari.viewer.Viewer):  # noqa: F821 - string annotation for napari
        super().__init__(viewer, "GEM-3D consistency inspector")
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        import napari

        self.volume = ComboBox(
            name="volume", label="volume", choices=layer_choices(viewer, napari.layers.Image)
        )
        self.source = ComboBox(
            name="source",
            label="source",
            nullable=True,
            choices=layer_choices(viewer, napari.layers.Image),
            tooltip="the real image to compare with (same geometry)",
        )
        self.form = Container(widgets=[self.volume, self.source])
        self.track(self.form)
        self.body.addWidget(self.form.native)
        buttons = [PushButton(text=name) for name in VIEWS]
        for button in buttons:
            button.clicked.connect(lambda *_, name=button.text: self.set_view(name))
        self.plot_button = PushButton(text="Plot adjacent-slice differences")
        self.plot_button.clicked.connect(lambda *_: self._guard(self.plot))
        row = Container(widgets=buttons, layout="horizontal", labels=False)
        self.body.addWidget(row.native)

        self.planes_figure = Figure(figsize=(4.5, 2.2), tight_layout=True)
        self.planes_canvas = FigureCanvasQTAgg(self.planes_figure)
        self.planes_canvas.setMinimumHeight(200)
        self.body.addWidget(self.planes_canvas)
        self.body.addWidget(self.plot_button.native)
        self.figure = Figure(figsize=(4.5, 2.6), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(220)
        self.body.addWidget(self.canvas)
        self.status = note("")
        self.body.addWidget(self.status)
        self.body.addStretch(1)
        self.curves: dict[str, np.ndarray] = {}
        self.boundaries: list[float] = []
        self._update_planes = qthrottled(self.draw_planes, timeout=200)
        viewer.dims.events.point.connect(self._update_planes)
        self.volume.changed.connect(self._volume_chosen)
        self.reset_choices()
        self._volume_chosen(self.volume.value)

    def shutdown(self) -> None:
        if not self._closed:
            self.viewer.dims.events.point.disconnect(self._update_planes)
        super().shutdown()

    def _guard(self, fn):
        from napari.utils.notifications import show_error

        try:
            return fn()
        except Exception as exc:
            show_error(f"GEM-3D inspector: {exc}")
            self.status.setText(str(exc))
            return None

    def _volume_chosen(self, layer) -> None:
        if layer is None:
            return
        info = layer.metadata.get(RESULT_KEY, {})
        source_name = info.get("image_layer")
        if source_name and source_name in self.viewer.layers and self.viewer.layers[source_name].ndim == 3:
            self.source.value = self.viewer.layers[source_name]
        self.draw_planes()

    # -------------------------------------------------------------------------------------- views
    def set_view(self, name: str) -> None:
        """Show the chosen anatomical plane on the main canvas (2-D), superior up for coronal/sagittal."""
        order, vertical = VIEWS[name]
        self.viewer.dims.ndisplay = 2
        self.viewer.dims.order = order
        self.viewer.scene.camera.orientation2d = (vertical, "right")
        self.viewer.reset_view()

    def draw_planes(self, *_) -> None:
        layer = self.volume.value
        if self._closed or layer is None:
            return
        data = np.asarray(layer.data)
        point = layer.world_to_data(self.viewer.dims.point[-3:])
        spacing = np.linalg.norm(layer_affine(layer)[:3, :3], axis=0)
        lo, hi = layer.contrast_limits
        self.planes_figure.clear()
        aspects = {
            "Axial": spacing[1] / spacing[2],
            "Coronal": spacing[0] / spacing[2],
            "Sagittal": spacing[0] / spacing[1],
        }
        for k, (name, plane) in enumerate(planes_at(data, point).items()):
            ax = self.planes_figure.add_subplot(1, 3, k + 1)
            ax.imshow(plane, cmap="gray", vmin=lo, vmax=hi, aspect=aspects[name], interpolation="nearest")
            ax.set_title(name, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        self.planes_canvas.draw_idle()

    # --------------------------------------------------------------------------------------- plot
    def plot(self) -> dict[str, np.ndarray]:
        """Adjacent-slice differences of the volume (and the source) with window boundaries marked."""
        from ..sampling.variants import adjacent_differences

        layer = self.volume.value
        if layer is None:
            raise ValueError("choose a volume to inspect")
        info = layer.metadata.get(RESULT_KEY, {})
        axis = info.get("slice_axis", "S")
        curves = {f"{layer.name}": adjacent_differences(layer_to_volume(layer, copy=False), axis)}
        if self.source.value is not None and self.source.value is not layer:
            src = self.source.value
            curves[f"{src.name} (source)"] = adjacent_differences(layer_to_volume(src, copy=False), axis)
        plan = info.get("plan") or []
        starts = sorted({int(w["start"]) for w in plan} | {int(w["stop"]) for w in plan})
        n = len(next(iter(curves.values()))) + 1
        self.boundaries = [b - 0.5 for b in starts if 0 < b < n]
        self.curves = curves
        self.figure.clear()
        ax = self.figure.add_subplot(1, 1, 1)
        for name, values in curves.items():
            ax.plot(np.arange(len(values)) + 0.5, values, label=name, lw=1.2)
        for k, b in enumerate(self.boundaries):
            ax.axvline(b, color="orange", lw=0.8, ls="--", label="window boundary" if k == 0 else None)
        ax.set_xlabel(f"slice along {axis} (model frame)")
        ax.set_ylabel("mean |slice z+1 - slice z|")
        ax.legend(fontsize=7, loc="best", framealpha=0.6)
        self.canvas.draw_idle()
        self.stripes = self._stripe_reading(layer, axis)
        if not plan:
            self.status.setText(
                "This volume has no sampling plan in its metadata: no window boundaries to mark. " + self.stripes
            )
        else:
            self.status.setText(f"{len(plan)} windows; seams would show as spikes at the dashed lines. "
                                + self.stripes)
        return curves

    def _stripe_reading(self, layer, axis: str) -> str:
        """One line on slice-to-slice stripes: the stripe index against the source, or the raw ratio."""
        from ..metrics.consistency import axis_differences, stripe_index

        volume = layer_to_volume(layer, copy=False)
        src = self.source.value
        if src is not None and src is not layer and tuple(src.data.shape) == tuple(layer.data.shape):
            value = stripe_index(volume, layer_to_volume(src, copy=False), axis)
            return (f"Stripe index {value:.2f} against {src.name!r} (1: slices change as in the source; above 1: "
                    "slice-to-slice stripes).")
        d = axis_differences(volume, axis)
        return (f"Slice-axis / in-plane difference ratio {d[0] / (0.5 * (d[1] + d[2])):.2f} (no source to compare "
                "with: choose one for the stripe index).")
