"""Informed-slice dock: pick at a relative position or the current slice, or generate; preview; session."""

from __future__ import annotations

import numpy as np

from napari_gem3d._napari.session import get_session
from napari_gem3d._napari.widget_informed import CURRENT, GENERATE, PREVIEW_NAME, InformedSliceWidget
from napari_gem3d._napari.widget_sampling import INFORMED_WIDGET, SamplingWidget


def _widget(viewer):
    widget = InformedSliceWidget(viewer)
    viewer.window.add_dock_widget(widget, name="GEM-3D informed slice")
    return widget


def test_pick_at_relative_position_and_current_slice(viewer_case):
    viewer, image_layer, _ = viewer_case
    sampling = SamplingWidget(viewer)
    viewer.window.add_dock_widget(sampling, name="GEM-3D sampling")
    widget = _widget(viewer)
    widget.image.value = image_layer
    widget.position.value = 0.25
    assert "Slice 6 of 26" in widget.which.text()  # int(0.25 * 26): the model slice axis is S (26 slices)
    choice = widget.choose()
    assert choice.informed.source["index"] == 6 and choice.informed.source["volume"] == "image"
    assert get_session(viewer).informed is choice
    preview = viewer.layers[PREVIEW_NAME]
    assert preview.ndim == 2 and preview.data.shape == (32, 32)
    assert preview.metadata["gem3d_informed"]["index"] == 6
    assert sampling.informed.value == INFORMED_WIDGET and abs(sampling.position.value - 6 / 26) < 0.01
    # the current slice: the viewer's slider is the S axis (display axis 0)
    widget.where.value = CURRENT
    viewer.dims.set_point(0, float(image_layer.data_to_world((20, 0, 0))[0]))
    assert "Slice 20 of 26" in widget.which.text()
    choice = widget.choose()
    assert choice.informed.source["index"] == 20
    expected = choice.informed.image
    assert np.array_equal(viewer.layers[PREVIEW_NAME].data, expected)


def test_generate_with_the_slice_model(viewer_case, qtbot):
    viewer, image_layer, _ = viewer_case
    widget = _widget(viewer)
    widget.image.value = image_layer
    widget.source.value = GENERATE
    widget.steps.value = 2
    widget.seed.value = 3
    job = widget.choose()
    qtbot.waitUntil(lambda: job.finished, timeout=60_000)
    choice = get_session(viewer).informed
    assert choice is not None and choice.informed.source["kind"] == "generated"
    assert choice.informed.source["seed"] == 3 and choice.informed.latent is not None
    assert PREVIEW_NAME in viewer.layers and widget.use_button.enabled
