"""Mask editor dock: new mask geometry, lesion tools as single undo steps, staleness of results."""

from __future__ import annotations

import numpy as np

from napari_gem3d._napari.layers import RESULT_KEY, SOURCE_KEY, layer_affine
from napari_gem3d._napari.session import STALE_SUFFIX, get_session
from napari_gem3d._napari.widget_mask_editor import MaskEditorWidget, parse_labels


def _editor(viewer):
    widget = MaskEditorWidget(viewer)
    viewer.window.add_dock_widget(widget, name="GEM-3D mask editor")
    return widget


def _put_cursor(viewer, layer, voxel):
    viewer.cursor.position = tuple(layer.data_to_world(np.asarray(voxel, float)))


def test_new_mask_has_the_image_geometry(viewer_case):
    viewer, image_layer, _ = viewer_case
    widget = _editor(viewer)
    widget.image.value = image_layer
    mask = widget.create_mask()
    assert mask.data.dtype == np.uint8 and mask.data.shape == image_layer.data.shape and not mask.data.any()
    assert np.allclose(layer_affine(mask), layer_affine(image_layer))
    assert mask.metadata[SOURCE_KEY]["stored_shape"] == image_layer.metadata[SOURCE_KEY]["stored_shape"]
    assert widget.mask.value is mask
    widget.brush3d.value = True
    assert mask.n_edit_dimensions == 3
    widget.label.value = 4
    assert mask.selected_label == 4


def test_lesion_tools_are_single_undo_steps_and_mark_results_stale(viewer_case):
    viewer, image_layer, mask_layer = viewer_case
    widget = _editor(viewer)
    widget.mask.value = mask_layer
    session = get_session(viewer)
    result = viewer.add_image(
        np.zeros(mask_layer.data.shape, np.float32),
        name="result",
        metadata={RESULT_KEY: {"status": "complete"}},
    )
    session.add_result(result, mask_layer)
    version = session.mask_version(mask_layer)
    original = mask_layer.data.copy()

    # add an ellipsoid at the cursor: round in mm on the anisotropic grid
    centre = (11, 6, 15)
    _put_cursor(viewer, mask_layer, centre)
    widget.label.value = 6
    widget.radius_z.value = widget.radius_y.value = widget.radius_x.value = 3.0
    changed = widget.add_lesion()
    assert changed > 0 and mask_layer.data[centre] == 6
    assert session.mask_version(mask_layer) == version + 1
    assert result.metadata[RESULT_KEY]["stale"] and result.name.endswith(STALE_SUFFIX)
    after_add = mask_layer.data.copy()
    mask_layer.undo()
    assert np.array_equal(mask_layer.data, original)
    mask_layer.redo()
    assert np.array_equal(mask_layer.data, after_add)

    # move the tumour (labels 4-6) at the cursor by 2 slices: one undo step restores it
    tumour_voxel = tuple(int(v) for v in np.argwhere(np.isin(original, (4, 5, 6)))[0])
    _put_cursor(viewer, mask_layer, tumour_voxel)
    widget.lesion_labels.value = "4-6"
    widget.offset[0].value = 2
    before = mask_layer.data.copy()
    assert widget.move() > 0
    assert not np.array_equal(mask_layer.data, before)
    mask_layer.undo()
    assert np.array_equal(mask_layer.data, before)

    # random augmentation: one undo step too
    widget.aug_min.value, widget.aug_max.value = 2, 3
    assert widget.augment() > 0
    assert "shift" in widget.status.text()
    mask_layer.undo()
    assert np.array_equal(mask_layer.data, before)


def test_bad_input_is_reported(viewer_case, monkeypatch):
    import napari.utils.notifications as notifications

    viewer, _, mask_layer = viewer_case
    shown = []
    monkeypatch.setattr(notifications, "show_error", lambda message: shown.append(message))
    widget = _editor(viewer)
    widget.mask.value = mask_layer
    widget.lesion_labels.value = "9"
    _put_cursor(viewer, mask_layer, (3, 3, 3))
    widget.delete_button.clicked.emit()
    assert shown and "no voxel with label" in shown[-1]
    assert parse_labels("4-6, 8") == (4, 5, 6, 8)


def test_mask_from_image_adds_a_model_ready_layer_in_the_image_geometry(viewer_case, bundle, qtbot):
    import dataclasses

    from napari_gem3d.models import ModelBundle, ModelCard

    viewer, image_layer, mask_layer = viewer_case
    card = ModelCard(modality="MR", contrast="T1", body_region="brain", tissue_labels=(1, 2, 3),
                     lesion_labels=(4, 5, 6), background_labels=(0,))
    carded = ModelBundle(dataclasses.replace(bundle.config, card=card), bundle.vae, bundle.unets, bundle.path,
                         bundle.model_hash)
    get_session(viewer).set_bundle(carded, "carded")
    widget = _editor(viewer)
    widget.image.value = image_layer
    lesion = viewer.add_labels((mask_layer.data >= 4).astype(np.uint8), name="lesion",
                               scale=mask_layer.scale, translate=mask_layer.translate)
    widget.reset_choices()
    widget.lesion_from.value = lesion
    widget.brain.value = "none"  # the synthetic image has no skull
    layers_before = len(viewer.layers)
    job = widget.mask_from_image()
    qtbot.waitUntil(lambda: job.finished, timeout=60_000)
    assert job.state == "done" and len(viewer.layers) == layers_before + 1
    made = viewer.layers[-1]
    assert made.name == "image model mask" and made.data.shape == image_layer.data.shape
    assert np.allclose(layer_affine(made), layer_affine(image_layer))
    assert set(np.unique(made.data)) <= {0, 1, 2, 3, 4, 5, 6}
    assert np.all(made.data[lesion.data > 0] >= 4)  # the user's lesion stays lesion
    assert {2, 3} <= set(np.unique(made.data))
    assert widget.mask.value is made
