"""Consistency inspector: anatomical views, tri-planar panel, adjacent-slice differences with boundaries, the
reading of the plot in words, the dock's fit at 1500x900 and its theme colours."""

from __future__ import annotations

import numpy as np
import pytest
from dock_helpers import overflow, show_docked, visible_height, without_tooltip

from napari_gem3d._napari.layers import RESULT_KEY, layer_to_volume, transforms_of
from napari_gem3d._napari.widget_inspector import InspectorWidget, planes_at
from napari_gem3d.sampling.variants import adjacent_differences

PLAN = [  # windows 5..12 and 12..19 (overlap 1): boundaries at slices 5, 12, 13 and 20
    {"start": 5, "stop": 13, "direction": "first", "round": 0},
    {"start": 12, "stop": 20, "direction": "up", "round": 1},
]


def _result(viewer, image_layer, step_at: int, name: str = "seamy"):
    """A 'generated' layer: the image with an intensity step from slice ``step_at`` on along S."""
    data = image_layer.data.copy()
    data[step_at:] += 500.0  # a jump between slices step_at-1 and step_at along S (display axis 0)
    meta = {RESULT_KEY: {"plan": PLAN, "slice_axis": "S", "image_layer": image_layer.name}}
    return viewer.add_image(data, name=name, metadata=meta, **transforms_of(image_layer))


def test_views_planes_and_difference_plot(viewer_case):
    viewer, image_layer, mask_layer = viewer_case
    result = _result(viewer, image_layer, 13)  # a seam at the boundary 13 (window 2 emits from slice 13)
    data = result.data
    widget = InspectorWidget(viewer)
    viewer.window.add_dock_widget(widget, name="GEM-3D inspector")
    widget.volume.value = result
    assert widget.source.value is image_layer  # found from the result's metadata

    widget.set_view("Coronal")
    assert tuple(viewer.dims.order) == (1, 0, 2) and viewer.scene.camera.orientation2d[0] == "up"
    widget.set_view("Axial")
    assert tuple(viewer.dims.order) == (0, 1, 2)

    widget.draw_planes()
    assert len(widget.planes_figure.axes) == 3
    planes = planes_at(data, (3, 4, 5))
    assert np.array_equal(planes["Axial"], data[3]) and np.array_equal(planes["Coronal"], data[::-1, 4, :])

    curves = widget.plot()
    ours = curves["seamy"]
    assert np.allclose(ours, adjacent_differences(layer_to_volume(result, copy=False), "S"))
    assert int(np.argmax(ours)) == 12  # the seam
    assert "image (source)" in curves and curves["image (source)"].max() < ours.max()
    assert widget.boundaries == [4.5, 11.5, 12.5, 19.5]
    lines = [line for line in widget.figure.axes[0].get_lines() if line.get_linestyle() == "--"]
    assert len(lines) == 4
    # the reading says what the plot shows: a seam at a boundary, which the source does not have there
    reading = widget.reading
    assert reading.seams and reading.at_boundary and reading.largest == 12
    assert reading.change_ratio == pytest.approx(ours.mean() / curves["image (source)"].mean())
    text = widget.reading_label.text()
    assert text == reading.text and "seams at window boundaries" in text.lower() and "slices 12–13" in text
    assert f"{reading.change_ratio:.1f}× the source's" in text
    # the stripe index: the seam is a slice-to-slice change the source does not have
    assert widget.stripes.startswith("Stripe index") and "'image'" in widget.stripes
    value = float(widget.stripes.split()[2])
    assert value > 1.0 and widget.stripes in widget.status.text()
    assert "across slices" in widget.stripes and "in plane" in widget.stripes  # the two parts, said
    widget.source.value = None
    widget.plot()
    assert widget.stripes.startswith("Slice-axis / in-plane difference ratio")
    assert "source" not in widget.reading_label.text() and "seams at window boundaries" in widget.reading.text.lower()


def test_reading_places_a_jump_inside_a_window(viewer_case):
    viewer, image_layer, _ = viewer_case
    result = _result(viewer, image_layer, 9, name="jumpy")  # slice 9 lies inside the window 5..12
    widget = InspectorWidget(viewer)
    viewer.window.add_dock_widget(widget, name="GEM-3D inspector")
    widget.volume.value = result
    widget.plot()
    reading = widget.reading
    assert reading.jump and reading.largest == 8 and not reading.at_boundary and not reading.seams
    text = widget.reading_label.text()
    assert "no seam at window boundaries" in text.lower() and "slices 8–9" in text
    assert "inside a window (not at a boundary)" in text
    markers = [line for line in widget.figure.axes[0].get_lines() if line.get_label() == "largest jump"]
    assert len(markers) == 1 and markers[0].get_xdata()[0] == pytest.approx(8.5)


def test_dock_fits_has_tooltips_and_shows_the_plot_in_a_short_dock(viewer_case, qtbot):
    from qtpy.QtCore import QPoint, Qt
    from qtpy.QtWidgets import QApplication, QLabel

    viewer, image_layer, _ = viewer_case
    widget = InspectorWidget(viewer)
    long_name = "GEM-3D gem3d seed 1234 of a brain MR with a long descriptive layer name, as users rename them"
    widget.volume.value = _result(viewer, image_layer, 13, name=long_name)
    dock = show_docked(viewer, widget, "GEM-3D inspector", qtbot)
    widget.plot()
    QApplication.processEvents()
    assert overflow(widget) == []
    assert without_tooltip(widget) == []
    legend = widget.figure.axes[0].get_legend()  # one row above the axes: it covers no curve
    assert [t.get_text() for t in legend.get_texts()][:2] == ["volume", "source"]
    widget.figure.canvas.draw()
    legend_box = legend.get_window_extent()
    assert legend_box.y0 >= widget.figure.axes[0].get_window_extent().y1 - 1
    assert legend_box.x1 <= widget.figure.bbox.x1 + 1
    # another plugin's dock below squeezes the inspector to about 400 px: the plot still shows unscrolled
    other = viewer.window.add_dock_widget(QLabel("another plugin"), name="other", area="right")
    viewer.window._qt_window.resizeDocks([dock, other], [430, 400], Qt.Orientation.Vertical)
    for _ in range(5):
        QApplication.processEvents()
    height = visible_height(widget)
    assert 300 < height <= 460
    assert widget.scroll.verticalScrollBar().value() == 0
    bottom = widget.canvas.mapTo(widget.inner, QPoint(0, widget.canvas.height())).y()
    assert widget.canvas.height() >= 200 and bottom <= height
    assert overflow(widget) == []


def test_figures_follow_the_napari_theme(viewer_case):
    from matplotlib.colors import to_hex
    from napari.utils.theme import get_theme

    viewer, image_layer, _ = viewer_case
    viewer.theme = "dark"
    widget = InspectorWidget(viewer)
    viewer.window.add_dock_widget(widget, name="GEM-3D inspector")
    widget.volume.value = _result(viewer, image_layer, 13)
    widget.plot()

    def painted(figure):
        ax = figure.axes[0]
        return (
            to_hex(figure.get_facecolor()),
            to_hex(ax.get_facecolor()),
            to_hex(ax.title.get_color() if figure is widget.planes_figure else ax.xaxis.label.get_color()),
        )

    for name in ("dark", "light"):
        viewer.theme = name
        theme = get_theme(name)
        expected = (theme.background.as_hex(), theme.background.as_hex(), theme.text.as_hex())
        assert painted(widget.figure) == expected
        assert painted(widget.planes_figure) == expected
        legend = widget.figure.axes[0].get_legend()
        assert {to_hex(t.get_color()) for t in legend.get_texts()} == {theme.text.as_hex()}
    assert get_theme("dark").background.as_hex() != get_theme("light").background.as_hex()
    widget.close()
    viewer.theme = "dark"  # a closed dock no longer listens
    assert to_hex(widget.figure.axes[0].get_facecolor()) == get_theme("light").background.as_hex()


def test_the_plot_keeps_the_width_of_a_narrow_dock(viewer_case, qtbot):
    """Plotted as soon as the dock opens beside the width other docks left (~320 px), the axes take most of
    the plot's width: a legend above them once made the tight layout squeeze them to a third."""
    from qtpy.QtCore import Qt

    viewer, image_layer, _ = viewer_case
    result = _result(viewer, image_layer, 13)
    window = viewer.window._qt_window
    window.resize(1500, 900)
    first = InspectorWidget(viewer)
    dock = viewer.window.add_dock_widget(first, name="other", area="right")
    window.resizeDocks([dock], [320], Qt.Orientation.Horizontal)
    qtbot.wait(100)
    viewer.window.remove_dock_widget(dock)
    widget = InspectorWidget(viewer)
    viewer.window.add_dock_widget(widget, name="GEM-3D inspector", area="right")
    widget.volume.value = result
    widget.plot()  # before the dock is laid out
    qtbot.wait(300)
    widget.canvas.draw()
    axes = widget.figure.axes[0].get_window_extent()
    assert axes.width >= 0.6 * widget.canvas.width(), (axes.width, widget.canvas.width())
