"""Consistency inspector dock: axial / coronal / sagittal views of a volume and a plot of adjacent-slice
differences (generated against source) with the sampler's window boundaries marked.

- "Axial / Coronal / Sagittal" set the main canvas to that view (dims order + vertical orientation).
- A tri-planar panel shows all three planes through the viewer's current point (crosshairs), updated
  (throttled) as the point moves.
- The plot (at the top, so it shows in a short dock) is the mean absolute difference between neighbouring
  slices along the model's slice axis (``studies.adjacent_differences``), window boundaries dashed (from
  the result's plan in ``layer.metadata["gem3d"]``); one line under it reads the plot in words
  (``metrics.consistency.read_profile``: seams at the boundaries or not, where the largest jump is, change
  against the source's).
- Figures follow napari's theme (``viewer.theme``) and repaint when it changes.
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import ComboBox, Container, PushButton
from superqt.utils import qthrottled

from ..metrics.consistency import JUMP_FACTOR, SEAM_EXCESS
from ._qt_helpers import DockWidget, layer_choices, narrow, note
from .layers import RESULT_KEY, layer_affine, layer_to_volume
from .mpl_theme import CURVES, style_figure, theme_colours

# world axes of the plugin's frame: 0 = S (slider by default), 1 = P, 2 = L
VIEWS = {  # name: (dims order, vertical orientation of the 2-D camera)
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


LEGEND_BAND = 0.86  # the plot's axes take the figure below this height; the legend the band above


class InspectorWidget(DockWidget):
    def __init__(self, viewer: napari.viewer.Viewer):  # noqa: F821 - string annotation for napari
        super().__init__(viewer, "GEM-3D consistency inspector")
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure
        from qtpy.QtWidgets import QLabel

        import napari

        images = layer_choices(viewer, napari.layers.Image)
        self.volume = ComboBox(
            name="volume",
            label="volume",
            choices=images,
            tooltip="the 3-D image to inspect: a GEM-3D result (its window plan gives the boundaries) or any volume",
        )
        self.source = ComboBox(
            name="source",
            label="source",
            nullable=True,
            choices=images,
            tooltip="the real image to compare with (same geometry)",
        )
        self.form = Container(widgets=[self.volume, self.source])
        narrow(self.form)  # long layer names elide instead of widening the dock
        self.track(self.form)
        self.body.addWidget(self.form.native)

        self.plot_button = PushButton(text="Plot adjacent-slice differences")
        self.plot_button.tooltip = (
            "Plot the mean difference between neighbouring slices along the model's slice axis, for the volume "
            "and the source, with the window boundaries dashed; the line under the plot reads it"
        )
        self.plot_button.clicked.connect(lambda *_: self._guard(self.plot))
        self.body.addWidget(Container(widgets=[self.plot_button], labels=False).native)  # margins as the rows
        self.figure = Figure(figsize=(4.5, 2.4), layout="tight")
        self.figure.get_layout_engine().set(rect=(0, 0, 1, LEGEND_BAND))
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(210)
        self.body.addWidget(self.canvas, 1)
        self.reading_label = QLabel("")
        self.reading_label.setWordWrap(True)
        self.reading_label.setToolTip(
            f"The plot in words. A seam shows when the change between slices at window boundaries exceeds the "
            f"change within windows by more than {SEAM_EXCESS:.0%} (and, with a source, the source's own ratio "
            f"there by as much); a jump is a change above {JUMP_FACTOR:g}× the median change."
        )
        self.body.addWidget(self.reading_label)
        self.status = note("")
        self.body.addWidget(self.status)

        buttons = [
            PushButton(text=name, tooltip=f"Show the {name.lower()} plane on the main canvas (2-D)") for name in VIEWS
        ]
        for button in buttons:
            button.clicked.connect(lambda *_, name=button.text: self.set_view(name))
        self.body.addWidget(Container(widgets=buttons, layout="horizontal", labels=False).native)
        self.planes_figure = Figure(figsize=(4.5, 1.9), tight_layout=True)
        self.planes_canvas = FigureCanvasQTAgg(self.planes_figure)
        self.planes_canvas.setMinimumHeight(170)
        self.planes_canvas.setToolTip("axial, coronal and sagittal planes through the viewer's current point")
        self.body.addWidget(self.planes_canvas)

        self.curves: dict[str, np.ndarray] = {}
        self.boundaries: list[float] = []
        self.reading = None
        self.axis = "S"
        self.stripes = ""
        self.colours = theme_colours(viewer)
        self._update_planes = qthrottled(self.draw_planes, timeout=200)
        viewer.dims.events.point.connect(self._update_planes)
        viewer.events.theme.connect(self._theme_changed)
        self.volume.changed.connect(self._volume_chosen)
        self.reset_choices()
        self._draw_plot()
        self._volume_chosen(self.volume.value)

    def shutdown(self) -> None:
        if not self._closed:
            self.viewer.dims.events.point.disconnect(self._update_planes)
            self.viewer.events.theme.disconnect(self._theme_changed)
        super().shutdown()

    def _guard(self, fn):
        from napari.utils.notifications import show_error

        try:
            return fn()
        except Exception as exc:
            show_error(f"GEM-3D inspector: {exc}")
            self.status.setText(str(exc))
            return None

    def _theme_changed(self, event=None) -> None:
        if self._closed:
            return
        self.colours = theme_colours(self.viewer)
        self._draw_plot()
        self.draw_planes()

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
            ax.set_title(name)
            ax.set_xticks([])
            ax.set_yticks([])
        style_figure(self.planes_figure, self.colours)
        self.planes_canvas.draw_idle()

    # --------------------------------------------------------------------------------------- plot
    def plot(self) -> dict[str, np.ndarray]:
        """Adjacent-slice differences of the volume (and the source) with window boundaries marked, and
        the reading of them (:func:`~napari_gem3d.metrics.consistency.read_profile`)."""
        from ..metrics.consistency import plan_edges, read_profile
        from ..sampling.variants import adjacent_differences

        layer = self.volume.value
        if layer is None:
            raise ValueError("choose a volume to inspect")
        info = layer.metadata.get(RESULT_KEY, {})
        self.axis = axis = info.get("slice_axis", "S")
        ours = adjacent_differences(layer_to_volume(layer, copy=False), axis)
        curves = {f"{layer.name}": ours}
        reference = None
        if self.source.value is not None and self.source.value is not layer:
            src = self.source.value
            reference = curves[f"{src.name} (source)"] = adjacent_differences(layer_to_volume(src, copy=False), axis)
        edges = plan_edges(info.get("plan") or [], len(ours) + 1)
        same_slices = reference is not None and reference.shape == ours.shape  # else: no change ratio
        self.reading = read_profile(ours, edges, reference if same_slices else None)
        self.boundaries = [b - 0.5 for b in edges]
        self.curves = curves
        self._draw_plot()
        self.reading_label.setText(self.reading.text)
        self.stripes = self._stripe_reading(layer, axis)
        self.status.setText(self.stripes)
        return curves

    def _draw_plot(self) -> None:
        """(Re)draw the stored curves, boundaries and largest jump in the theme's colours."""
        colours = self.colours
        self.figure.clear()
        ax = self.figure.add_subplot(1, 1, 1)
        if not self.curves:
            ax.text(
                0.5,
                0.5,
                "Press 'Plot adjacent-slice differences'",
                ha="center",
                va="center",
                transform=ax.transAxes,
                color=colours["text"],
                fontsize=8,
            )
            ax.set_xticks([])
            ax.set_yticks([])
        # the combo boxes above name the layers: short labels keep the legend to one row above the axes
        for values, label, colour in zip(self.curves.values(), ("volume", "source"), CURVES, strict=False):
            ax.plot(np.arange(len(values)) + 0.5, values, label=label, lw=1.2, color=colour)
        for k, b in enumerate(self.boundaries):
            ax.axvline(
                b, color=colours["text"], alpha=0.45, lw=0.8, ls="--", label="window boundary" if k == 0 else None
            )
        if self.reading is not None and self.reading.jump:
            k = self.reading.largest
            ax.plot(
                [k + 0.5],
                [next(iter(self.curves.values()))[k]],
                ls="none",
                marker="o",
                ms=9,
                mfc="none",
                mec=colours["warning"],
                mew=1.5,
                label="largest jump",
            )
        if self.curves:
            ax.set_xlabel(f"slice along {self.axis} (model frame)")
            ax.set_ylabel("mean |slice z+1 − slice z|")
            legend = ax.legend(
                loc="lower left",
                bbox_to_anchor=(0, 1.01, 1, 0.1),
                ncol=2,
                mode="expand",
                fontsize=7,
                frameon=False,
                borderaxespad=0,
                handlelength=1.5,
                columnspacing=0.8,
            )
            # the tight layout must not shrink the axes to the legend's width (a narrow dock squeezed the
            # plot to a third of its width): the legend sits in the band the layout leaves on top
            legend.set_in_layout(False)
        style_figure(self.figure, colours)
        self.canvas.draw_idle()

    def _stripe_reading(self, layer, axis: str) -> str:
        """One line on slice-to-slice stripes: the stripe index against the source, or the raw ratio."""
        from ..metrics.consistency import axis_differences, axis_ratios

        volume = layer_to_volume(layer, copy=False)
        src = self.source.value
        if src is not None and src is not layer and tuple(src.data.shape) == tuple(layer.data.shape):
            across, within = axis_ratios(volume, layer_to_volume(src, copy=False), axis)
            value = across / within
            cause = ("mostly in-plane blur" if within < 0.8 and across <= 1.0
                     else "slice-to-slice stripes" if value > 1.2 else "as the source")
            return (
                f"Stripe index {value:.2f} against {src.name!r} (1: slices change as in the source; above 1: "
                f"slice-to-slice stripes or in-plane blur): across slices {across:.2f}, in plane {within:.2f} of "
                f"the source's change: {cause}."
            )
        d = axis_differences(volume, axis)
        return (
            f"Slice-axis / in-plane difference ratio {d[0] / (0.5 * (d[1] + d[2])):.2f} (no source to compare "
            "with: choose one for the stripe index)."
        )
