"""Informed-slice dock: pick by slice number or the current slice, or generate; thumbnail; session; the sampling
dock starts at the very slice picked."""

from __future__ import annotations

import numpy as np

from napari_gem3d._napari.session import get_session
from napari_gem3d._napari.widget_informed import CURRENT, GENERATE, InformedSliceWidget
from napari_gem3d._napari.widget_sampling import INFORMED_WIDGET, SamplingWidget


def _widget(viewer):
    widget = InformedSliceWidget(viewer)
    viewer.window.add_dock_widget(widget, name="GEM-3D informed slice")
    return widget


def _choose(qtbot, widget):
    job = widget.choose()
    assert job is not None
    qtbot.waitUntil(lambda: job.finished, timeout=60_000)
    return get_session(widget.viewer).informed


def test_pick_by_number_and_current_slice(viewer_case, qtbot):
    viewer, image_layer, _ = viewer_case
    sampling = SamplingWidget(viewer)
    viewer.window.add_dock_widget(sampling, name="GEM-3D sampling")
    widget = _widget(viewer)
    widget.image.value = image_layer
    assert widget.index.max == 25  # the model slice axis is S: 26 slices
    widget.index.value = 6
    assert "Slice 6 of 26" in widget.which.text()
    choice = _choose(qtbot, widget)
    assert choice.index == 6 and choice.num_slices == 26
    assert choice.informed.source["index"] == 6 and choice.informed.source["volume"] == "image"
    expected = np.clip((choice.informed.image + 1) * 127.5, 0, 255).astype(np.uint8)
    assert np.array_equal(widget.preview_image, expected) and not widget.thumbnail.pixmap().isNull()
    assert "informed slice (preview)" not in [layer.name for layer in viewer.layers]  # no 2-D layer
    assert viewer.dims.ndim == 3
    assert sampling.informed.value == INFORMED_WIDGET and sampling.start.value == 6
    # the current slice: the viewer's slider is the S axis (display axis 0)
    widget.where.value = CURRENT
    viewer.dims.set_point(0, float(image_layer.data_to_world((20, 0, 0))[0]))
    assert "Slice 20 of 26" in widget.which.text()
    choice = _choose(qtbot, widget)
    assert choice.informed.source["index"] == 20 and sampling.start.value == 20


def test_every_picked_slice_is_the_start_slice_exactly(viewer_case, qtbot):
    """No float round trip: slice k picked before or after the sampling dock opens is the start slice k, for
    every k (the old p = round(k/N, 2) -> int(p*N) lost slices: 9 of 23 came back as 8)."""
    viewer, image_layer, _ = viewer_case
    widget = _widget(viewer)
    widget.image.value = image_layer
    widget.index.value = 9
    _choose(qtbot, widget)
    sampling = SamplingWidget(viewer)  # opened after the choice
    viewer.window.add_dock_widget(sampling, name="GEM-3D sampling")
    assert sampling.informed.value == INFORMED_WIDGET and sampling.start.value == 9
    session = get_session(viewer)
    assert session.informed.start_for(26) == (9, True)
    for k in range(26):
        widget.index.value = k
        _choose(qtbot, widget)
        assert sampling.start.value == k
    # a mask with another slice count starts at the same relative height, and says so
    assert session.informed.start_for(52) == (50, False)


def test_generate_with_the_slice_model(viewer_case, qtbot):
    viewer, image_layer, _ = viewer_case
    widget = _widget(viewer)
    widget.image.value = image_layer
    widget.source.value = GENERATE
    assert widget.advanced_section.isVisibleTo(widget) and not widget.index.visible
    widget.steps.value = 2
    widget.seed.value = 3
    choice = _choose(qtbot, widget)
    assert choice is not None and choice.informed.source["kind"] == "generated"
    assert choice.informed.source["seed"] == 3 and choice.informed.latent is not None
    assert choice.index is None and widget.use_button.enabled
    assert widget.preview_image.shape == np.shape(choice.informed.image)
