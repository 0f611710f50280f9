"""Mask editor dock: new mask geometry, lesion tools as single undo steps in mm, staleness of results, label
names (pickers, legend, status bar), fit at 1500x900, tooltips, mask from image with the model loading first."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from dock_helpers import overflow, show_docked, without_tooltip

from napari_gem3d._napari.layers import RESULT_KEY, SOURCE_KEY, layer_affine
from napari_gem3d._napari.session import STALE_SUFFIX, get_session
from napari_gem3d._napari.widget_mask_editor import MaskEditorWidget

NAME = "GEM-3D mask editor"


def _editor(viewer):
    widget = MaskEditorWidget(viewer)
    viewer.window.add_dock_widget(widget, name=NAME)
    return widget


def _put_cursor(viewer, layer, voxel):
    viewer.cursor.position = tuple(layer.data_to_world(np.asarray(voxel, float)))


def _carded(bundle):
    """The tiny bundle with a brain model card (tissue 1-3, lesion parts 4-6)."""
    from napari_gem3d.models import ModelBundle, ModelCard

    card = ModelCard(modality="MR", contrast="T1", body_region="brain", tissue_labels=(1, 2, 3),
                     lesion_labels=(4, 5, 6), background_labels=(0,))
    return ModelBundle(dataclasses.replace(bundle.config, card=card), bundle.vae, bundle.unets, bundle.path,
                       bundle.model_hash)


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
    mask.selected_label = 5  # napari's own label control: the dock follows
    assert widget.label.value == 5


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

    # move the tumour (all its parts) at the cursor by two slices: one undo step restores it
    tumour_voxel = tuple(int(v) for v in np.argwhere(np.isin(original, (4, 5, 6)))[0])
    _put_cursor(viewer, mask_layer, tumour_voxel)
    widget.choose_parts((4, 5, 6))
    widget.offset[0].value = 2 * mask_layer.scale[0]
    before = mask_layer.data.copy()
    assert widget.move() > 0
    assert not np.array_equal(mask_layer.data, before)
    mask_layer.undo()
    assert np.array_equal(mask_layer.data, before)

    # random augmentation: one undo step too
    widget.aug_min.value, widget.aug_max.value = 2, 3
    assert widget.augment() > 0
    assert "shifted" in widget.status.text()
    mask_layer.undo()
    assert np.array_equal(mask_layer.data, before)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_move_in_mm_moves_the_lesion_by_mm_over_the_voxel_size(viewer_case, axis):
    viewer, _, mask_layer = viewer_case
    scale = np.asarray(mask_layer.scale, float)
    assert len(set(np.round(scale, 6))) == 3  # anisotropic: a wrong axis or unit would show
    assert np.allclose(mask_layer.rotate, np.eye(3)) and np.allclose(mask_layer.shear, 0)
    widget = _editor(viewer)
    widget.mask.value = mask_layer
    widget.choose_parts((4, 5, 6))
    widget.keep_inside.value = False
    before = mask_layer.data.copy()
    lesion = np.isin(before, (4, 5, 6))
    _put_cursor(viewer, mask_layer, np.argwhere(lesion)[0])
    # a number of voxels whose size in mm, read as voxels, would move the lesion elsewhere
    steps = next(n for n in range(2, 9) if round(n * scale[axis]) != n)
    widget.offset[axis].value = steps * scale[axis]  # mm
    assert widget.move() > 0
    after = mask_layer.data
    moved = np.isin(after, (4, 5, 6))
    shift = np.zeros(3, int)
    shift[axis] = steps
    expected = np.argwhere(lesion) + shift
    assert np.all(expected < before.shape)  # the test lesion stays inside the volume
    assert moved.sum() == lesion.sum()
    assert np.array_equal(np.argwhere(moved), expected)
    assert np.array_equal(after[tuple(expected.T)], before[lesion])  # every part keeps its label


def test_bad_input_is_reported(viewer_case, monkeypatch):
    import napari.utils.notifications as notifications

    viewer, image_layer, mask_layer = viewer_case
    shown = []
    monkeypatch.setattr(notifications, "show_error", lambda message: shown.append(message))
    widget = _editor(viewer)
    widget.mask.value = mask_layer
    widget.choose_parts(())
    _put_cursor(viewer, mask_layer, (3, 3, 3))
    widget.delete_button.clicked.emit()
    assert shown and "tick at least one lesion part" in shown[-1]
    widget.image.value = image_layer
    widget.create_mask()  # an empty mask: no lesion to delete
    widget.choose_parts((6,))
    widget.delete_button.clicked.emit()
    assert "no voxel with label" in shown[-1] and widget.status.text() in shown[-1]


def test_the_dock_fits_1500x900_and_every_control_has_a_tooltip(viewer_case, qtbot):
    from qtpy.QtWidgets import QApplication
    from superqt import QCollapsible

    viewer, image_layer, mask_layer = viewer_case
    widget = MaskEditorWidget(viewer)
    show_docked(viewer, widget, NAME, qtbot)
    assert overflow(widget) == []
    assert without_tooltip(widget) == []
    sections = widget.inner.findChildren(QCollapsible)
    assert len(sections) >= 3
    for box in sections:
        box.expand(animate=False)
    for _ in range(5):
        QApplication.processEvents()
    assert overflow(widget) == []
    assert without_tooltip(widget) == []


def test_names_of_the_model_labels_in_pickers_legend_and_status_bar(viewer_case, bundle):
    from qtpy.QtWidgets import QLabel

    viewer, _, mask_layer = viewer_case
    get_session(viewer).set_bundle(_carded(bundle), "carded")
    names = bundle.config.labels.names
    data = mask_layer.data.copy()
    widget = _editor(viewer)
    widget.mask.value = mask_layer
    assert mask_layer.data.tobytes() == data.tobytes()  # naming the labels leaves the data as it was

    # lesion picker: the card's lesion parts, by name
    assert [box.text for box in widget.parts] == [names[v] for v in (4, 5, 6)]
    widget.choose_parts((6,))
    assert widget.lesion_values() == (6,)
    # paint picker and legend name every label
    shown = {widget.label.native.itemText(i) for i in range(widget.label.native.count())}
    assert all(any(name in text for text in shown) for name in names.values())
    legend = " ".join(label.text() for label in widget.legend.findChildren(QLabel))
    assert all(name in legend for name in names.values())

    # status bar: hovering a necrotic core voxel names it
    core = tuple(int(v) for v in np.argwhere(data == 6)[0])
    status = mask_layer.get_status(mask_layer.data_to_world(core), world=True)
    assert names[6] in status["value"] and names[5] not in status["value"]
    viewer.layers.selection.active = mask_layer
    viewer.mouse_over_canvas = True
    _put_cursor(viewer, mask_layer, core)
    text, _ = viewer._calc_status_from_cursor()
    assert names[6] in str(text)


def _prepare_mask_from_image(widget, viewer, image_layer, mask_layer):
    """Choose the image and the user's lesion (a layer added from the mask's tumour) for 'Mask from image'."""
    widget.image.value = image_layer
    lesion = viewer.add_labels((mask_layer.data >= 4).astype(np.uint8), name="lesion",
                               scale=mask_layer.scale, translate=mask_layer.translate)
    widget.reset_choices()
    widget.lesion_from.value = lesion
    widget.brain.value = "none"  # the synthetic image has no skull
    return lesion


def _check_model_mask(made, image_layer, lesion, widget, names):
    assert made.name == "image model mask" and made.data.shape == image_layer.data.shape
    assert np.allclose(layer_affine(made), layer_affine(image_layer))
    assert set(np.unique(made.data)) <= set(names)
    assert np.all(made.data[lesion.data > 0] >= 4)  # the user's lesion stays lesion
    assert {2, 3} <= set(np.unique(made.data))
    assert widget.mask.value is made
    assert "Mask from image" in widget.status.text()
    value = int(np.unique(made.data)[-1])  # the status bar names its labels
    where = made.data_to_world(np.argwhere(made.data == value)[0])
    assert names[value] in made.get_status(where, world=True)["value"]


def test_mask_from_image_adds_a_model_ready_layer_in_the_image_geometry(viewer_case, bundle, qtbot):
    viewer, image_layer, mask_layer = viewer_case
    get_session(viewer).set_bundle(_carded(bundle), "carded")
    widget = _editor(viewer)
    lesion = _prepare_mask_from_image(widget, viewer, image_layer, mask_layer)
    layers_before = len(viewer.layers)
    job = widget.mask_from_image()
    qtbot.waitUntil(lambda: job.finished, timeout=60_000)
    assert job.state == "done" and len(viewer.layers) == layers_before + 1
    _check_model_mask(viewer.layers[-1], image_layer, lesion, widget, bundle.config.labels.names)


def test_mask_from_image_loads_the_model_in_a_worker_first(
    viewer_case_without_model, bundle, qtbot, tmp_path, monkeypatch
):
    """With no model loaded, the bundled model loads in a worker (the call returns at once), then the mask
    is made."""
    from napari_gem3d._napari import session as session_module
    from napari_gem3d.models import save_bundle

    folder = save_bundle(_carded(bundle), tmp_path / "demo")
    monkeypatch.setattr(session_module, "default_model_path", lambda: folder)
    viewer, image_layer, mask_layer = viewer_case_without_model
    session = get_session(viewer)
    assert session.bundle is None
    widget = _editor(viewer)
    lesion = _prepare_mask_from_image(widget, viewer, image_layer, mask_layer)
    layers_before = len(viewer.layers)
    widget.from_image_button.clicked.emit()
    assert session.loading and "Loading the model" in widget.status.text()
    assert len(viewer.layers) == layers_before  # nothing made yet
    qtbot.waitUntil(lambda: session.bundle is not None, timeout=60_000)
    qtbot.waitUntil(lambda: len(viewer.layers) == layers_before + 1, timeout=60_000)
    assert session.bundle is not None and not session.loading
    _check_model_mask(viewer.layers[-1], image_layer, lesion, widget, bundle.config.labels.names)
