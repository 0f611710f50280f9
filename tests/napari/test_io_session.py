"""Reader/writer round trips through napari, sample data, and the session's model handling."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_gem3d._napari import sample_data
from napari_gem3d._napari.label_names import demo_scheme, names_of
from napari_gem3d._napari.layers import RAS_TO_WORLD, SOURCE_KEY, layer_affine, volume_to_layer
from napari_gem3d._napari.reader import napari_get_reader
from napari_gem3d._napari.session import get_session
from napari_gem3d.io import read_volume, write_volume
from study_helpers import AFFINE


def _corners(shape):
    return np.array(
        [[i, j, k] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)], float
    )


def test_reader_places_layers_in_scanner_space_and_writer_round_trips(make_napari_viewer, case, tmp_path):
    image, mask = case
    write_volume(image, tmp_path / "t1.nii.gz")
    write_volume(mask, tmp_path / "t1_mask.nii.gz")
    write_volume(image, tmp_path / "t1.nrrd")
    assert napari_get_reader(str(tmp_path / "t1.nii.gz")) is not None
    assert napari_get_reader(str(tmp_path / "notes.txt")) is None
    assert napari_get_reader([str(tmp_path / "t1.nii.gz"), str(tmp_path / "x.png")]) is None

    viewer = make_napari_viewer()
    img_layer = viewer.open(str(tmp_path / "t1.nii.gz"), plugin="napari-gem3d")[0]
    mask_layer = viewer.open(str(tmp_path / "t1_mask.nii.gz"), plugin="napari-gem3d")[0]
    nrrd_layer = viewer.open(str(tmp_path / "t1.nrrd"), plugin="napari-gem3d")[0]
    assert img_layer._type_string == "image" and mask_layer._type_string == "labels"
    assert mask_layer.data.dtype == np.uint8
    # the label map's values are named (status bar) and its data is exactly the file's
    names = demo_scheme().names
    assert set(np.unique(mask.array)) <= set(names) and names_of(mask_layer) == names
    expected, _ = volume_to_layer(read_volume(tmp_path / "t1_mask.nii.gz"), "labels")
    assert mask_layer.data.tobytes() == expected.tobytes() and mask_layer.data.dtype == expected.dtype
    core = np.argwhere(mask_layer.data == 6)[0]
    assert names[6] in mask_layer.get_status(mask_layer.data_to_world(core), world=True)["value"]
    assert img_layer.metadata[SOURCE_KEY]["facts"]["zooms"] == pytest.approx((1.3, 2.2, 0.9))
    # every stored voxel lands where the file's affine says (in the plugin's S, P, L world frame)
    stored = _corners(image.shape)
    ornt = img_layer.metadata[SOURCE_KEY]["ornt"]
    for ijk in stored:
        display = np.empty(3)
        for axis, (target, flip) in enumerate(ornt):
            n = image.shape[axis]
            display[int(target)] = ijk[axis] if flip > 0 else n - 1 - ijk[axis]
        expected = (RAS_TO_WORLD @ AFFINE @ np.r_[ijk, 1.0])[:3]
        assert np.allclose(img_layer.data_to_world(display), expected, atol=1e-4)
        assert np.allclose(nrrd_layer.data_to_world(display), expected, atol=1e-4)
    assert img_layer.data[tuple(int(v) for v in display)] == image.array[tuple(int(v) for v in stored[-1])]

    # write back through napari: the file's own voxel order, affine and header codes come back
    out_img = tmp_path / "saved.nii.gz"
    out_mask = tmp_path / "saved_mask.nii.gz"
    img_layer.save(str(out_img), plugin="napari-gem3d")
    mask_layer.save(str(out_mask), plugin="napari-gem3d")
    back, back_mask = read_volume(out_img), read_volume(out_mask)
    assert np.array_equal(back.array, image.array) and np.array_equal(back_mask.array, mask.array)
    assert np.allclose(back.affine, AFFINE) and np.allclose(back_mask.affine, AFFINE)
    original = nib.load(tmp_path / "t1.nii.gz").header
    saved = nib.load(out_img).header
    assert (int(saved["qform_code"]), int(saved["sform_code"])) == (
        int(original["qform_code"]),
        int(original["sform_code"]),
    )
    # the user's own files are never overwritten: not the layer's own file, nor another open layer's
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(Exception, match="it is the input layer 't1'"):
        img_layer.save(str(tmp_path / "t1.nii.gz"), plugin="napari-gem3d")
    with pytest.raises(Exception, match="it is the input layer 't1_mask'"):
        img_layer.save(str(tmp_path / "t1_mask.nii.gz"), plugin="napari-gem3d")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_a_layer_made_in_napari_writes_with_its_geometry(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    layer = viewer.add_image(
        np.random.rand(5, 6, 7).astype(np.float32), scale=(3.0, 0.5, 0.7), translate=(10, 20, 30)
    )
    layer.save(str(tmp_path / "made"), plugin="napari-gem3d")  # no extension: .nii.gz is added
    back = read_volume(tmp_path / "made.nii.gz")
    assert np.allclose(back.affine, layer_affine(layer))
    assert back.axcodes == ("S", "P", "L") and back.spacing == pytest.approx((3.0, 0.5, 0.7))


def test_sample_data_is_offline_and_explains_when_missing(tmp_path, monkeypatch, case):
    import napari_gem3d

    real_config = napari_gem3d.demo_model_path() / "config.json"
    monkeypatch.setattr(napari_gem3d, "_DATA", tmp_path)
    with pytest.raises(FileNotFoundError, match="demo case is not installed"):
        sample_data.demo_case()
    image, mask = case
    (tmp_path / "demo_model").mkdir()
    (tmp_path / "demo_model" / "config.json").write_bytes(real_config.read_bytes())
    (tmp_path / "demo_case").mkdir()
    write_volume(image, tmp_path / "demo_case" / "image.nii.gz")
    write_volume(mask, tmp_path / "demo_case" / "mask.nii.gz")
    layers = sample_data.demo_case()
    assert [kind for _, _, kind in layers] == ["image", "labels"]
    assert layers[1][0].dtype == np.uint8
    # the demo mask comes named by the demo model's labels, its data as in the file
    features = layers[1][1]["features"]
    names = json.loads(real_config.read_text())["labels"]["names"]
    assert dict(zip(features["index"], features["name"], strict=True)) == {int(k): v for k, v in names.items()}
    assert "features" not in layers[0][1]
    expected, _ = volume_to_layer(mask, "labels")
    assert layers[1][0].tobytes() == expected.tobytes()


def test_session_loads_bundles_and_official_checkpoints(
    make_napari_viewer, qtbot, bundle_path, tmp_path, monkeypatch
):
    import napari.utils.notifications as notifications

    from test_convert_official import tiny_checkpoints

    viewer = make_napari_viewer()
    session = get_session(viewer)
    assert get_session(viewer) is session
    loaded = []
    worker = session.load_model(bundle_path, on_done=loaded.append)
    qtbot.waitUntil(lambda: bool(loaded), timeout=60_000)
    assert session.bundle is loaded[0] and session.bundle.path == Path(bundle_path)
    assert session.load_model(bundle_path) is None  # cached: no second load

    messages = []
    monkeypatch.setattr(notifications, "show_info", lambda m: messages.append(m))
    monkeypatch.setenv("GEM3D_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "ckpt").mkdir()
    tiny = tiny_checkpoints(tmp_path / "ckpt")
    ckpt = tiny["paths"]["volume"]
    ckpt.with_name("volume.params.json").write_text(json.dumps(tiny["params"]))
    loaded.clear()
    worker = session.load_model(ckpt, on_done=loaded.append)
    qtbot.waitUntil(lambda: bool(loaded), timeout=120_000)
    assert any("Converting volume.ckpt" in m for m in messages)
    assert session.bundle.volume is not None
    converted = list((tmp_path / "cache" / "converted").iterdir())
    assert len(converted) == 1 and (converted[0] / "config.json").is_file()
    assert worker is not None
    message = session.release_memory()
    assert "nothing to release" in message or "Released" in message
    assert str(session.bundle.device) == "cpu"


def test_no_model_is_a_clear_error(make_napari_viewer, monkeypatch):
    from napari_gem3d._napari import session as session_module

    monkeypatch.setattr(session_module, "default_model_path", lambda: None)
    viewer = make_napari_viewer()
    called = []
    with pytest.raises(ValueError, match="Load model"):
        get_session(viewer).when_model_ready(called.append)
    assert not called


def test_unavailable_devices_are_greyed_out(make_napari_viewer, monkeypatch):
    import torch
    from qtpy.QtCore import Qt

    from napari_gem3d._napari.widget_sampling import SamplingWidget

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    viewer = make_napari_viewer()
    widget = SamplingWidget(viewer)
    viewer.window.add_dock_widget(widget)
    combo = widget.device.native
    cuda = combo.model().item(combo.findText("cuda"))
    assert not cuda.flags() & Qt.ItemFlag.ItemIsEnabled
    assert "CUDA build of torch" in cuda.toolTip() and widget.device_note.text().startswith("GPU:")
    assert combo.model().item(combo.findText("cpu")).flags() & Qt.ItemFlag.ItemIsEnabled
