"""The sampling dock as a clinician meets it: it fits 1500x900 (alone and beside other docks), every control
has a tooltip, defaults come from the user's layers, results never hide the scan, the view choice, stale marks
that follow the mask's content (undo clears them), short names, no duplicate helper layers, and a dock closed
by napari cancels its run."""

from __future__ import annotations

import numpy as np
from dock_helpers import overflow, show_docked, visible_height, without_tooltip

from napari_gem3d._napari.layers import RESULT_KEY
from napari_gem3d._napari.session import STALE_SUFFIX
from napari_gem3d._napari.widget_informed import InformedSliceWidget
from napari_gem3d._napari.widget_sampling import INFORMED_IMAGE, SamplingWidget
from napari_gem3d._napari.window_boxes import BOX_KEY


def _dock(viewer, qtbot, cls=SamplingWidget, name="GEM-3D sampling"):
    widget = cls(viewer)
    show_docked(viewer, widget, name, qtbot)
    return widget


def _run(qtbot, widget, **values):
    widget.steps.value, widget.device.value = 2, "cpu"
    for key, value in values.items():
        getattr(widget, key).value = value
    job = widget.run()
    assert job is not None
    qtbot.waitUntil(lambda: job.finished, timeout=60_000)
    return widget.live.layer


def test_sampling_and_informed_docks_fit_with_a_tooltip_on_every_control(viewer_case, qtbot):
    viewer, _, _ = viewer_case
    for cls, name in ((SamplingWidget, "GEM-3D sampling"), (InformedSliceWidget, "GEM-3D informed slice")):
        widget = _dock(viewer, qtbot, cls, name)
        widget.advanced_section.expand(animate=False)  # the advanced controls must fit too
        qtbot.wait(50)
        assert overflow(widget) == [], cls.__name__
        assert without_tooltip(widget) == [], cls.__name__


def test_a_second_dock_shares_the_full_height_in_tabs_instead_of_squeezing(viewer_case, qtbot):
    viewer, _, _ = viewer_case
    first = _dock(viewer, qtbot, InformedSliceWidget, "GEM-3D informed slice")
    alone = visible_height(first)
    sampling = _dock(viewer, qtbot)
    qtbot.wait(100)
    window = viewer.window._qt_window
    docks = [d for d in window.tabifiedDockWidgets(sampling.parent()) if d.widget() is first]
    assert docks, "the two GEM-3D docks are not in one tab group"
    assert visible_height(sampling) >= 0.9 * alone and overflow(sampling) == []


def test_first_run_with_defaults_uses_the_scan_of_the_mask(viewer_case, qtbot):
    viewer, image_layer, mask_layer = viewer_case
    viewer.add_image(np.zeros((5, 6, 7), np.float32), name="unrelated")  # another geometry: never the default
    widget = _dock(viewer, qtbot)
    assert widget.mask.value is mask_layer and widget.image.value is image_layer
    assert widget.informed.value == INFORMED_IMAGE and widget.start.value == 13 and widget.start.max == 25
    layer = _run(qtbot, widget)
    assert layer.metadata[RESULT_KEY]["status"] == "complete"
    assert layer.metadata[RESULT_KEY]["provenance"]["start_slice"] == 13


def test_results_never_hide_the_scan_and_the_boxes_stay_on_top(viewer_case, qtbot):
    viewer, image_layer, mask_layer = viewer_case
    mask_layer.visible = False
    widget = _dock(viewer, qtbot)
    widget.follow.value = False
    seen = {}
    original = widget._on_window

    def first_window(message):
        if not seen:  # before the first window lands: nothing filled, the scan must show as if alone
            layer = widget.live.layer
            viewer.dims.set_point(0, float(image_layer.data_to_world((0, 0, 0))[0]))
            with_result = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float)
            layer.visible = False
            alone = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float)
            layer.visible = True
            seen["diff"] = float(np.abs(with_result - alone).max())
            seen["std"] = float(alone.std())
            names = [lyr.name for lyr in viewer.layers]
            seen["boxes_above"] = all(
                names.index(lyr.name) > names.index(layer.name) for lyr in viewer.layers if lyr.metadata.get(BOX_KEY)
            )
        original(message)

    widget._on_window = first_window
    layer = _run(qtbot, widget, start=20)
    assert seen["std"] > 5 and seen["diff"] <= 2, seen  # the unfilled result is fully transparent
    assert seen["boxes_above"]
    assert layer.colormap.name == "gray"  # finished: plain grey over the intensity window
    second = _run(qtbot, widget, seed=1)  # a second run: boxes above the new layer too, none added
    names = [lyr.name for lyr in viewer.layers]
    boxes = [lyr for lyr in viewer.layers if lyr.metadata.get(BOX_KEY)]
    assert boxes and all(names.index(b.name) > names.index(second.name) for b in boxes)


def test_the_view_choice_sets_the_plane(viewer_case, qtbot):
    viewer, _, _ = viewer_case
    widget = _dock(viewer, qtbot)
    for view, not_displayed in (("coronal", 1), ("sagittal", 2), ("axial", 0)):
        widget.view.value = view
        assert viewer.dims.not_displayed == (not_displayed,) and viewer.dims.ndisplay == 2


def test_follow_moves_the_axial_slider_to_the_window(viewer_case, qtbot):
    viewer, image_layer, mask_layer = viewer_case
    widget = _dock(viewer, qtbot)
    viewer.dims.set_point(0, float(image_layer.data_to_world((0, 0, 0))[0]))
    positions = []
    viewer.dims.events.current_step.connect(lambda event: positions.append(viewer.dims.current_step[0]))
    _run(qtbot, widget, start=20)
    assert any(p >= 10 for p in positions)  # moved from slice 0 to the windows near the start slice 20


def test_stale_marks_follow_the_mask_content_and_undo_clears_them(viewer_case, qtbot):
    viewer, image_layer, mask_layer = viewer_case
    widget = _dock(viewer, qtbot)
    first = _run(qtbot, widget)
    second = _run(qtbot, widget, seed=1)
    assert len(first.name) <= 24 and first.name != second.name and "#" in first.name
    mask_layer.mode = "paint"
    mask_layer.brush_size = 3
    before = mask_layer.data.copy()
    mask_layer.paint((13, 2, 2), 5)  # one brush dab in the background, with undo history
    assert not np.array_equal(mask_layer.data, before)
    qtbot.wait(400)  # the content check after the edits pause
    assert all(r.metadata[RESULT_KEY]["stale"] and r.name.endswith(STALE_SUFFIX) for r in (first, second))
    mask_layer.undo()
    qtbot.waitUntil(lambda: not first.metadata[RESULT_KEY]["stale"], timeout=5_000)
    assert not second.metadata[RESULT_KEY]["stale"]
    assert not first.name.endswith(STALE_SUFFIX) and not second.name.endswith(STALE_SUFFIX)
    mask_layer.redo()
    qtbot.waitUntil(lambda: second.metadata[RESULT_KEY]["stale"], timeout=5_000)
    assert first.metadata[RESULT_KEY]["stale"]


def test_a_reopened_dock_reuses_the_window_boxes(viewer_case, qtbot):
    viewer, _, _ = viewer_case
    widget = _dock(viewer, qtbot)
    _run(qtbot, widget)
    before = sum(1 for lyr in viewer.layers if lyr.metadata.get(BOX_KEY))
    viewer.window.remove_dock_widget(widget)
    again = _dock(viewer, qtbot)
    _run(qtbot, again, seed=2)
    assert before >= 1 and sum(1 for lyr in viewer.layers if lyr.metadata.get(BOX_KEY)) == before


def test_a_dock_removed_by_napari_cancels_its_run(viewer_case, qtbot):
    viewer, _, _ = viewer_case
    widget = _dock(viewer, qtbot)
    widget.steps.value, widget.device.value = 200, "cpu"
    job = widget.run()
    viewer.window.remove_dock_widget(widget)
    qtbot.waitUntil(lambda: job.finished, timeout=60_000)
    assert job.state == "cancelled" and job.token.cancelled


def test_quality_presets_set_the_solver_and_steps_and_hand_edits_show_custom(viewer_case, qtbot):
    from napari_gem3d._napari.quality import CUSTOM, QUALITY

    viewer, _, _ = viewer_case
    widget = _dock(viewer, qtbot)
    assert widget.quality.value == "Fast (6 steps)" and (widget.solver.value, widget.steps.value) == ("dpmpp2m", 6)
    for name, preset in QUALITY.items():
        widget.quality.value = name
        assert (widget.solver.value, widget.steps.value, widget.eta.value) == preset
    assert QUALITY["Standard (25 steps)"][2] == 0.0 and QUALITY["Official (50 steps)"][2] == 1.0
    widget.steps.value = 30
    assert widget.quality.value == CUSTOM and widget.solver.value == "ddim"
    widget.steps.value = 50
    assert widget.quality.value == "Official (50 steps)"
    widget.eta.value = 0.0  # DDIM 50 without the official sampler's noise: not a preset
    assert widget.quality.value == CUSTOM
    widget.steps.value = 25
    assert widget.quality.value == "Standard (25 steps)"
    widget.quality.value = "Fast (6 steps)"
    widget.eta.value = 0.5  # ignored by DPM-Solver++: still the Fast preset
    assert widget.quality.value == "Fast (6 steps)"
    widget.device.value = "cpu"
    job = widget.run()
    qtbot.waitUntil(lambda: job.finished, timeout=60_000)
    prov = widget.live.layer.metadata[RESULT_KEY]["provenance"]
    assert prov["solver"] == "dpmpp2m" and prov["steps"] == 6


def test_window_boxes_enclose_their_windows_and_are_made_ahead_one_per_turn(viewer_case, qtbot):
    """A box spans exactly its window's slices (the whole volume in plane); reserve() makes the layers a
    later round needs, hidden, so that showing two windows then adds no layer (each costs the GUI ~0.1 s)."""
    from napari_gem3d._napari.layers import layer_to_volume, window_index_range
    from napari_gem3d._napari.window_boxes import WindowBoxes
    from napari_gem3d.volume import model_grid

    viewer, image_layer, mask_layer = viewer_case
    grid = model_grid(layer_to_volume(mask_layer), 32, "S")
    boxes = WindowBoxes(viewer)
    boxes.attach(image_layer, grid)
    boxes.reserve(2, delay_ms=0)
    made = [lyr for lyr in viewer.layers if lyr.metadata.get(BOX_KEY)]
    assert len(made) == 1 and not made[0].bounding_box.visible  # one now, the next in a later turn
    qtbot.waitUntil(lambda: sum(1 for lyr in viewer.layers if lyr.metadata.get(BOX_KEY)) == 2, timeout=5_000)
    count = len(viewer.layers)
    windows = [(0, 8), (8, 16)]
    boxes.show(windows)
    assert len(viewer.layers) == count  # moved, not made
    shape = np.asarray(image_layer.data.shape) - 1
    for layer, (start, stop) in zip(boxes.layers, windows, strict=True):
        axis, (lo, hi) = window_index_range(grid, start, stop)
        expected = np.zeros((2, 3))
        expected[1] = shape
        expected[:, axis] = (lo, hi - 1)
        assert layer.bounding_box.visible
        np.testing.assert_allclose(layer.extent.data, expected)
        np.testing.assert_allclose(layer.scale, image_layer.scale)
    boxes.show(windows[:1])
    assert boxes.layers[0].bounding_box.visible and not boxes.layers[1].bounding_box.visible


def test_full_garbage_collections_skip_the_old_objects_while_a_job_runs(viewer_case, qtbot):
    """gc.freeze while a worker runs (a full collection over napari + torch holds the GIL ~0.2 s), and
    unfreeze when the last one ends, so nothing that became garbage meanwhile is kept."""
    import gc

    viewer, _, _ = viewer_case
    widget = _dock(viewer, qtbot)
    assert gc.get_freeze_count() == 0
    seen = []
    original = widget._on_window
    widget._on_window = lambda message: (seen.append(gc.get_freeze_count()), original(message))
    _run(qtbot, widget)
    qtbot.waitUntil(lambda: gc.get_freeze_count() == 0, timeout=5_000)
    assert seen and min(seen) > 0
