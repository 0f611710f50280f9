"""Counterfactual and de-enhancement studies drive the one sampler; results keep geometry and provenance."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_gem3d.io import read_volume, write_volume
from napari_gem3d.sampling import Cancelled, CancelToken, SamplingOptions
from napari_gem3d.sampling.informed import pick_informed
from napari_gem3d.sampling.pipeline import run_to_end
from napari_gem3d.sampling.variants import (
    StudyCase,
    StudyUpdate,
    TimeLeft,
    adjacent_differences,
    count_windows,
    counterfactuals,
    deenhance,
    difference_map,
    export_results,
    find_cases,
    progress_text,
)
from napari_gem3d.volume import Volume
from sampler_helpers import tiny_bundle
from study_helpers import AFFINE, synthetic_case

OPTIONS = SamplingOptions(steps=2, device="cpu", seed=3)


@pytest.fixture(scope="module")
def bundle():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CI box is small and shared: oversubscribed torch threads crawl
    yield tiny_bundle(window=8)
    torch.set_num_threads(threads)


def _drive(gen):
    updates = []
    while True:
        try:
            updates.append(next(gen))
        except StopIteration as stop:
            return updates, stop.value


def test_counterfactuals_one_mask_many_informed(bundle):
    image, mask = synthetic_case()
    other, _ = synthetic_case(seed=1, scale=2.0)
    mask_before = mask.array.copy()
    informed = [
        ("own", pick_informed(image, bundle.config, position=0.5, name="own")),
        ("other", pick_informed(other, bundle.config, position=0.5, name="other")),
    ]
    updates, results = _drive(counterfactuals(bundle, mask, informed, image=image, options=OPTIONS))
    per_case = count_windows(bundle.config, mask, 0.5, OPTIONS, informed[0][1])
    assert per_case >= 3
    assert len(updates) == 2 * per_case
    assert [u.done for u in updates] == list(range(1, 2 * per_case + 1))
    assert {u.total for u in updates} == {2 * per_case}
    assert [u.case for u in updates] == [0] * per_case + [1] * per_case
    assert [r.name for r in results] == ["own", "other"]
    for k, res in enumerate(results):
        assert res.volume.shape == mask.shape and np.allclose(res.volume.affine, AFFINE)
        assert res.provenance["study"] == {
            "kind": "counterfactual",
            "index": k,
            "count": 2,
            "name": informed[k][0],
            "position": 0.5,
        }
        assert res.provenance["informed"]["volume"] == informed[k][0]
        assert res.provenance["seed"] == OPTIONS.seed
        assert res.reference is image
    assert not np.array_equal(results[0].volume.array, results[1].volume.array)
    assert np.array_equal(mask.array, mask_before)


def test_deenhance_one_informed_many_cases_keeps_each_geometry(bundle):
    ref_image, _ = synthetic_case(seed=5, scale=3.0)
    informed = pick_informed(ref_image, bundle.config, position=0.4, name="reference", is_true_slice=True)
    img_a, mask_a = synthetic_case()
    other_affine = np.diag([1.1, 0.7, 3.0, 1.0])
    img_b, mask_b = synthetic_case(shape=(18, 20, 12), affine=other_affine, tumour_at=(0.3, 0.6, 0.5))
    cases = [StudyCase("a", mask_a, img_a), StudyCase("b", mask_b, img_b)]
    updates, results = _drive(deenhance(bundle, cases, informed, options=OPTIONS))
    assert len(updates) == updates[-1].total
    assert results[0].volume.shape == mask_a.shape and np.allclose(results[0].volume.affine, AFFINE)
    assert results[1].volume.shape == mask_b.shape and np.allclose(results[1].volume.affine, other_affine)
    for res in results:
        assert res.provenance["study"]["kind"] == "deenhance"
        assert res.provenance["informed"]["volume"] == "reference"
        assert res.provenance["intensity"] == informed.source["intensity"]  # units of the reference


def test_study_cancel_stops_with_cancelled(bundle):
    image, mask = synthetic_case()
    informed = [
        ("a", pick_informed(image, bundle.config, position=0.5)),
        ("b", pick_informed(image, bundle.config, position=0.2)),
    ]
    token = CancelToken()
    gen = counterfactuals(bundle, mask, informed, options=OPTIONS, cancel=token)
    first = next(gen)
    token.cancel()
    with pytest.raises(Cancelled):
        next(gen)
    assert first.done == 1


def test_difference_map_and_geometry_check():
    image, mask = synthetic_case()
    shifted = image.with_array(image.array + 5.0)
    raw = difference_map(shifted, image, normalize=False)
    assert np.allclose(raw.array, 5.0, atol=1e-3) and np.allclose(raw.affine, image.affine)
    normed = difference_map(shifted, image)  # percentile windows remove the offset
    assert np.abs(normed.array).max() < 1e-4
    with pytest.raises(ValueError, match="one geometry"):
        difference_map(Volume(image.array, np.eye(4)), image)


def test_adjacent_differences_flag_a_seam_at_the_model_slice_axis():
    image, _ = synthetic_case()
    arr = image.array.copy()
    arr[:, 13:, :] += 400.0  # stored axis 1 is superior: slices 12 -> 13 along S are a seam
    diffs = adjacent_differences(image.with_array(arr), "S")
    assert diffs.shape == (image.shape[1] - 1,)
    assert int(np.argmax(diffs)) == 12


def test_export_writes_geometry_and_provenance_atomically(bundle, tmp_path):
    image, mask = synthetic_case()
    informed = [("own view", pick_informed(image, bundle.config, position=0.5))]
    results = run_to_end(counterfactuals(bundle, mask, informed, image=image, options=OPTIONS))
    paths = export_results(results, tmp_path / "out")
    names = sorted(p.name for p in paths)
    assert names == ["00_own_view.nii.gz", "00_own_view_diff.nii.gz", "provenance.json"]
    back = read_volume(tmp_path / "out" / "00_own_view.nii.gz")
    assert np.allclose(back.affine, AFFINE) and back.shape == mask.shape
    assert back.header["provenance"]["study"]["name"] == "own view"
    index = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert index["results"][0]["difference"] == "00_own_view_diff.nii.gz"
    diff = read_volume(tmp_path / "out" / "00_own_view_diff.nii.gz")  # a model's product, not a scan:
    assert diff.header["provenance"]["model"] == results[0].provenance["model"]
    assert diff.header["provenance"]["difference"]["generated"]["name"] == "own view"
    assert index["results"][0]["provenance"]["mask_sha256"] == results[0].provenance["mask_sha256"]
    assert not list((tmp_path / "out").glob(".*tmp*"))
    with pytest.raises(FileExistsError, match="exists"):
        export_results(results, tmp_path / "out")


def test_find_cases_layouts(tmp_path):
    image, mask = synthetic_case(shape=(6, 7, 8))
    for name in ("c1", "c2"):
        (tmp_path / "folders" / name).mkdir(parents=True)
        write_volume(image, tmp_path / "folders" / name / "image.nii.gz")
        write_volume(mask, tmp_path / "folders" / name / "mask.nii.gz")
    (tmp_path / "msd" / "imagesTr").mkdir(parents=True)
    (tmp_path / "msd" / "labelsTr").mkdir(parents=True)
    write_volume(image, tmp_path / "msd" / "imagesTr" / "x_0000.nii.gz")
    write_volume(mask, tmp_path / "msd" / "labelsTr" / "x.nii.gz")
    (tmp_path / "flat").mkdir()
    write_volume(mask, tmp_path / "flat" / "y_mask.nrrd")
    assert [(c.name, c.image is not None) for c in find_cases(tmp_path / "folders")] == [
        ("c1", True),
        ("c2", True),
    ]
    assert [(c.name, c.image is not None) for c in find_cases(tmp_path / "msd")] == [("x", True)]
    assert [(c.name, c.image is not None) for c in find_cases(tmp_path / "flat")] == [("y", False)]
    with pytest.raises(FileNotFoundError, match="no cases found"):
        find_cases(tmp_path / "msd" / "imagesTr")


def test_time_left_from_the_mean_window_time_after_the_first_variant():
    ticks = iter([10.0, 12.0, 14.0, 16.0, 18.0, 26.0])  # 2 s per window, then one slow window
    estimate = TimeLeft(clock=lambda: next(ticks))
    updates = [StudyUpdate(case=d // 2, cases=3, name="v", window=None, done=d + 1, total=6) for d in range(6)]
    left = [estimate(u) for u in updates]
    assert left[:2] == [None, None]  # no estimate while the first variant runs
    assert left[2] == pytest.approx(3 * 2.0)  # 3 windows left at 2 s each (the first window starts the clock)
    assert left[3] == pytest.approx(2 * 2.0) and left[3] < left[2]
    assert left[5] == 0.0
    assert progress_text(updates[0], left[0]) == "variant 1 of 3, estimating time left…"
    assert progress_text(updates[2], left[2]) == "variant 2 of 3, ~6 s left"
    assert progress_text(updates[2], 600.0, noun="case") == "case 2 of 3, ~10 min left"
    assert progress_text(updates[5], left[5]) == "variant 3 of 3, almost done"
