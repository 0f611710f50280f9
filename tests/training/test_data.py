"""Preprocessing (geometry round trip, layouts, cache) and the step-keyed datasets."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from train_helpers import phantom, tiny_config
from training.config import config_from_dict, load_config
from training.data.datasets import StepBatchSampler, WindowDataset
from training.data.preprocess import crop_box, prepare_cases
from training.stages.diffusion import draw_timesteps, small_t_weights

from napari_gem3d.models.presets import demo_labels
from napari_gem3d.volume import from_model

LABELS = demo_labels()


def _write(folder: Path, name: str, image: np.ndarray, mask: np.ndarray, affine: np.ndarray) -> tuple[Path, Path]:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    ip, mp = folder / "images" / f"{name}.nii.gz", folder / "masks" / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(image, affine), ip)
    nib.save(nib.Nifti1Image(mask, affine), mp)
    return ip, mp


def _cfg(tmp: Path, data: Path, **data_section) -> object:
    raw = tiny_config(tmp, data, "volume-stage1", "out", data={"val_cases": [], **data_section})
    return config_from_dict(raw)


@pytest.fixture
def las_case(tmp_path):
    """A phantom stored LAS with anisotropic voxels and an off-centre origin, padded with empty space."""
    img, msk = phantom((18, 20, 10), seed=3)
    img = np.pad(img, ((3, 5), (2, 4), (1, 2)))
    msk = np.pad(msk, ((3, 5), (2, 4), (1, 2)))
    affine = np.array([[-1.5, 0, 0, 40.0], [0, 1.5, 0, -12.0], [0, 0, 2.5, 7.0], [0, 0, 0, 1]])
    _write(tmp_path / "data", "las", img, msk, affine)
    return tmp_path / "data", img, msk, affine


def test_preprocessing_round_trips_geometry_exactly_without_resizing(tmp_path, las_case):
    data, img, msk, affine = las_case
    # in-plane extent 26 x 26 voxels of 1.5 mm (R-L x A-P): model size 26 keeps it unresized
    (case,) = prepare_cases(_cfg(tmp_path, data, image_size=26, crop="none"), LABELS)
    grid = case.grid()
    assert grid.resized_shape == grid.oriented_shape[1:]
    box = tuple(slice(a, b) for a, b in case.meta["crop_box"])
    back = from_model(np.asarray(case.mask), grid, "labels")
    assert np.array_equal(back.array, msk[box])
    # the cropped volume sits exactly where it was in the world
    lo = np.array([s.start for s in box] + [1.0])
    assert np.allclose(back.affine @ np.array([0, 0, 0, 1.0]), affine @ lo)
    # model frame: axial slices, inferior -> superior
    assert case.meta["model_shape"][0] == box[2].stop - box[2].start


def test_preprocessing_keeps_world_position_when_resizing(tmp_path, las_case):
    data, img, msk, affine = las_case
    (case,) = prepare_cases(_cfg(tmp_path, data, image_size=16, crop="labels", crop_margin=2), LABELS)
    model_affine = np.asarray(case.meta["model_affine"])
    lesion_model = np.argwhere(np.asarray(case.mask) >= 4).mean(0)
    lesion_src = np.argwhere(msk >= 4).mean(0)
    world_model = model_affine @ np.append(lesion_model, 1.0)
    world_src = affine @ np.append(lesion_src, 1.0)
    assert np.linalg.norm(world_model[:3] - world_src[:3]) < 1.5  # within a model pixel
    image = np.asarray(case.image)
    assert image.min() >= -1.0 and image.max() <= 1.0 and image.dtype == np.float32


def test_cache_is_reused_and_keyed_by_settings(tmp_path, las_case):
    data = las_case[0]
    (a,) = prepare_cases(_cfg(tmp_path, data, image_size=16), LABELS)
    (b,) = prepare_cases(_cfg(tmp_path, data, image_size=16), LABELS)
    (c,) = prepare_cases(_cfg(tmp_path, data, image_size=8), LABELS)
    assert a.folder == b.folder and a.folder != c.folder
    assert len([p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]) == 2


def test_msd_layout_picks_the_modality_and_maps_labels(tmp_path):
    img, msk = phantom((12, 14, 8), seed=1)
    four_d = np.stack([np.zeros_like(img), img], axis=-1)  # modality 0 is empty, 1 holds the anatomy
    root = tmp_path / "Task01"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir(parents=True)
    nib.save(nib.Nifti1Image(four_d, np.eye(4)), root / "imagesTr" / "BRATS_001.nii.gz")
    brats = np.where(msk >= 4, msk - 3, 0).astype(np.int16)  # BraTS-like 0..3
    nib.save(nib.Nifti1Image(brats, np.eye(4)), root / "labelsTr" / "BRATS_001.nii.gz")
    raw = tiny_config(tmp_path, tmp_path, "volume-stage1", "o", data={"val_cases": [], "outside": "from_image",
                                                                       "crop": "none"})
    raw["data"]["sources"] = [{"kind": "msd", "root": str(root), "modality": 1,
                               "label_map": {1: 4, 2: 5, 3: 6}}]
    (case,) = prepare_cases(config_from_dict(raw), LABELS)
    present = set(case.meta["labels_present"])
    assert present == {0, 1} | {int(v) for v in np.unique(msk) if v >= 4}  # outside/body added, lesions mapped
    assert np.asarray(case.image).std() > 0.1  # the anatomy channel, not the empty one
    raw["data"]["sources"][0]["modality"] = None
    with pytest.raises(ValueError, match="modality"):
        prepare_cases(config_from_dict(raw), LABELS)


def test_csv_source(tmp_path):
    img, msk = phantom((12, 14, 8), seed=2)
    ip, mp = _write(tmp_path / "d", "x", img, msk, np.eye(4))
    with open(tmp_path / "cases.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["case", "image", "mask"], ["x", str(ip), str(mp)]])
    raw = tiny_config(tmp_path, tmp_path, "vae", "o", data={"val_cases": []})
    raw["data"]["sources"] = [{"kind": "csv", "path": str(tmp_path / "cases.csv")}]
    (case,) = prepare_cases(config_from_dict(raw), LABELS)
    assert case.name == "x" and case.num_slices > 0


def test_crop_box_keeps_labelled_voxels():
    image = np.zeros((10, 10, 10), np.float32)
    image[2:5, 2:5, 2:5] = 1
    mask = np.zeros_like(image, dtype=np.int16)
    mask[7, 7, 7] = 3
    box = crop_box(image, mask, "nonzero", 0, 0)
    assert [(s.start, s.stop) for s in box] == [(2, 8)] * 3


def _dataset(cases, window=4, batch=2, **kw):
    return WindowDataset(cases, LABELS, window, seed=1, global_batch=batch, **kw)


def test_window_starts_cover_zero_to_z_minus_n_inclusive(tmp_path, las_case):
    (case,) = prepare_cases(_cfg(tmp_path, las_case[0], image_size=16), LABELS)
    ds = _dataset([case], window=4)
    starts = {int(ds[(s, 0)]["z0"]) for s in range(400)}
    assert starts == set(range(case.num_slices - 4 + 1))  # the last start is drawn (official bug B9)
    item = ds[(3, 1)]
    k = int(item["informed_index"])
    assert 0 <= k < 4 and torch.equal(item["informed"], item["image"][k])


def test_short_volume_gives_one_shorter_window(tmp_path, las_case):
    (case,) = prepare_cases(_cfg(tmp_path, las_case[0], image_size=16), LABELS)
    ds = _dataset([case], window=case.num_slices + 5)
    item = ds[(0, 0)]
    assert item["image"].shape[0] == case.num_slices and int(item["z0"]) == 0


def test_cross_volume_informed_slice_is_another_volume_at_the_same_position(tmp_path, pairs_data):
    cases = prepare_cases(config_from_dict(tiny_config(tmp_path, pairs_data, "volume-stage1", "o")), LABELS)
    ds = _dataset(cases, informed="cross_volume", cross_volume_prob=1.0)
    for s in range(20):
        item = ds[(s, 0)]
        assert int(item["informed_case"]) != int(item["case"]) and int(item["informed_index"]) == -1
        other = cases[int(item["informed_case"])]
        assert torch.equal(item["informed"][0], torch.from_numpy(np.array(other.image[int(item["informed_slice"])])))


def test_items_depend_only_on_the_key_and_ranks_split_the_global_batch(tmp_path, pairs_data):
    cases = prepare_cases(config_from_dict(tiny_config(tmp_path, pairs_data, "volume-stage1", "o")), LABELS)
    ds = _dataset(cases, batch=4, flip_lr=0.5)
    a, b = ds[(7, 3)], ds[(7, 3)]
    assert all(torch.equal(a[k], b[k]) for k in a)
    single = list(StepBatchSampler(4, 3))
    ranks = [list(StepBatchSampler(2, 3, rank=r, world=2)) for r in range(2)]
    for step in range(3):
        assert single[step] == ranks[0][step] + ranks[1][step]
    assert list(StepBatchSampler(2, 5, start_step=3)) == [[(3, 0), (3, 1)], [(4, 0), (4, 1)]]


def test_stage2_timesteps_favour_small_t():
    w = small_t_weights(1000)
    assert float(w[0] / w[999]) == pytest.approx(2000 / 1001)
    keys = torch.tensor([[s, i] for s in range(200) for i in range(10)])
    t = draw_timesteps("small_t_bias", keys, 16, 0, 1000)
    assert t.shape == (2000,) and float((t < 500).float().mean()) > 0.55
    per_slice = draw_timesteps("per_slice", keys[:3], 16, 0, 1000)
    assert per_slice.shape == (3, 16) and len(set(per_slice[0].tolist())) > 1


def test_config_errors_name_the_problem(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("out: x\ntrain: {stepz: 3}\n")
    with pytest.raises(ValueError, match="train.stepz"):
        load_config(path, stage="vae")
    path.write_text("stage: vae\nout: x\n")
    with pytest.raises(ValueError, match="stage"):
        load_config(path, stage="slice")
    cfg = load_config(path, stage="vae", overrides=["train.steps=7", "data.image_size=32"])
    assert cfg.train.steps == 7 and cfg.data.image_size == 32 and cfg.out_dir == tmp_path / "x"


def test_lesion_weighted_loss_and_cosine_schedule_options(tmp_path, pairs_data):
    from training.bundles import new_bundle_config
    from training.stages.diffusion import weighted_mse

    pred, target = torch.zeros(1, 1, 1, 2, 2), torch.tensor([[[[[1.0, 0.0], [0.0, 0.0]]]]])
    weight = torch.tensor([[[[[3.0, 1.0], [1.0, 1.0]]]]])
    assert float(weighted_mse(pred, target, None)) == pytest.approx(0.25)
    assert float(weighted_mse(pred, target, weight)) == pytest.approx(3.0 / 6.0)
    raw = tiny_config(tmp_path, pairs_data, "vae", "o", model={"schedule": {"kind": "cosine"}})
    assert new_bundle_config(config_from_dict(raw)).schedule.kind == "cosine"
