"""Lesion geometry: every op returns a new array, acts in mm, reports the changed block."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_gem3d import lesions

TISSUE, OTHER, LESION, CORE = 2, 3, 5, 6


def _brain(shape=(24, 28, 32)) -> np.ndarray:
    """Outside 0, a brain ball of tissue 2 with a slab of tissue 3, as uint8."""
    z, y, x = np.indices(shape)
    c = (np.asarray(shape) - 1) / 2
    brain = ((z - c[0]) / (shape[0] / 2 - 1)) ** 2 + ((y - c[1]) / (shape[1] / 2 - 1)) ** 2 + (
        (x - c[2]) / (shape[2] / 2 - 1)
    ) ** 2 <= 1
    mask = np.where(brain, TISSUE, 0).astype(np.uint8)
    mask[brain & (x < c[2] - 6)] = OTHER
    return mask


def _check_edit(before: np.ndarray, original: np.ndarray, edit: lesions.Edit) -> None:
    """Input untouched, new array, box covers exactly the changes, changes() lists them."""
    assert np.array_equal(before, original), "the input mask was modified"
    assert edit.mask is not original and not np.shares_memory(edit.mask, original)
    diff = edit.mask != original
    if not diff.any():
        assert edit.box is None
        return
    assert edit.box is not None
    outside = diff.copy()
    outside[edit.box] = False
    assert not outside.any(), "a changed voxel lies outside the reported box"
    assert lesions.bounding_box(diff) == edit.box
    indices, values = edit.changes(original)
    assert len(indices[0]) == int(diff.sum())
    assert np.array_equal(values, edit.mask[indices])


def test_sphere_is_round_in_mm_on_an_anisotropic_grid():
    mask = np.zeros((30, 30, 40), np.uint8)
    before = mask.copy()
    spacing = (1.0, 2.0, 0.5)
    edit = lesions.add_sphere(mask, (15, 15, 20), 4.0, LESION, spacing=spacing)
    _check_edit(before, mask, edit)
    ball = edit.mask == LESION
    extent = [s.stop - s.start for s in lesions.bounding_box(ball)]
    assert extent == [9, 5, 17]  # +-4 mm = +-4, +-2, +-8 voxels
    volume_mm3 = ball.sum() * np.prod(spacing)
    assert volume_mm3 == pytest.approx(4 / 3 * np.pi * 4.0**3, rel=0.15)


def test_ellipsoid_respects_region_and_preserved_labels():
    mask = _brain()
    core_at = (12, 14, 16)
    mask[core_at] = CORE
    before = mask.copy()
    region = lesions.region_of(mask)
    edit = lesions.add_ellipsoid(mask, (12, 14, 2), (3, 6, 6), LESION, region=region, preserve=[CORE])
    _check_edit(before, mask, edit)
    assert not np.any((edit.mask == LESION) & ~region)
    edit2 = lesions.add_sphere(mask, core_at, 2.0, LESION, preserve=[CORE])
    assert edit2.mask[core_at] == CORE and (edit2.mask == LESION).sum() > 10


def _with_lesion(center=(12, 14, 18), radius=3.0):
    mask = _brain()
    return lesions.add_sphere(mask, center, radius, LESION).mask


def test_move_translates_exactly_and_refills_with_surrounding_tissue():
    mask = _with_lesion()
    before = mask.copy()
    edit = lesions.move(mask, LESION, (2, -3, 1))
    _check_edit(before, mask, edit)
    old = mask == LESION
    new = edit.mask == LESION
    assert np.array_equal(np.roll(old, (2, -3, 1), axis=(0, 1, 2)), new)
    vacated = old & ~new
    assert vacated.any() and set(np.unique(edit.mask[vacated])) <= {TISSUE}


def test_move_clips_to_region():
    mask = _with_lesion(center=(12, 14, 27), radius=2.0)
    region = lesions.region_of(mask)
    edit = lesions.move(mask, LESION, (0, 0, 6), region=region)
    moved = edit.mask == LESION
    assert moved.sum() < (mask == LESION).sum()
    assert not np.any(moved & ~region)


def test_scale_changes_volume_by_factor_cubed():
    mask = _with_lesion(radius=3.0)
    n0 = (mask == LESION).sum()
    big = lesions.scale(mask, LESION, 2.0).mask
    small = lesions.scale(mask, LESION, 0.5).mask
    assert (big == LESION).sum() / n0 == pytest.approx(8.0, rel=0.25)
    assert (small == LESION).sum() / n0 == pytest.approx(1 / 8, rel=0.6)
    com0 = ndimage.center_of_mass(mask == LESION)
    assert np.allclose(ndimage.center_of_mass(big == LESION), com0, atol=0.6)


def test_rotation_is_rigid_in_mm():
    # a bar 8 mm long along axis 1 on a grid with 2 mm voxels along axis 2
    mask = np.full((9, 21, 21), TISSUE, np.uint8)
    mask[4, 6:14, 10] = LESION  # 8 voxels * 1 mm
    edit = lesions.rotate(mask, LESION, 90.0, axes=(1, 2), spacing=(1.0, 1.0, 2.0))
    bar = edit.mask == LESION
    extent = [s.stop - s.start for s in lesions.bounding_box(bar)]
    # 8 mm long -> 4 voxels of 2 mm along axis 2; 2 mm thick -> 2 voxels of 1 mm along axis 1
    # (a rotation in voxel units would give 8 and 1)
    assert extent[1:] == [2, 4]


def test_flip_mirrors_within_the_bounding_box():
    mask = np.full((10, 12, 14), TISSUE, np.uint8)
    mask[3:6, 4:8, 5] = LESION
    mask[3:6, 4, 6:9] = LESION  # an L shape, asymmetric along axis 2
    before = mask.copy()
    edit = lesions.flip(mask, LESION, axis=2)
    _check_edit(before, mask, edit)
    box = lesions.bounding_box(mask == LESION)
    assert np.array_equal(edit.mask[box] == LESION, np.flip(mask[box] == LESION, axis=2))


def test_point_selects_one_component_only():
    mask = _with_lesion(center=(12, 14, 10), radius=2.0)
    mask = lesions.add_sphere(mask, (12, 14, 22), 2.0, LESION).mask
    left = lesions.lesion_mask(mask, LESION, point=(12, 14, 10))
    right = lesions.lesion_mask(mask, LESION, point=(12, 14, 22))
    assert left.sum() > 0 and not np.any(left & right)
    near_left = lesions.lesion_mask(mask, LESION, point=(12, 14, 5))  # not on a lesion: nearest one
    assert np.array_equal(near_left, left)
    edit = lesions.delete(mask, LESION, point=(12, 14, 22))
    assert np.array_equal(edit.mask == LESION, left)


def test_dilate_erode_delete():
    mask = _with_lesion(radius=3.0)
    core = lesions.add_sphere(mask, (12, 14, 18), 1.0, CORE).mask
    n = np.isin(core, [LESION, CORE]).sum()
    grown = lesions.dilate(core, [LESION, CORE], 1.0).mask
    assert np.isin(grown, [LESION, CORE]).sum() > n
    assert (grown == CORE).sum() == (core == CORE).sum()  # new voxels take the nearest lesion label (rim)
    shrunk = lesions.erode(core, [LESION, CORE], 1.0).mask
    assert 0 < np.isin(shrunk, [LESION, CORE]).sum() < n
    gone = lesions.delete(core, [LESION, CORE]).mask
    assert not np.isin(gone, [LESION, CORE]).any()
    assert set(np.unique(gone[np.isin(core, [LESION, CORE])])) == {TISSUE}
    filled = lesions.delete(core, [LESION, CORE], fill=1).mask
    assert set(np.unique(filled[np.isin(core, [LESION, CORE])])) == {1}


def test_errors_are_clear():
    with pytest.raises(ValueError, match="no voxel with label"):
        lesions.move(_brain(), LESION, (1, 0, 0))
    with pytest.raises(ValueError, match="3-D label array"):
        lesions.add_sphere(np.zeros((4, 4), np.uint8), (1, 1, 1), 1.0, 1)
    with pytest.raises(ValueError, match="outside the volume"):
        lesions.add_sphere(np.zeros((4, 4, 4), np.uint8), (9, 1, 1), 1.0, 1)
    with pytest.raises(ValueError, match="cannot be stored"):
        lesions.add_sphere(np.zeros((4, 4, 4), np.uint8), (1, 1, 1), 1.0, 300)


# ------------------------------------------------------------------------------ random augmentation
def _no_rotation(**kw):
    return dict(max_angle_deg=0.0, **kw)


def test_augmentation_translates_in_true_voxels_toward_the_centre_along_the_right_axis():
    # lesion off-centre along axis 0 only: the shift must be along axis 0 (official bug: D/W swapped)
    mask = _with_lesion(center=(4, 14, 16), radius=1.5)  # centre of the volume is (11.5, 13.5, 15.5)
    before = mask.copy()
    com0 = np.array(ndimage.center_of_mass(mask == LESION))
    edit = lesions.random_augmentation(
        mask,
        np.random.default_rng(0),
        lesion_labels=LESION,
        **_no_rotation(flip_probability=0.0, shift_range=(5, 5)),
    )
    _check_edit(before, mask, edit)
    com1 = np.array(ndimage.center_of_mass(edit.mask == LESION))
    shift = com1 - com0
    assert shift[0] == pytest.approx(5.0, abs=0.51)  # 5 voxels, not 2.5 (official: normalised units)
    assert abs(shift[1]) <= 1 and abs(shift[2]) <= 1
    assert edit.info["flipped"] is False and edit.info["shift_vox"][0] == 5
    assert (edit.mask == LESION).sum() == (mask == LESION).sum()


def test_augmentation_shift_is_capped_at_the_centre():
    mask = _with_lesion(center=(9, 14, 16), radius=1.5)
    edit = lesions.random_augmentation(
        mask,
        np.random.default_rng(1),
        lesion_labels=LESION,
        **_no_rotation(flip_probability=0.0, shift_range=(20, 60)),
    )
    com1 = np.array(ndimage.center_of_mass(edit.mask == LESION))
    centre = (np.asarray(mask.shape) - 1) / 2
    assert np.linalg.norm(com1 - centre) <= 1.0


def test_augmentation_flip_follows_its_probability():
    mask = _with_lesion(center=(12, 14, 8), radius=2.0)
    never = [
        lesions.random_augmentation(
            mask,
            np.random.default_rng(s),
            lesion_labels=LESION,
            **_no_rotation(flip_probability=0.0, shift_range=(0, 0)),
        )
        for s in range(5)
    ]
    assert all(not e.info["flipped"] and np.array_equal(e.mask, mask) for e in never)
    always = lesions.random_augmentation(
        mask,
        np.random.default_rng(0),
        lesion_labels=LESION,
        **_no_rotation(flip_probability=1.0, shift_range=(0, 0), flip_axis=2),
    )
    assert always.info["flipped"] and np.array_equal(always.mask, np.flip(mask, axis=2))
    draws = [
        lesions.random_augmentation(
            mask,
            np.random.default_rng(s),
            lesion_labels=LESION,
            **_no_rotation(flip_probability=0.5, shift_range=(0, 0)),
        ).info["flipped"]
        for s in range(40)
    ]
    assert 8 <= sum(draws) <= 32


def test_augmentation_rotation_is_small_and_recorded_and_lesion_stays_in_brain():
    mask = _with_lesion(center=(12, 14, 26), radius=2.5)  # near the brain's edge
    edit = lesions.random_augmentation(
        mask, np.random.default_rng(3), lesion_labels=LESION, flip_probability=0.0, shift_range=(0, 0)
    )
    angles = np.asarray(edit.info["angles_deg"])
    assert angles.shape == (3,) and np.all(np.abs(angles) <= 2.5) and np.any(angles != 0)
    agreement = np.mean(edit.mask == mask)
    assert 0.9 < agreement < 1.0  # a small rotation changes a few boundary voxels


def test_augmentation_clips_the_lesion_to_the_brain():
    mask = _with_lesion(center=(4, 14, 16), radius=1.5)
    mask[9:12, 10:19, 12:21] = 0  # an "outside" cavity between the lesion and the centre
    edit = lesions.random_augmentation(
        mask,
        np.random.default_rng(0),
        lesion_labels=LESION,
        **_no_rotation(flip_probability=0.0, shift_range=(5, 5)),
    )
    moved = edit.mask == LESION
    assert 0 < moved.sum() < (mask == LESION).sum()
    assert not np.any(moved & (mask == 0))


def test_augmentation_is_deterministic_per_seed():
    mask = _with_lesion(center=(8, 10, 12), radius=2.0)
    a = lesions.random_augmentation(mask, np.random.default_rng(7), lesion_labels=LESION, shift_range=(2, 6))
    b = lesions.random_augmentation(mask, np.random.default_rng(7), lesion_labels=LESION, shift_range=(2, 6))
    assert np.array_equal(a.mask, b.mask) and a.info == b.info
