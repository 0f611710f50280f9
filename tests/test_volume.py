"""Volume, model grid (reorient / fit / pad and back) and intensity normalisation."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import axcodes2ornt

from data_files import require_data
from napari_gem3d.volume import (
    MODEL_AXCODES,
    FittedNorm,
    IntensityNorm,
    ModelGrid,
    Volume,
    from_model,
    model_frame_affine,
    model_grid,
    to_model,
)

ITK_DATA = Path("/usr/share/doc/insighttoolkit5-examples/examples/Data")


def make_affine(codes, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Affine whose voxel axes point along ``codes`` (e.g. 'LSA'), built by hand from the axis codes."""
    affine = np.eye(4)
    affine[:3, :3] = 0
    for voxel_axis, (world_axis, sign) in enumerate(axcodes2ornt(tuple(codes))):
        affine[int(world_axis), voxel_axis] = sign * spacing[voxel_axis]
    affine[:3, 3] = origin
    return affine


def expected_model_codes(codes, slice_axis):
    if slice_axis == "k":
        return (codes[2], codes[1], codes[0])
    return MODEL_AXCODES[slice_axis]


_OPPOSITE = {"L": "R", "R": "L", "A": "P", "P": "A", "S": "I", "I": "S"}


def oriented_shape_by_hand(shape, codes, slice_axis):
    """(Z, H, W) read off the axis codes: which stored axis runs along each model-frame code."""
    target = expected_model_codes(codes, slice_axis)
    out = []
    for letter in target:
        axis = next(i for i, c in enumerate(codes) if c in (letter, _OPPOSITE[letter]))
        out.append(shape[axis])
    return tuple(out)


ORIENTATIONS = ["RAS", "LAS", "LSA", "LPS", "PIR"]
SLICE_AXES = ["S", "A", "R", "k"]


# ------------------------------------------------------------------------------------------- Volume
def test_volume_properties_lsa_anisotropic():
    affine = make_affine("LSA", spacing=(2.0, 2.0, 3.0), origin=(0, -254, 0))
    vol = Volume(np.zeros((4, 5, 6), np.int16), affine)
    assert vol.shape == (4, 5, 6)
    assert vol.spacing == (2.0, 2.0, 3.0)
    assert vol.axcodes == ("L", "S", "A")


def test_volume_keeps_callers_array_and_copies_affine():
    array = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    affine = np.diag([1.0, 2.0, 3.0, 1.0])
    vol = Volume(array, affine)
    assert vol.array is array
    affine[0, 0] = 99.0
    assert vol.affine[0, 0] == 1.0
    with pytest.raises(ValueError):
        vol.affine[0, 0] = 5.0  # read-only


@pytest.mark.parametrize("shape", [(4, 5), (4, 5, 6, 2), (4, 5, 6, 1)])
def test_volume_rejects_non_3d(shape):
    with pytest.raises(ValueError, match=r"3-D") as info:
        Volume(np.zeros(shape), np.eye(4))
    if len(shape) == 4:
        assert "pick one" in str(info.value)


@pytest.mark.parametrize(
    "affine, match",
    [
        (np.eye(3), "4, 4"),
        (np.diag([1.0, np.nan, 1.0, 1.0]), "NaN"),
        (np.diag([1.0, 0.0, 1.0, 1.0]), "not invertible"),
        (np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 1.0]]), "last row"),
    ],
)
def test_volume_rejects_bad_affine(affine, match):
    with pytest.raises(ValueError, match=match):
        Volume(np.zeros((2, 2, 2)), affine)


def test_with_array_keeps_geometry_and_merges_header():
    vol = Volume(np.zeros((2, 3, 4)), make_affine("LPS", (1, 2, 3)), {"a": 1, "provenance": {"x": 1}})
    new = vol.with_array(np.ones((2, 3, 4), np.float32), a=2, b=3)
    assert np.array_equal(new.affine, vol.affine)
    assert new.header["a"] == 2 and new.header["b"] == 3 and new.header["provenance"] == {"x": 1}
    assert vol.header["a"] == 1 and "b" not in vol.header
    with pytest.raises(ValueError, match="same shape"):
        vol.with_array(np.zeros((4, 3, 2)))


# --------------------------------------------------------------------------------------- model grid
def test_model_axcodes_are_the_documented_ones():
    assert MODEL_AXCODES == {"S": ("S", "P", "L"), "A": ("A", "I", "L"), "R": ("R", "I", "P")}


def _labels(shape, seed=0, high=7):
    return np.random.default_rng(seed).integers(0, high, size=shape).astype(np.int16)


@pytest.mark.parametrize("codes", ORIENTATIONS)
@pytest.mark.parametrize("slice_axis", SLICE_AXES)
def test_labels_round_trip_without_resize_is_exact(codes, slice_axis):
    shape = (7, 9, 11)
    array = _labels(shape)
    array.flags.writeable = False  # any write into the caller's data would raise
    vol = Volume(array, make_affine(codes, origin=(3, -4, 5)))
    z, h, w = oriented_shape_by_hand(shape, codes, slice_axis)
    grid = model_grid(vol, (h, w), slice_axis)
    assert grid.oriented_shape == (z, h, w)
    assert grid.num_slices == z
    assert grid.axcodes == expected_model_codes(codes, slice_axis)
    model = to_model(vol, grid, "labels")
    assert model.shape == (z, h, w) and model.dtype == np.int16
    back = from_model(model, grid, "labels")
    assert back.shape == shape
    assert np.array_equal(back.affine, vol.affine)
    assert np.array_equal(back.array, array)
    assert back.array.dtype == array.dtype
    assert not np.shares_memory(back.array, model)


@pytest.mark.parametrize("codes", ORIENTATIONS)
@pytest.mark.parametrize("slice_axis", SLICE_AXES)
def test_model_array_and_model_affine_agree_with_source_geometry(codes, slice_axis):
    """Every model voxel holds the source voxel found at the same world position."""
    shape = (5, 6, 7)
    source = np.arange(np.prod(shape), dtype=np.int32).reshape(shape)
    vol = Volume(source, make_affine(codes, spacing=(1.5, 1.5, 1.5), origin=(10, 20, -30)))
    z, h, w = oriented_shape_by_hand(shape, codes, slice_axis)
    grid = model_grid(vol, (h, w), slice_axis)
    model = to_model(vol, grid, "labels")
    model_affine = model_frame_affine(grid)
    assert nib.aff2axcodes(model_affine) == expected_model_codes(codes, slice_axis)
    zz, rr, cc = np.meshgrid(*map(np.arange, model.shape), indexing="ij")
    model_idx = np.stack([zz.ravel(), rr.ravel(), cc.ravel(), np.ones(zz.size)])
    src_idx = np.linalg.inv(vol.affine) @ model_affine @ model_idx
    rounded = np.rint(src_idx[:3]).astype(int)
    assert np.allclose(src_idx[:3], rounded, atol=1e-9)
    assert np.array_equal(model.ravel(), source[tuple(rounded)])


@pytest.mark.parametrize("codes", ["RAS", "LPS", "LSA", "PIR"])
@pytest.mark.parametrize("slice_axis", ["S", "A", "R"])
def test_model_frame_directions_follow_anatomy(codes, slice_axis):
    """Fill the image with world coordinates and check along which anatomy each model axis increases."""
    shape = (6, 7, 8)
    affine = make_affine(codes, spacing=(1.0, 1.0, 1.0), origin=(-3, 2, 7))
    ijk = np.stack(np.meshgrid(*map(np.arange, shape), indexing="ij"), axis=-1)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    _, h, w = oriented_shape_by_hand(shape, codes, slice_axis)
    direction = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}
    for world_axis in range(3):
        vol = Volume(world[..., world_axis].astype(np.float32), affine)
        grid = model_grid(vol, (h, w), slice_axis)
        model = to_model(vol, grid, "image")
        for model_axis, letter in enumerate(MODEL_AXCODES[slice_axis]):
            axis, sign = direction[letter]
            steps = np.diff(model, axis=model_axis)
            expected = sign if axis == world_axis else 0
            assert np.allclose(steps, expected), (letter, world_axis)


def test_stored_order_k_is_the_simpleitk_transpose():
    array = _labels((4, 6, 5))
    vol = Volume(array, make_affine("LSA", spacing=(2, 2, 3)))
    grid = model_grid(vol, (6, 4), "k")
    assert np.array_equal(to_model(vol, grid, "labels"), array.transpose(2, 1, 0))


@pytest.mark.parametrize("codes", ["LAS", "LSA", "LPS"])
@pytest.mark.parametrize("slice_axis", ["S", "A", "R"])
def test_labels_round_trip_with_integer_upsampling_anisotropic(codes, slice_axis):
    """Anisotropic 2x2x3 mm: model pixels of 1 mm up-sample rows and columns by integers -> exact."""
    shape, spacing = (6, 8, 5), (2.0, 2.0, 3.0)
    vol = Volume(_labels(shape, seed=1), make_affine(codes, spacing=spacing))
    target = MODEL_AXCODES[slice_axis]
    extents = []
    for letter in target[1:]:
        axis = next(i for i, c in enumerate(codes) if c in (letter, _OPPOSITE[letter]))
        extents.append(int(shape[axis] * spacing[axis]))
    grid = model_grid(vol, tuple(extents), slice_axis)  # 1 mm model pixels
    assert grid.resized_shape == tuple(extents) and grid.pad == ((0, 0), (0, 0))
    model = to_model(vol, grid, "labels")
    assert np.allclose(np.linalg.norm(model_frame_affine(grid)[:3, 1:3], axis=0), 1.0)
    back = from_model(model, grid, "labels")
    assert np.array_equal(back.array, vol.array)


@pytest.mark.parametrize("factor", [2, 3])
def test_labels_round_trip_with_padding_and_upsampling(factor):
    shape = (9, 4, 6)  # RAS: slice S has 6, rows P has 4, cols L has 9
    vol = Volume(_labels(shape, seed=2), np.diag([1.0, 1.0, 1.0, 1.0]))
    grid = model_grid(vol, 9 * factor, "S")
    assert grid.resized_shape == (4 * factor, 9 * factor)
    (top, bottom), (left, right) = grid.pad
    assert top + bottom == 5 * factor and abs(top - bottom) <= 1 and left == right == 0
    model = to_model(vol, grid, "labels", pad_value=5)
    assert np.all(model[:, :top] == 5) and np.all(model[:, model.shape[1] - bottom :] == 5)
    assert np.array_equal(from_model(model, grid, "labels").array, vol.array)
    # the model affine puts every model pixel centre inside the source voxel it was copied from
    zz, rr, cc = np.meshgrid(*map(np.arange, model.shape), indexing="ij")
    idx = np.stack([zz.ravel(), rr.ravel(), cc.ravel(), np.ones(zz.size)])
    src = (np.linalg.inv(vol.affine) @ model_frame_affine(grid) @ idx)[:3]
    inside = np.all((src > -0.5) & (src < np.array(shape)[:, None] - 0.5), axis=0)
    assert inside.sum() == vol.array.size * factor**2
    assert np.all(model.ravel()[~inside] == 5)
    nearest = np.rint(src[:, inside]).astype(int)
    assert np.array_equal(model.ravel()[inside], vol.array[tuple(nearest)])


def _disk_volume(shape, spacing, radius_mm):
    ijk = np.stack(np.meshgrid(*map(np.arange, shape), indexing="ij"), axis=-1).astype(float)
    centre = (np.array(shape) - 1) / 2
    mm = (ijk - centre) * np.array(spacing)
    inside = (mm[..., 0] ** 2 + mm[..., 1] ** 2) <= radius_mm**2  # a cylinder along axis 2 (S)
    return Volume(inside.astype(np.uint8), np.diag([*spacing, 1.0]))


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 2.0), (1.0, 2.0, 2.0)])
def test_aspect_ratio_is_preserved_in_millimetres(spacing):
    """A round cross-section stays round in the model grid (no stretching), even with anisotropic
    in-plane pixels and a non-square field of view."""
    shape = (48, 20, 3)  # 48 mm x 20/40 mm in-plane
    vol = _disk_volume(shape, spacing, radius_mm=9.0)
    grid = model_grid(vol, 96, "S")
    model = to_model(vol, grid, "labels")
    disk = model[1]
    height = np.flatnonzero(disk.any(axis=1)).size  # model rows run along P = stored axis 1
    width = np.flatnonzero(disk.any(axis=0)).size  # model cols run along L = stored axis 0
    src = vol.array[..., 1].astype(bool)
    src_rows_mm = np.flatnonzero(src.any(axis=0)).size * spacing[1]
    src_cols_mm = np.flatnonzero(src.any(axis=1)).size * spacing[0]
    px = np.linalg.norm(model_frame_affine(grid)[:3, 1:3], axis=0)
    assert np.allclose(px[0], px[1], rtol=0.05)  # square model pixels
    assert abs(height * px[0] - src_rows_mm) <= px[0] + 1e-6
    assert abs(width * px[1] - src_cols_mm) <= px[1] + 1e-6


def test_image_resize_is_float32_with_anti_aliasing_when_shrinking():
    noise = np.random.default_rng(3).standard_normal((2, 64, 64)).astype(np.float32)
    vol = Volume(noise.transpose(2, 1, 0).copy(), make_affine("LPS"))  # 'S' frame = (k, j, i) for LPS
    grid = model_grid(vol, 16, "S")
    small = to_model(vol, grid, "image")
    assert small.dtype == np.float32 and small.shape == (2, 16, 16)
    assert small.std() < 0.35  # without the anti-aliasing Gaussian, point samples of the noise keep std ~ 1
    assert np.array_equal(to_model(vol, model_grid(vol, 64, "S"), "image"), noise)


def test_image_round_trip_with_resize_is_close_and_in_source_units():
    x = np.linspace(0, 2 * np.pi, 40)
    smooth = (1000 + 200 * np.sin(x)[:, None, None] * np.cos(x)[None, :, None]) * np.ones((40, 40, 3))
    vol = Volume(smooth.astype(np.int16), np.diag([1.0, 1.0, 2.0, 1.0]))
    grid = model_grid(vol, 96, "S")
    model = to_model(vol, grid, "image")
    assert model.min() >= 790 and model.max() <= 1210
    back = from_model(model, grid, "image")
    assert back.array.dtype == np.float32
    error = np.abs(back.array - vol.array)
    assert error.max() < 0.05 * 400  # 5 % of the intensity range (mirror boundary of the resize)
    assert error[2:-2, 2:-2].max() < 0.01 * 400  # 1 % away from the in-plane border


def test_image_pad_value_defaults_to_minimum():
    array = np.full((10, 4, 2), 50.0, np.float32)
    array[0, 0, 0] = -7.0
    vol = Volume(array, np.eye(4))
    grid = model_grid(vol, 10, "S")
    model = to_model(vol, grid, "image")
    (top, _), _ = grid.pad
    assert top > 0 and np.all(model[:, :top] == -7.0)
    assert np.all(to_model(vol, grid, "image", pad_value=3.5)[:, :top] == 3.5)


def test_label_pad_value_must_fit_dtype():
    vol = Volume(np.zeros((10, 4, 2), np.uint8), np.eye(4))
    grid = model_grid(vol, 10, "S")
    with pytest.raises(ValueError, match="pad_value"):
        to_model(vol, grid, "labels", pad_value=-1)


def test_grid_checks_volume_geometry_and_model_shape():
    vol = Volume(np.zeros((4, 4, 4), np.uint8), np.eye(4))
    grid = model_grid(vol, 4, "S")
    with pytest.raises(ValueError, match="shape"):
        to_model(Volume(np.zeros((4, 4, 5), np.uint8), np.eye(4)), grid, "labels")
    with pytest.raises(ValueError, match="affine"):
        to_model(Volume(np.zeros((4, 4, 4), np.uint8), np.diag([2.0, 1, 1, 1])), grid, "labels")
    with pytest.raises(ValueError, match=r"\(Z, h, w\)"):
        from_model(np.zeros((4, 5, 4)), grid, "labels")
    with pytest.raises(ValueError, match="kind"):
        to_model(vol, grid, "mask")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [dict(size=0), dict(size=(4, 4, 4)), dict(size=4.5), dict(slice_axis="X")])
def test_model_grid_rejects_bad_arguments(bad):
    vol = Volume(np.zeros((4, 4, 4)), np.eye(4))
    kwargs = {"size": 4, "slice_axis": "S", **bad}
    with pytest.raises(ValueError):
        model_grid(vol, **kwargs)


def test_model_grid_equality_and_hash():
    vol = Volume(np.zeros((4, 6, 8)), make_affine("LAS", (1, 1, 2)))
    a, b = model_grid(vol, 16, "S"), model_grid(vol, 16, "S")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != model_grid(vol, 32, "S") and a != model_grid(vol, 16, "A")
    assert isinstance(a, ModelGrid)
    json.dumps(a.to_dict())


@pytest.mark.data
@pytest.mark.parametrize("slice_axis, size", [("S", 256), ("A", 128), ("A", 256), ("R", 256)])
def test_itk_kmeans_labels_round_trip_exact(slice_axis, size):
    """Real LSA 2x2x3 mm head: 1 mm (or native 2 mm) model pixels are integer up-samplings -> exact."""
    img = nib.load(require_data(ITK_DATA / "KmeansTest_T1KmeansPrelimSegmentation.nii.gz"))
    labels = np.asarray(img.dataobj)
    vol = Volume(labels, img.affine)
    assert vol.axcodes == ("L", "S", "A")
    grid = model_grid(vol, size, slice_axis)
    assert grid.axcodes == MODEL_AXCODES[slice_axis]
    model = to_model(vol, grid, "labels")
    assert model.dtype == labels.dtype
    back = from_model(model, grid, "labels")
    assert np.array_equal(back.array, labels)
    assert np.array_equal(back.affine, vol.affine)


@pytest.mark.data
def test_itk_kmeans_axial_model_grid_geometry_and_intensity():
    img = nib.load(require_data(ITK_DATA / "KmeansTest_T1UCharRaw.nii.gz"))
    vol = Volume(np.asarray(img.dataobj), img.affine)
    grid = model_grid(vol, 256, "S")
    # axial: 128 slices (stored axis 1, 2 mm), rows P = 62 x 3 mm = 186 mm, cols L = 128 x 2 mm = 256 mm
    assert grid.oriented_shape == (128, 62, 128)
    assert grid.resized_shape == (186, 256) and sum(grid.pad[0]) == 70
    model = to_model(vol, grid, "image", pad_value=0.0)
    top = grid.pad[0][0]
    inner = model[:, top : top + 186]
    assert abs(inner.mean() - vol.array.mean()) < 0.01 * vol.array.mean()
    centre_world = vol.affine @ np.array([*(np.array(vol.shape) - 1) / 2, 1])
    centre_model = np.linalg.inv(model_frame_affine(grid)) @ centre_world
    assert np.allclose(centre_model[:3], [63.5, 127.5, 127.5], atol=0.51)


# -------------------------------------------------------------------------------- intensity normalisation
def test_percentile_norm_on_known_values():
    ramp = np.arange(1001, dtype=np.int16)
    fitted = IntensityNorm("percentile").fit(ramp)
    assert fitted.lo == pytest.approx(5.0) and fitted.hi == pytest.approx(995.0)
    out = fitted.forward(np.array([0, 5, 500, 995, 1000]))
    assert out.dtype == np.float32
    assert np.allclose(out, [-1, -1, 0, 1, 1])
    assert np.allclose(fitted.inverse(np.array([-1.0, 0.0, 1.0, 3.0])), [5, 500, 995, 995])


def test_percentile_norm_inside_mask_only():
    image = np.zeros((10, 10, 10), np.float32)
    image[2:8, 2:8, 2:8] = np.linspace(100, 200, 216).reshape(6, 6, 6)
    body = image > 0
    without = IntensityNorm("percentile", 1, 99).fit(image)
    inside = IntensityNorm("percentile", 1, 99).fit(image, mask=body)
    assert without.lo == 0.0
    assert 100 <= inside.lo < 102 and 198 < inside.hi <= 200


def test_window_and_minmax_norms():
    ct = IntensityNorm("window", -1000, 1000).fit(np.zeros((2, 2, 2)))
    assert np.allclose(ct.forward(np.array([-2000, -1000, 0, 1000, 3000])), [-1, -1, 0, 1, 1])
    image = np.array([[[3.0, 7.0], [5.0, 11.0]]])
    mm = IntensityNorm("minmax").fit(image)
    assert (mm.lo, mm.hi) == (3.0, 11.0)
    assert np.allclose(mm.forward(image), [[[-1, 0], [-0.5, 1]]])
    assert np.allclose(mm.inverse(mm.forward(image)), image)


def test_norm_does_not_modify_input_and_ignores_nan():
    image = np.array([1.0, 2.0, np.nan, 3.0])
    copy = image.copy()
    fitted = IntensityNorm("minmax").fit(image)
    fitted.forward(image)
    assert (fitted.lo, fitted.hi) == (1.0, 3.0)
    assert np.array_equal(image, copy, equal_nan=True)


@pytest.mark.parametrize("kind", ["percentile", "minmax"])
def test_constant_image_is_a_clear_error(kind):
    with pytest.raises(ValueError, match="constant"):
        IntensityNorm(kind).fit(np.full((3, 3, 3), 7.0))


def test_norm_validation_and_serialisation():
    with pytest.raises(ValueError, match="kind"):
        IntensityNorm("zscore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="low < high"):
        IntensityNorm("window", 100, -100)
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        IntensityNorm("percentile", -1, 99)
    with pytest.raises(ValueError):
        IntensityNorm("minmax").fit(np.zeros((2, 2)), mask=np.zeros((2, 2), bool))
    norm = IntensityNorm("window", -160, 240)
    assert IntensityNorm.from_dict(json.loads(json.dumps(norm.to_dict()))) == norm
    fitted = FittedNorm(-2.5, 4.0)
    assert FittedNorm.from_dict(json.loads(json.dumps(fitted.to_dict()))) == fitted
