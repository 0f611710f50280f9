"""Gallery dock: counterfactual and de-enhancement studies -> grid of results + difference maps -> export."""

from __future__ import annotations

import itertools
import json
import re

import numpy as np
from dock_helpers import overflow, show_docked, without_tooltip

from napari_gem3d._napari.layers import RESULT_KEY, layer_affine, volume_to_layer
from napari_gem3d._napari.session import InformedChoice, get_session
from napari_gem3d._napari.widget_gallery import COUNTERFACTUAL, DEENHANCE, FROM_WIDGET, GalleryWidget
from napari_gem3d.io import read_volume, write_volume
from napari_gem3d.sampling.informed import pick_informed
from study_helpers import synthetic_case


def _widget(viewer, qtbot=None):
    widget = GalleryWidget(viewer)
    show_docked(viewer, widget, "GEM-3D gallery", qtbot)
    widget.steps.value = 2
    widget.device.value = "cpu"
    return widget


def _record_progress(job, widget) -> list[tuple[str, str]]:
    """(dock status, napari progress description) after every update; connected after the dock's own slot."""
    seen: list[tuple[str, str]] = []
    job.worker.yielded.connect(lambda *_: seen.append((widget.status.text(), job.worker.pbar.desc)))
    return seen


def _grid_cell(viewer, layer) -> tuple[int, int]:
    return viewer.canvas.grid.position(viewer.layers.index(layer), viewer.layers)


def test_dock_fits_a_1500x900_window_and_every_control_has_a_tooltip(viewer_case, qtbot):
    viewer, _, _ = viewer_case
    widget = _widget(viewer, qtbot)
    advanced = widget.advanced.native.parent()
    while not hasattr(advanced, "expand"):  # the collapsible section around the technical settings
        advanced = advanced.parent()
    assert not advanced.isExpanded()  # technical settings start folded away
    for study in (COUNTERFACTUAL, DEENHANCE):
        widget.study.value = study
        for expanded in (False, True):
            advanced.expand(animate=False) if expanded else advanced.collapse(animate=False)
            qtbot.wait(20)
            assert overflow(widget) == [], (study, expanded)
    assert without_tooltip(widget) == []


def test_informed_sources_offer_scans_not_results(viewer_case):
    viewer, image_layer, _ = viewer_case
    widget = _widget(viewer)
    made = {RESULT_KEY: {"provenance": {"model": {"name": "tiny"}}}}
    result = viewer.add_image(np.zeros((4, 5, 6), np.float32), name="earlier result", metadata=made)
    prepared = {RESULT_KEY: {"provenance": {"prepared": "gem3d make-mask"}}}  # a GEM-3D file that is a scan
    scan = viewer.add_image(np.zeros((4, 5, 6), np.float32), name="prepared scan", metadata=prepared)
    assert {image_layer, scan} <= set(widget.informed_layers.choices)
    assert {image_layer, scan, FROM_WIDGET} <= set(widget.informed_from.choices)
    assert result not in widget.informed_layers.choices and result not in widget.informed_from.choices
    assert result in widget.reference.choices  # a difference reference may be any image


def test_counterfactual_grid_pairs_titles_time_left_and_export(viewer_case, qtbot, tmp_path):
    viewer, image_layer, mask_layer = viewer_case
    other, _ = synthetic_case(seed=3, scale=2.0)
    data, kwargs = volume_to_layer(other, "image", name="other patient")
    other_layer = viewer.add_image(data, **kwargs)
    widget = _widget(viewer, qtbot)
    ticks = itertools.count()
    widget.clock = lambda: float(next(ticks))  # one second per window: the estimate is the windows left
    widget.mask.value = mask_layer
    widget.reference.value = image_layer
    widget.informed_layers.value = [image_layer, other_layer]
    widget.generated.value = 1
    job = widget.run()
    assert job is not None
    seen = _record_progress(job, widget)
    qtbot.waitUntil(lambda: job.finished, timeout=90_000)
    assert job.state == "done", widget.status.text()
    assert [r.name for r in widget.results] == ["image", "other patient", "synthetic slice, seed 0"]

    # time left: none during the first variant, then estimates in the dock and napari's progress that shrink
    assert seen and all(status[0].lower() + status[1:] in desc for status, desc in seen)
    assert all(s.startswith("Variant 1 of 3, estimating") for s, _ in seen if s.startswith("Variant 1 "))
    left = [
        (int(m.group(1)), int(m.group(2)))
        for m in (re.match(r"Variant (\d) of 3, ~(\d+) s left", s) for s, _ in seen)
        if m
    ]
    assert {variant for variant, _ in left} == {2, 3}
    seconds = [s for _, s in left]
    assert all(a >= b for a, b in itertools.pairwise(seconds)) and seconds[0] > seconds[-1] > 0

    # grid: row k = variant k's result (left) and its difference map (right), each tile titled
    titles = ["look from image's slice", "look from other patient's slice", "synthetic slice, seed 0"]
    assert len(widget.result_layers) == 6
    for k, title in enumerate(titles):
        result, diff = widget.result_layers[2 * k : 2 * k + 2]
        assert result.name == f"{k + 1}. {title}" and diff.name == f"{k + 1}. difference from the scan"
        assert _grid_cell(viewer, result) == (k, 0) and _grid_cell(viewer, diff) == (k, 1)
        assert result.name_overlay.visible and diff.name_overlay.visible
        assert diff.colorbar.visible and not result.colorbar.visible
        assert tuple(diff.contrast_limits) == (-1.0, 1.0)
    for layer in widget.result_layers:
        assert layer.data.shape == mask_layer.data.shape
        assert np.allclose(layer_affine(layer), layer_affine(mask_layer))
    assert viewer.canvas.grid.enabled
    assert not mask_layer.visible and all(layer.visible for layer in widget.result_layers)
    assert widget.legend.isVisibleTo(widget.inner)
    assert not set(widget.result_layers) & set(widget.informed_layers.choices)  # results lend no look

    paths = widget.export(tmp_path / "export")
    assert len(paths) == 7
    index = json.loads((tmp_path / "export" / "provenance.json").read_text())
    assert [r["provenance"]["study"]["kind"] for r in index["results"]] == ["counterfactual"] * 3
    assert {r["provenance"]["solver"] for r in index["results"]} == {"dpmpp2m"}  # the Fast quality's solver
    back = read_volume(tmp_path / "export" / index["results"][1]["file"])
    assert np.allclose(back.affine, layer_affine(mask_layer))


def test_deenhance_cases_from_layers_and_a_folder(viewer_case, qtbot, tmp_path, bundle):
    viewer, image_layer, mask_layer = viewer_case
    reference, _ = synthetic_case(seed=9, scale=3.0)
    informed = pick_informed(reference, bundle.config, position=0.5, name="reference scanner")
    get_session(viewer).set_informed(InformedChoice(informed, "reference scanner, p = 0.5", 0.5))
    image_b, mask_b = synthetic_case(shape=(16, 18, 12), affine=np.diag([1.2, 0.8, 2.5, 1.0]))
    (tmp_path / "cases" / "b").mkdir(parents=True)
    write_volume(image_b, tmp_path / "cases" / "b" / "image.nii.gz")
    write_volume(mask_b, tmp_path / "cases" / "b" / "mask.nii.gz")
    widget = _widget(viewer)
    widget.study.value = DEENHANCE
    widget.informed_from.value = FROM_WIDGET
    widget.cases.value = [mask_layer]
    widget.add_folder(tmp_path / "cases")
    job = widget.run()
    seen = _record_progress(job, widget)
    qtbot.waitUntil(lambda: job.finished, timeout=90_000)
    assert job.state == "done", widget.status.text()
    names = [r.name for r in widget.results]
    assert names == ["mask", "b"]
    assert all(r.provenance["informed"]["volume"] == "reference scanner" for r in widget.results)
    assert widget.results[1].volume.shape == mask_b.shape
    assert np.allclose(widget.results[1].volume.affine, mask_b.affine)
    assert len(widget.result_layers) == 4  # both cases have a reference image
    assert [layer.name for layer in widget.result_layers[::2]] == ["1. case mask", "2. case b"]
    assert any(s.startswith("Case 2 of 2") for s, _ in seen)
    assert job.worker.pbar.total == job.updates  # the folder case's windows are in napari's progress too


def test_first_run_loads_the_model_in_the_background(viewer_case_without_model, bundle_path, qtbot, monkeypatch):
    import napari_gem3d._napari.session as session_module

    monkeypatch.setattr(session_module, "default_model_path", lambda: bundle_path)  # the tiny model as "bundled"
    viewer, image_layer, mask_layer = viewer_case_without_model
    widget = _widget(viewer)
    session = widget.session
    assert session.bundle is None
    widget.mask.value, widget.reference.value = mask_layer, image_layer
    widget.informed_layers.value = [image_layer]
    jobs = []
    session.job_changed.connect(lambda job: jobs.append(job) if job is not None else None)
    assert widget.run() is None  # returned while the model loads: the GUI is not blocked
    assert session.loading and "Loading the model" in widget.status.text()
    assert not widget.run_button.enabled  # no second run queued while it loads
    qtbot.waitUntil(lambda: len(jobs) == 1 and jobs[0].finished, timeout=90_000)
    assert jobs[0].state == "done", widget.status.text()
    assert session.bundle is not None and not session.loading
    assert [r.name for r in widget.results] == ["image"]
    assert widget.run_button.enabled


def test_quality_presets_are_the_sampling_docks(viewer_case, qtbot, bundle):
    """The gallery starts at the Fast quality, as the sampling dock and the CLI; a preset sets solver, steps
    and eta; an edit that matches no preset shows Custom."""
    from napari_gem3d._napari.quality import CUSTOM, QUALITY

    viewer, _, _ = viewer_case
    widget = GalleryWidget(viewer)
    assert widget.quality.value == "Fast (6 steps)"
    assert (widget.solver.value, widget.steps.value, widget.eta.value) == ("dpmpp2m", 6, 0.0)
    widget.quality.value = "Official (50 steps)"
    assert (widget.solver.value, widget.steps.value, widget.eta.value) == QUALITY["Official (50 steps)"]
    widget.eta.value = 0.3
    assert widget.quality.value == CUSTOM and widget._options(bundle).eta == 0.3


def test_lesion_strength_is_used_with_a_model_whose_card_names_lesion_labels(viewer_case, qtbot, bundle):
    import dataclasses

    from napari_gem3d.models.card import ModelCard

    viewer, _, _ = viewer_case
    widget = GalleryWidget(viewer)
    assert widget.lesion_strength.value == 1.0 and widget.lesion_strength.tooltip
    widget.lesion_strength.value = 2.5
    assert widget._options(bundle).lesion_guidance == 1.0  # the tiny model has no card: nothing to guide
    card = ModelCard(modality="MR", contrast="T1", body_region="brain", tissue_labels=(1, 2, 3), lesion_labels=(4,))
    carded = dataclasses.replace(bundle, config=dataclasses.replace(bundle.config, card=card))
    assert widget._options(carded).lesion_guidance == 2.5
