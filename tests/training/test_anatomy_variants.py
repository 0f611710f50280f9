"""Warped, re-contrasted variants of a subject: geometry in millimetres, labels kept, inputs untouched."""

from __future__ import annotations

import numpy as np
import pytest
from training.data.anatomy_variants import (
    VariantRanges,
    Warp,
    anatomy_variant,
    random_contrast,
    warp_coordinates,
)

ANISO = np.diag([0.8, 0.8, 6.5, 1.0])  # brain1-like: thin pixels, thick slices


def _ramp(shape=(12, 10, 8)) -> np.ndarray:
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape)


def test_a_shift_of_one_slice_in_millimetres_moves_the_volume_by_one_slice():
    img = _ramp()
    coords = warp_coordinates(img.shape, ANISO, Warp(shift_mm=(0.0, 0.0, 6.5)))
    from scipy import ndimage

    out = ndimage.map_coordinates(img, coords, order=1)
    np.testing.assert_array_equal(out[..., 1:], img[..., :-1])  # content moved one slice up (+z)


def test_rotation_is_in_world_millimetres_not_voxels():
    # 90 degrees about z on a grid with 1 mm x 2 mm pixels: a point 4 mm along x lands 4 mm along y,
    # which is 2 voxels (not 4) on the 2 mm axis
    affine = np.diag([1.0, 2.0, 3.0, 1.0])
    shape = (9, 9, 3)
    coords = warp_coordinates(shape, affine, Warp(rotate_deg=(0.0, 0.0, 90.0)))
    centre = (np.asarray(shape) - 1) / 2
    out_voxel = (int(centre[0]), int(centre[1]) + 2, 1)  # 4 mm along +y from the centre
    src = coords[(slice(None), *out_voxel)]
    np.testing.assert_allclose(np.abs(src - centre), [4.0, 0.0, 0.0], atol=1e-9)


def test_identity_ranges_return_an_exact_copy():
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 100, (10, 9, 7)).astype(np.float32)
    lab = rng.integers(0, 4, img.shape).astype(np.int16)
    none = VariantRanges(rotate_deg=0, scale=0, shift_mm=0, elastic_mm=0, contrast_knots=0, bias=0)
    out, out_lab = anatomy_variant(img, lab, ANISO, np.random.default_rng(1), none)
    np.testing.assert_allclose(out, img, rtol=0, atol=1e-4 * float(img.max()))
    np.testing.assert_array_equal(out_lab, lab)


def test_a_variant_is_new_deterministic_labelled_like_the_source_and_leaves_the_inputs_alone():
    rng = np.random.default_rng(3)
    zz, yy, xx = np.indices((24, 24, 12))
    ball = ((zz - 12) ** 2 + (yy - 12) ** 2 + ((xx - 6) * 2) ** 2) < 64
    lab = np.where(ball, 3, 0).astype(np.int16)
    lab[ball & (zz < 12)] = 2
    img = (lab * 30 + rng.normal(0, 2, lab.shape)).astype(np.float32)
    img0, lab0 = img.copy(), lab.copy()
    affine = np.diag([2.0, 2.0, 4.0, 1.0])
    a, la = anatomy_variant(img, lab, affine, np.random.default_rng(7))
    b, lb = anatomy_variant(img, lab, affine, np.random.default_rng(7))
    c, lc = anatomy_variant(img, lab, affine, np.random.default_rng(8))
    np.testing.assert_array_equal(img, img0)
    np.testing.assert_array_equal(lab, lab0)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(la, lc) and not np.array_equal(la, lab)
    assert set(np.unique(la)) <= {0, 2, 3} and a.dtype == np.float32 and la.dtype == lab.dtype
    # a similarity warp of a few percent keeps the ball's volume within the scale range, cubed
    assert 0.7 < (la > 0).sum() / (lab > 0).sum() < 1.3


def test_the_random_contrast_is_monotone_keeps_its_window_ends_and_leaves_the_background():
    x = np.linspace(-10, 120, 1301).astype(np.float32)
    for seed in range(5):
        y = random_contrast(x, 0.0, 100.0, np.random.default_rng(seed), 5, 3.0)
        assert np.all(np.diff(y) >= 0)  # tissue order kept
        np.testing.assert_array_equal(y[x <= 0], x[x <= 0])
        np.testing.assert_allclose(y[np.isclose(x, 100.0)], 100.0, atol=1e-4)
    a = random_contrast(x, 0.0, 100.0, np.random.default_rng(0), 5, 3.0)
    b = random_contrast(x, 0.0, 100.0, np.random.default_rng(1), 5, 3.0)
    assert np.abs(a - b).max() > 1.0  # the curves differ from draw to draw


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="one 3-D grid"):
        anatomy_variant(np.zeros((4, 4, 4), np.float32), np.zeros((4, 4, 3), np.int16), np.eye(4),
                        np.random.default_rng(0))


@pytest.mark.slow
@pytest.mark.data
def test_the_demo_recipe_writes_warped_anatomies_and_drops_them_when_no_longer_asked_for(tmp_path):
    from train_helpers import require_file
    from training.recipes.demo import build
    from training.recipes.demo.subjects import ITK, MRICRON, brain1_dir

    for path in (MRICRON / "ch2.nii.gz", ITK / "KmeansTest_T1UCharRaw.nii.gz", brain1_dir() / "brain1_image.nrrd"):
        require_file(path)
    raw = tmp_path / "raw"
    build.build_cases(raw, warped=1)
    warped = sorted(p.name for p in (raw / "masks").glob("*_w*.nii.gz"))
    assert warped == ["brain1_w0.nii.gz", "itk_t1_w0.nii.gz", "mni152_w0.nii.gz"]
    assert sorted(p.name for p in (raw / "images").glob("*_w*.nii.gz")) == warped
    build.build_cases(raw, warped=0)  # a run that no longer wants them must not train on stale ones
    assert not list(raw.glob("*/*_w*.nii.gz"))
    assert len(list((raw / "images").glob("*_v*.nii.gz"))) == 3 * build.VARIANTS
