"""Gallery dock: counterfactual and de-enhancement studies -> grid of results + difference maps -> export."""

from __future__ import annotations

import json

import numpy as np

from napari_gem3d._napari.layers import layer_affine, volume_to_layer
from napari_gem3d._napari.session import InformedChoice, get_session
from napari_gem3d._napari.widget_gallery import DEENHANCE, FROM_WIDGET, GalleryWidget
from napari_gem3d.io import read_volume, write_volume
from napari_gem3d.sampling.informed import pick_informed
from study_helpers import synthetic_case


def _widget(viewer):
    widget = GalleryWidget(viewer)
    viewer.window.add_dock_widget(widget, name="GEM-3D gallery")
    widget.steps.value = 2
    widget.device.value = "cpu"
    return widget


def test_counterfactual_grid_difference_maps_and_export(viewer_case, qtbot, tmp_path):
    viewer, image_layer, mask_layer = viewer_case
    other, _ = synthetic_case(seed=3, scale=2.0)
    data, kwargs = volume_to_layer(other, "image", name="other patient")
    other_layer = viewer.add_image(data, **kwargs)
    widget = _widget(viewer)
    widget.mask.value = mask_layer
    widget.reference.value = image_layer
    widget.informed_layers.value = [image_layer, other_layer]
    widget.generated.value = 1
    job = widget.run()
    assert job is not None
    qtbot.waitUntil(lambda: job.finished, timeout=90_000)
    assert job.state == "done", widget.status.text()
    assert [r.name for r in widget.results] == ["image", "other patient", "generated seed 0"]
    assert len(widget.result_layers) == 6  # 3 results + 3 difference maps
    for layer in widget.result_layers:
        assert layer.data.shape == mask_layer.data.shape
        assert np.allclose(layer_affine(layer), layer_affine(mask_layer))
    assert viewer.canvas.grid.enabled
    assert not mask_layer.visible and all(layer.visible for layer in widget.result_layers)
    paths = widget.export(tmp_path / "export")
    assert len(paths) == 7
    index = json.loads((tmp_path / "export" / "provenance.json").read_text())
    assert [r["provenance"]["study"]["kind"] for r in index["results"]] == ["counterfactual"] * 3
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
    qtbot.waitUntil(lambda: job.finished, timeout=90_000)
    assert job.state == "done", widget.status.text()
    names = [r.name for r in widget.results]
    assert names == ["mask", "b"]
    assert all(r.provenance["informed"]["volume"] == "reference scanner" for r in widget.results)
    assert widget.results[1].volume.shape == mask_b.shape
    assert np.allclose(widget.results[1].volume.affine, mask_b.affine)
    assert len(widget.result_layers) == 4  # both cases have a reference image
