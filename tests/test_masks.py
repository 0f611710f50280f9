"""LabelSpec encodings (official GEM-3D levels, one-hot), validation, outside-body helper, mask hashing."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from data_files import require_data
from napari_gem3d.masks import (
    LabelSpec,
    UndeclaredLabelsError,
    body_region,
    mask_hash,
    official_abdomen_spec,
    official_brain_spec,
    outside_from_image,
)

ITK_DATA = Path("/usr/share/doc/insighttoolkit5-examples/examples/Data")


# ------------------------------------------------------------------------------------------- encodings
def test_official_brain_encoding_matches_reference_table():
    """reference-gem3d.md 2.4: outside -1.667, brain -1, labels 1..3 -> -0.333, 0.333, 1."""
    spec = official_brain_spec()
    mask = np.array([0, 1, 2, 3, 4, 4, 0], dtype=np.uint8).reshape(1, 1, 7)
    enc = spec.encode(mask)
    assert enc.shape == (1, 1, 1, 7) and enc.dtype == np.float32
    assert np.allclose(enc.ravel(), [-1.667, -1.0, -0.333, 0.333, 1.0, 1.0, -1.667], atol=1e-3)
    assert spec.num_channels == 1 and spec.max_level == 3.0


def test_official_abdomen_encoding_matches_reference_table():
    spec = official_abdomen_spec()
    enc = spec.encode(np.arange(5, dtype=np.int32).reshape(1, 1, 5))
    assert np.allclose(enc.ravel(), [-1.0, -0.5, 0.0, 0.5, 1.0])
    assert spec.labels == (0, 1, 2, 3, 4)


def test_official_encoding_keeps_slice_layout():
    spec = official_brain_spec()
    mask = np.random.default_rng(0).integers(0, 5, size=(4, 6, 7))
    enc = spec.encode(mask)
    assert enc.shape == (4, 1, 6, 7)
    values = spec.encoded_values()
    for label in range(5):
        assert np.allclose(enc[:, 0][mask == label], values[label])


def test_onehot_encoding_in_sorted_label_order():
    spec = LabelSpec(names={5: "tumour", 0: "background", 2: "organ"}, encoding="onehot")
    assert spec.labels == (0, 2, 5) and spec.num_channels == 3
    mask = np.array([[[0, 2], [5, 5]], [[2, 0], [0, 5]]], dtype=np.int16)
    enc = spec.encode(mask)
    assert enc.shape == (2, 3, 2, 2) and enc.dtype == np.float32
    assert set(np.unique(enc)) == {-1.0, 1.0}
    assert np.all((enc == 1).sum(axis=1) == 1)  # exactly one channel on per voxel
    for c, label in enumerate((0, 2, 5)):
        assert np.array_equal(enc[:, c] == 1, mask == label)


def test_encode_accepts_integral_float_masks_and_does_not_modify_input():
    spec = official_abdomen_spec()
    mask = np.array([[[0.0, 1.0], [4.0, 2.0]]])
    copy = mask.copy()
    assert np.allclose(spec.encode(mask).ravel(), [-1, -0.5, 1, 0])
    assert np.array_equal(mask, copy)
    with pytest.raises(ValueError, match="non-integer"):
        spec.encode(mask + 0.5)
    with pytest.raises(ValueError, match="NaN"):
        spec.encode(np.full((1, 1, 1), np.nan))
    with pytest.raises(ValueError, match=r"\(Z, H, W\)"):
        spec.encode(np.zeros((2, 2)))


# ------------------------------------------------------------------------------------------ validation
def test_undeclared_labels_error_names_values_declared_and_fix():
    spec = official_brain_spec()
    mask = np.zeros((2, 3, 3), np.int16)
    mask[0, 0, 0], mask[1, 2, 2] = 7, -3
    with pytest.raises(UndeclaredLabelsError) as info:
        spec.validate(mask)
    msg = str(info.value)
    assert "[-3, 7]" in msg and "outside brain" in msg and "enhancing tumour" in msg and "Fix" in msg
    assert isinstance(info.value, ValueError)
    with pytest.raises(UndeclaredLabelsError):
        spec.encode(mask)
    spec.validate(np.clip(mask, 0, 4))  # declared values only: no error


def test_many_undeclared_labels_are_summarised():
    spec = LabelSpec(names={0: "bg"}, encoding="onehot")
    with pytest.raises(UndeclaredLabelsError, match=r"and 80 more"):
        spec.validate(np.arange(101, dtype=np.int32).reshape(1, 1, 101))
    with pytest.raises(UndeclaredLabelsError, match="70000"):
        spec.validate(np.array([0, 70000, 5_000_000], dtype=np.int64).reshape(1, 1, 3))  # wide range path


def test_bool_masks_validate():
    spec = LabelSpec(names={0: "bg", 1: "lesion"}, encoding="onehot")
    spec.validate(np.array([[[True, False]]]))
    assert np.array_equal(spec.encode(np.array([[[True, False]]]))[0, :, 0, :], [[-1, 1], [1, -1]])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(names={}, encoding="onehot"), "at least one"),
        (dict(names={0: "a"}, encoding="binary"), "encoding"),
        (dict(names={0: "a"}, encoding="onehot", levels={0: 0.0}), "official"),
        (dict(names={0: "a", 1: "b"}, encoding="official", levels={0: 0.0}), "every declared label"),
        (dict(names={0: "a"}, encoding="official", levels={0: 0.0}), "max_level"),
        (dict(names={1.5: "a"}, encoding="onehot"), "integers"),
    ],
)
def test_label_spec_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LabelSpec(**kwargs)


def test_official_defaults_levels_identity_and_max():
    spec = LabelSpec(names={0: "bg", 1: "a", 2: "b"}, encoding="official")
    assert spec.levels == {0: 0.0, 1: 1.0, 2: 2.0} and spec.max_level == 2.0
    assert spec.encoded_values() == {0: -1.0, 1: 0.0, 2: 1.0}


@pytest.mark.parametrize(
    "spec",
    [official_brain_spec(), official_abdomen_spec(), LabelSpec({0: "bg", 3: "x"}, "onehot")],
)
def test_label_spec_json_round_trip(spec):
    text = json.dumps(spec.to_dict())
    assert '"0"' in text  # int keys become strings in JSON
    again = LabelSpec.from_dict(json.loads(text))
    assert again == spec
    zeros = np.zeros((1, 2, 2), np.uint8)
    assert np.array_equal(again.encode(zeros), spec.encode(zeros))


# ------------------------------------------------------------------------------------------ outside body
def _head_phantom():
    """Bright ball (r = 12) with a dark ventricle inside, a bright speck far outside, noise-free."""
    zz, yy, xx = np.mgrid[:40, :40, :40]
    r = np.sqrt((zz - 20) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2)
    image = np.where(r <= 12, 100.0, 5.0)
    image[r <= 3] = 10.0  # ventricle: a dark hole enclosed by the body
    image[1:3, 1:3, 1:3] = 120.0  # speck outside the body: not the largest component
    mask = np.zeros(image.shape, np.uint8)
    mask[(zz - 20) ** 2 + (yy - 25) ** 2 + (xx - 20) ** 2 <= 4] = 3  # lesion inside the body
    return image, mask, r


def test_outside_from_image_builds_body_and_outside():
    image, mask, r = _head_phantom()
    image_before, mask_before = image.copy(), mask.copy()
    out = outside_from_image(image, mask, outside_label=0, body_label=1)
    assert out.dtype == mask.dtype and out is not mask
    assert np.array_equal(image, image_before) and np.array_equal(mask, mask_before)
    assert np.all(out[mask == 3] == 3)  # lesions untouched
    assert np.all(out[(r <= 12) & (mask == 0)] == 1)  # body, ventricle hole filled
    assert np.all(out[r > 12.5] == 0)  # outside, including the bright speck
    assert out[1, 1, 1] == 0


def test_outside_from_image_custom_labels_and_threshold():
    image, mask, r = _head_phantom()
    out = outside_from_image(image.astype(np.float32), mask, outside_label=9, body_label=4, threshold=50.0)
    assert set(np.unique(out)) == {3, 4, 9}
    assert np.all(out[r > 12.5] == 9)


def test_outside_from_image_errors():
    image, mask, _ = _head_phantom()
    with pytest.raises(ValueError, match="already contains body_label"):
        outside_from_image(image, np.where(mask == 3, 1, 0).astype(np.uint8))
    with pytest.raises(ValueError, match="shape"):
        outside_from_image(image, mask[:-1])
    with pytest.raises(ValueError, match="constant"):
        outside_from_image(np.ones((4, 4, 4)), np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="dtype"):
        outside_from_image(image, mask, outside_label=-1)


def test_body_region_largest_component_with_holes_filled():
    image, _, r = _head_phantom()
    body = body_region(image)
    assert body.dtype == bool
    assert np.array_equal(body, r <= 12)


@pytest.mark.data
def test_outside_from_image_on_real_head_contains_the_brain():
    t1 = np.asarray(nib.load(require_data(ITK_DATA / "KmeansTest_T1UCharRaw.nii.gz")).dataobj)
    strip = nib.load(require_data(ITK_DATA / "KmeansTest_T1RawSkullStrip.nii.gz"))
    brain = np.asarray(strip.dataobj) > 0
    out = outside_from_image(t1, np.zeros(t1.shape, np.uint8))
    body = out == 1
    assert 0.1 < body.mean() < 0.9
    assert (body & brain).sum() >= 0.99 * brain.sum()  # the head contains the brain
    assert body.sum() > 1.2 * brain.sum()  # and is larger than it (skull, scalp)


# -------------------------------------------------------------------------------------------- hashing
def test_mask_hash_properties():
    mask = np.random.default_rng(1).integers(0, 4, size=(3, 4, 5)).astype(np.int16)
    h = mask_hash(mask)
    assert len(h) == 64 and int(h, 16) >= 0
    assert mask_hash(mask.copy()) == h
    assert mask_hash(mask.astype(">i2")) == h  # byte order does not matter
    assert mask_hash(np.asfortranarray(mask)) == h  # memory layout does not matter
    assert mask_hash(mask.astype(np.int32)) != h  # dtype does
    assert mask_hash(mask.reshape(4, 3, 5)) != h  # shape does
    changed = mask.copy()
    changed[2, 3, 4] += 1
    assert mask_hash(changed) != h
    assert mask_hash(mask[:, ::2]) == mask_hash(np.ascontiguousarray(mask[:, ::2]))
