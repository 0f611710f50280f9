"""Consistency inspector: anatomical views, tri-planar panel, adjacent-slice differences with boundaries."""

from __future__ import annotations

import numpy as np

from napari_gem3d._napari.layers import RESULT_KEY, layer_to_volume, transforms_of
from napari_gem3d._napari.widget_inspector import InspectorWidget, planes_at
from napari_gem3d.sampling.variants import adjacent_differences


def test_views_planes_and_difference_plot(viewer_case):
    viewer, image_layer, mask_layer = viewer_case
    data = image_layer.data.copy()
    data[13:] += 500.0  # a seam between slices 12 and 13 along S (display axis 0)
    plan = [
        {"start": 5, "stop": 13, "direction": "first", "round": 0},
        {"start": 12, "stop": 20, "direction": "up", "round": 1},
    ]
    result = viewer.add_image(
        data,
        name="seamy",
        metadata={RESULT_KEY: {"plan": plan, "slice_axis": "S", "image_layer": "image"}},
        **transforms_of(image_layer),
    )
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
    # one reading of the plot: the seam is a slice-to-slice change the source does not have
    assert widget.stripes.startswith("Stripe index") and "'image'" in widget.stripes
    value = float(widget.stripes.split()[2])
    assert value > 1.0 and widget.stripes in widget.status.text()
    widget.source.value = None
    widget.plot()
    assert widget.stripes.startswith("Slice-axis / in-plane difference ratio")
