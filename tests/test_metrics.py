"""Metrics: MS-SSIM/SSIM/PSNR, Fréchet distances and extractors, consistency, Dice/HD95."""

from __future__ import annotations

import os

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from napari_gem3d.volume import Volume


def smooth(shape, seed=0, sigma=2.0):
    rng = np.random.default_rng(seed)
    return gaussian_filter(rng.random(shape), sigma).astype(np.float32)


def noisy(x, level, seed=1):
    return x + level * np.random.default_rng(seed).standard_normal(x.shape).astype(np.float32)


# ----------------------------------------------------------------------------------------- MS-SSIM & co
@pytest.mark.parametrize(
    "shape",
    [
        (176, 176, 176),
        (160, 160, 160),
        (240, 240, 155),
        (64, 64, 64),
        (64, 64, 25),
        (32, 32, 155),
        (10, 10, 10),
        (200, 200, 7),
    ],
)
def test_ms_ssim_config_satisfies_monai_and_downsampling_limits(shape):
    from napari_gem3d.metrics.similarity import MS_SSIM_WEIGHTS, ms_ssim_config

    cfg = ms_ssim_config(shape)
    n = cfg.scales
    assert len(cfg.kernel_size) == 3 and all(k % 2 == 1 and 5 <= k <= 11 for k in cfg.kernel_size)
    for size, k in zip(shape, cfg.kernel_size, strict=True):
        assert size // max(1, (n - 1) ** 2) >= k  # MONAI's check
        assert size // 2 ** (n - 1) >= k  # the coarsest scale still holds one kernel
    assert sum(cfg.weights) == pytest.approx(1.0, abs=2e-4)
    assert cfg.weights == MS_SSIM_WEIGHTS[:n] or n < 5
    assert cfg.adapted == (cfg.kernel_size != (11, 11, 11) or n < 5)
    assert cfg.describe().startswith(f"{n} scale")


def test_ms_ssim_config_matches_documented_limits():
    """Reference notes §5.1: 176^3 works with the default, 160^3 needs kernel <= 9, 155 slices allow <= 9."""
    from napari_gem3d.metrics.similarity import ms_ssim_config

    assert ms_ssim_config((176, 176, 176)).kernel_size == (11, 11, 11)
    assert not ms_ssim_config((176, 176, 176)).adapted
    assert ms_ssim_config((160, 160, 160)).kernel_size == (9, 9, 9)
    assert ms_ssim_config((240, 240, 155)).kernel_size == (11, 11, 9)
    assert ms_ssim_config((240, 240, 155)).scales == 5
    with pytest.raises(ValueError, match="too small"):
        ms_ssim_config((3, 64, 64))


@pytest.mark.parametrize("shape", [(64, 64, 64), (64, 64, 25), (32, 32, 155)])
def test_ms_ssim_runs_where_monai_defaults_raise(shape):
    import torch
    from monai.metrics import MultiScaleSSIMMetric

    from napari_gem3d.metrics.similarity import ms_ssim

    x = smooth(shape)
    with pytest.raises(ValueError):  # what the adaptation is for
        MultiScaleSSIMMetric(spatial_dims=3)(torch.from_numpy(x)[None, None], torch.from_numpy(x)[None, None])
    same, cfg = ms_ssim(x, x, data_range=float(x.max() - x.min()))
    assert same == pytest.approx(1.0, abs=1e-5)
    worse, _ = ms_ssim(x, noisy(x, 0.02), data_range=float(x.max() - x.min()), config=cfg)
    assert worse < 0.99


def test_identical_volumes_and_monotonic_noise():
    from napari_gem3d.metrics.similarity import compare_volumes

    x = smooth((48, 48, 48)) * 1000.0  # source units; the real window maps to [0, 1]
    same = compare_volumes(x, x)
    assert same["ms_ssim"] == pytest.approx(1.0, abs=1e-5)
    assert same["ssim"] == pytest.approx(1.0, abs=1e-5)
    assert same["psnr_db"] == float("inf")
    span = float(np.percentile(x, 99.5) - np.percentile(x, 0.5))
    values = [compare_volumes(x, noisy(x, s * span))["ms_ssim"] for s in (0.01, 0.05, 0.2)]
    assert values[0] > values[1] > values[2]
    psnr = compare_volumes(x, noisy(x, 0.01 * span))["psnr_db"]
    assert 30 < psnr < 45  # noise std 0.01 of the window: PSNR ~ 40 dB before clipping


def test_data_range_is_explicit():
    """Rescaling both volumes changes nothing when the real window sets the range."""
    from napari_gem3d.metrics.similarity import compare_volumes

    x = smooth((40, 40, 30))
    y = noisy(x, 0.01)
    a, b = compare_volumes(x, y), compare_volumes(x * 250 + 7, y * 250 + 7)
    assert a["ms_ssim"] == pytest.approx(b["ms_ssim"], abs=1e-4)
    assert a["psnr_db"] == pytest.approx(b["psnr_db"], abs=1e-3)


def test_paired_metrics_refuse_different_shapes():
    from napari_gem3d.metrics.similarity import psnr

    with pytest.raises(ValueError, match="differ in shape"):
        psnr(np.zeros((8, 8, 8)), np.zeros((8, 8, 9)), data_range=1.0)


# ------------------------------------------------------------------------------------------------- FID
def test_frechet_distance_closed_form_1d():
    from napari_gem3d.metrics.fid import frechet_distance

    rng = np.random.default_rng(0)
    a, b = rng.normal(0.0, 1.0, (500, 1)), rng.normal(2.0, 3.0, (400, 1))
    m1, m2, s1, s2 = a.mean(), b.mean(), a.std(ddof=1), b.std(ddof=1)
    expected = (m1 - m2) ** 2 + s1**2 + s2**2 - 2 * s1 * s2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_subspace_reduction_is_exact():
    """Fewer samples than features: the rotated computation equals the full-matrix formula."""
    from scipy.linalg import sqrtm

    from napari_gem3d.metrics.fid import frechet_distance

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(15, 60)), rng.normal(size=(12, 60)) + 0.3
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    full = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(ca + cb - 2 * np.real(sqrtm(ca @ cb)))
    assert frechet_distance(a, b) == pytest.approx(full, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError, match="at least 2 samples"):
        frechet_distance(a[:1], b)


def _volumes(seeds, level=0.0, shape=(28, 32, 20)):
    return [
        Volume(noisy(smooth(shape, s), level, seed=s + 100), np.diag([1.0, 1.0, 2.0, 1.0])) for s in seeds
    ]


def test_fid_views_zero_for_identical_sets_and_grows_with_noise():
    from napari_gem3d.metrics.features import fallback_extractor
    from napari_gem3d.metrics.fid import fid_between

    ex = fallback_extractor(input_size=32)
    real = _volumes([0, 1])
    same = fid_between(real, real, ex)
    assert set(same) == {"FID-A", "FID-C", "FID-S"}
    assert all(v < 1e-6 for v in same.values())
    mild = fid_between(real, _volumes([0, 1], 0.02), ex)
    strong = fid_between(real, _volumes([0, 1], 0.3), ex)
    for k in same:
        assert 0 < mild[k] < strong[k]


def test_views_follow_anatomy_not_storage_order():
    """A copy stored flipped and transposed (same anatomy) gives the same view slices."""
    from napari_gem3d.metrics.fid import view_slices

    vol = _volumes([3])[0]
    arr = np.transpose(vol.array[::-1], (1, 0, 2))  # flip i, then swap i/j
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = vol.shape[0] - 1
    swap = np.eye(4)[[1, 0, 2, 3]]
    other = Volume(np.ascontiguousarray(arr), vol.affine @ flip @ swap)
    for view in ("axial", "coronal", "sagittal"):
        np.testing.assert_allclose(view_slices(vol, view, 32), view_slices(other, view, 32), atol=1e-6)
    assert view_slices(vol, "axial", 32).shape[0] == 20
    assert view_slices(vol, "sagittal", 32).shape[0] == 28
    assert view_slices(vol, "axial", 32, stride=3).shape[0] == 7


# ------------------------------------------------------------------------------------------ extractors
def test_radimagenet_architecture_random_weights():
    import torch

    from napari_gem3d.metrics.features import (
        RadImageNetResNet50,
        radimagenet_extractor,
        radimagenet_preprocess,
    )

    model = RadImageNetResNet50()
    trainable = sum(p.numel() for p in model.parameters())
    stats = sum(b.numel() for n, b in model.named_buffers() if not n.endswith("num_batches_tracked"))
    assert (trainable, stats) == (23_534_592, 53_120)  # Keras ResNet50(include_top=False): 23,587,712 in all
    assert all(m.bias is not None for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert all(
        m.eps == pytest.approx(1.001e-5) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)
    )
    assert {"layer1.0.downsample.0.weight", "layer4.2.bn3.running_var", "conv1.bias"} <= set(
        model.state_dict()
    )
    assert model.layer2[0].conv1.stride == (2, 2) and model.layer2[0].conv2.stride == (1, 1)

    ex = radimagenet_extractor(None, input_size=64)
    feats = ex(np.random.default_rng(0).random((3, 64, 64)).astype(np.float32))
    assert feats.shape == (3, 2048) and np.all(np.isfinite(feats))
    assert "random weights" in ex.name

    x = torch.full((1, 1, 2, 2), 0.5)
    pre = radimagenet_preprocess(x)
    np.testing.assert_allclose(pre[0, :, 0, 0].numpy(), [0.5 - 0.406, 0.5 - 0.456, 0.5 - 0.485], atol=1e-7)
    rgb = torch.stack([torch.full((2, 2), v) for v in (0.1, 0.2, 0.3)])[None]
    np.testing.assert_allclose(
        radimagenet_preprocess(rgb)[0, :, 0, 0].numpy(), [0.3 - 0.406, 0.2 - 0.456, 0.1 - 0.485], atol=1e-7
    )


def test_radimagenet_loads_a_weights_file(tmp_path):
    import torch
    from safetensors.torch import save_file

    from napari_gem3d.metrics.features import RadImageNetResNet50, radimagenet_extractor

    torch.manual_seed(0)
    src = RadImageNetResNet50().eval()
    state = {f"module.{k}": v.clone() for k, v in src.state_dict().items() if "num_batches" not in k}
    save_file(state, str(tmp_path / "rin.safetensors"))
    torch.save(state, tmp_path / "rin.pth")
    x = np.random.default_rng(1).random((2, 48, 48)).astype(np.float32)
    a = radimagenet_extractor(tmp_path / "rin.safetensors", input_size=48)(x)
    b = radimagenet_extractor(tmp_path / "rin.pth", input_size=48)(x)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    with torch.inference_mode():
        from napari_gem3d.metrics.features import radimagenet_preprocess

        ref = src(radimagenet_preprocess(torch.from_numpy(x)[:, None])).mean(dim=(2, 3)).double().numpy()
    np.testing.assert_allclose(a, ref, rtol=1e-5, atol=1e-6)

    save_file({"conv1.weight": torch.zeros(64, 3, 7, 7)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="not a RadImageNet ResNet-50 notop"):
        radimagenet_extractor(tmp_path / "bad.safetensors")
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        radimagenet_extractor(tmp_path / "missing.pth")


def test_fallback_extractor_is_fixed_and_named():
    from napari_gem3d.metrics.features import fallback_extractor, make_extractor

    a, b = fallback_extractor(input_size=32), make_extractor("fallback", input_size=32)
    x = np.random.default_rng(2).random((4, 32, 32)).astype(np.float32)
    fa = a(x)
    assert fa.shape == (4, 480)
    np.testing.assert_array_equal(fa, b(x))
    assert a.name == b.name and "offline fallback" in a.name and "sha256" in a.name
    assert fallback_extractor(seed=1).name != a.name
    assert np.all(a(np.zeros((2, 32, 32), np.float32)) == 0)  # no bias: blank slices give zero features
    with pytest.raises(ValueError, match="--weights"):
        make_extractor("radimagenet")


def test_deepbet_encoder_3d():
    from napari_gem3d.metrics.features import deepbet_extractor

    try:
        ex = deepbet_extractor()
    except ModuleNotFoundError:
        if os.environ.get("GEM3D_REQUIRE_DATA", "") not in ("", "0"):
            pytest.fail("deepbet is required (GEM3D_REQUIRE_DATA is set): pip install deepbet")
        pytest.skip("deepbet not installed (optional: pip install deepbet)")
    vol = _volumes([5], shape=(40, 44, 36))[0]
    f = ex(vol)
    assert f.shape == (192,) and np.all(np.isfinite(f)) and "deepbet" in ex.name


# ----------------------------------------------------------------------------------------- consistency
def test_shuffled_slices_raise_adjacent_difference():
    from napari_gem3d.metrics.consistency import consistency

    real = _volumes([7], shape=(24, 24, 40))[0]
    order = np.random.default_rng(0).permutation(40)
    shuffled = real.with_array(real.array[:, :, order])  # axis 2 is S in this affine
    same = consistency(real, real)
    assert same.ratio == pytest.approx(1.0)
    worse = consistency(real, shuffled)
    assert worse.ratio > 1.5
    assert worse.generated_profile.shape == (39,)


def test_seam_ratio_and_window_seams():
    from napari_gem3d.metrics.consistency import seam_ratio, window_seams

    profile = np.full(59, 0.1)
    profile[[7, 22, 38, 53]] = 0.3  # jumps between slices b-1 and b
    assert seam_ratio(profile, [8, 23, 39, 54]) == pytest.approx(3.0)
    assert seam_ratio(profile, [10, 30]) < 1.2
    assert np.isnan(seam_ratio(profile, []))
    # window 16, overlap 1, start 30, 60 slices, a result made before the plan recorded its first window (centred
    # then): first 23..38, up 39..53 then 54..59, down 8..22, 0..7
    prov = {"window": 16, "overlap": 1, "start_slice": 30, "mode": "gem3d"}
    assert window_seams(60, prov) == [8, 23, 39, 54]
    # the same made now: the first window at 15..30 (the fewest windows), up 31..45, 46..59, down 0..14
    assert window_seams(60, {**prov, "first_window_start": 15}) == [15, 31, 46]
    assert window_seams(60, {}) == []


# ------------------------------------------------------------------------------------------ Dice / HD95
def test_dice_and_hd95():
    from napari_gem3d.metrics.segmentation import dice_per_label, hd95_per_label

    a = np.zeros((20, 20, 20), np.uint8)
    a[5:15, 5:15, 5:15] = 1
    a[1:3, 1:3, 1:3] = 2
    assert dice_per_label(a, a) == {1: 1.0, 2: 1.0}
    assert hd95_per_label(a, a, (1.0, 1.0, 2.0)) == {1: 0.0, 2: 0.0}
    b = np.zeros_like(a)
    b[6:16, 5:15, 5:15] = 1  # shifted one voxel along axis 0
    d = dice_per_label(b, a, labels=[1, 2])
    assert d[1] == pytest.approx(2 * 900 / 2000, abs=1e-6)
    assert d[2] == 0.0  # missed entirely
    assert hd95_per_label(b, a, (2.0, 1.0, 1.0), labels=[1])[1] == pytest.approx(2.0)  # one voxel of 2 mm


def test_stripe_index_is_one_for_the_real_volume_and_rises_with_slice_stripes():
    from napari_gem3d.metrics.consistency import stripe_index

    rng = np.random.default_rng(0)
    real = gaussian_filter(rng.normal(size=(48, 48, 40)), 3.0).astype(np.float32)
    affine = np.diag([1.0, 1.0, 2.0, 1.0])  # stored axis 2 is S: the slice axis
    vol = Volume(real, affine)
    assert stripe_index(vol, vol) == pytest.approx(1.0)
    striped = real + 0.3 * real.std() * rng.normal(size=(1, 1, 40)).astype(np.float32)  # one offset per S slice
    assert stripe_index(Volume(striped, affine), vol) > 1.5
    blurred_across = gaussian_filter(real, (0, 0, 2.0))  # smoother along S than in plane
    assert stripe_index(Volume(blurred_across, affine), vol) < 0.9


def test_the_stripe_index_parts_tell_in_plane_blur_from_stripes():
    """Blur within slices raises the index too; its parts say which: in-plane ratio low, slice-axis ratio ~1."""
    from napari_gem3d.metrics.consistency import axis_ratios, stripe_index

    rng = np.random.default_rng(1)
    real = gaussian_filter(rng.normal(size=(48, 48, 40)), 2.0).astype(np.float32)
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    vol = Volume(real, affine)
    blurred_in_plane = Volume(gaussian_filter(real, (1.5, 1.5, 0)), affine)
    across, within = axis_ratios(blurred_in_plane, vol)
    assert within < 0.85 and abs(across - 1.0) < 0.1  # the slices change as much from one to the next
    assert stripe_index(blurred_in_plane, vol) == pytest.approx(across / within)
    assert stripe_index(blurred_in_plane, vol) > 1.2
    striped = Volume(real + 0.3 * real.std() * rng.normal(size=(1, 1, 40)).astype(np.float32), affine)
    across_s, within_s = axis_ratios(striped, vol)
    assert across_s > 1.3 and abs(within_s - 1.0) < 0.15


# ------------------------------------------------------------------------------ reading of a profile
SEAMS = [8, 16, 24, 32]  # window boundaries b: the pair of slices (b-1, b) along S


def _along_s(array):
    return Volume(array, np.diag([1.0, 1.0, 2.0, 1.0]))  # stored axis 2 is S: the slice axis


def _stepped(x, starts, step):
    """``x`` with an intensity step starting at each slice of ``starts`` (a jump between b-1 and b)."""
    out = x.copy()
    for k, b in enumerate(starts):
        out[:, :, b:] += step * (-1) ** k  # alternate up and down: the volume stays in range
    return out


def test_reading_finds_seams_at_the_window_boundaries():
    from napari_gem3d.metrics.consistency import SEAM_EXCESS, consistency, read_profile

    real = smooth((24, 24, 40), seed=3)
    seamy = _along_s(_stepped(real, SEAMS, 0.5 * real.std()))
    c = consistency(_along_s(real), seamy, boundaries=SEAMS)
    alone = read_profile(c.generated_profile, SEAMS)
    assert alone.seams and alone.at_boundary and alone.seam_ratio > 1 + SEAM_EXCESS
    assert alone.largest + 1 in SEAMS
    assert "seams at window boundaries" in alone.text.lower() and "at a window boundary" in alone.text.lower()
    against = c.reading()
    assert against.seams and against.seam_ratio > (1 + SEAM_EXCESS) * against.reference_seam_ratio
    assert f"{against.reference_seam_ratio:.1f}×" in against.text.lower()


def test_reading_places_a_jump_inside_a_window():
    from napari_gem3d.metrics.consistency import read_profile

    real = smooth((24, 24, 40), seed=4)
    jumpy = _stepped(real, [20], real.std())  # slice 20 is inside the window 16..23
    profile = _profile(jumpy)
    reading = read_profile(profile, SEAMS)
    assert reading.jump and not reading.at_boundary and not reading.seams
    assert reading.largest == 19
    assert "no seam at window boundaries" in reading.text.lower()
    assert "slices 19–20" in reading.text.lower() and "inside a window (not at a boundary)" in reading.text.lower()


def _profile(array):
    from napari_gem3d.metrics.consistency import adjacent_difference_profile, oriented
    from napari_gem3d.metrics.similarity import DEFAULT_NORM

    slices = oriented(_along_s(array))
    return adjacent_difference_profile(slices, DEFAULT_NORM.fit(slices))


def test_reading_of_a_smooth_volume_has_no_seam_and_no_jump():
    from napari_gem3d.metrics.consistency import read_profile

    reading = read_profile(_profile(smooth((24, 24, 40), seed=5)), SEAMS)
    assert not reading.seams and not reading.jump
    assert "no seam at window boundaries" in reading.text.lower() and "no isolated jump" in reading.text.lower()
    assert "source" not in reading.text.lower()  # nothing to compare with


def test_reading_with_a_reference_reports_the_change_against_the_source():
    from napari_gem3d.metrics.consistency import SAME_CHANGE, consistency

    rng = np.random.default_rng(6)
    real = smooth((24, 24, 40), seed=6)
    flicker = real + 0.4 * real.std() * rng.normal(size=(1, 1, 40)).astype(np.float32)  # one offset a slice
    c = consistency(_along_s(real), _along_s(flicker), boundaries=SEAMS)
    reading = c.reading()
    assert reading.change_ratio == pytest.approx(c.ratio) and c.ratio > 1 + SAME_CHANGE
    assert f"slice-to-slice change {c.ratio:.1f}× the source's (flicker)" in reading.text.lower()
    same = consistency(_along_s(real), _along_s(real), boundaries=SEAMS).reading()
    assert "1.0× the source's;" in same.text.lower() and not same.seams
    # anatomy that changes at a boundary in the source too is not a seam of the generation
    both = _stepped(real, [16], real.std())
    anatomy = consistency(_along_s(both), _along_s(both + 0.01), boundaries=SEAMS).reading()
    assert anatomy.seam_ratio > 1.2 and not anatomy.seams and anatomy.reference_jumps_there
    text = anatomy.text.lower()
    assert "no seam at window boundaries" in text and "where the source jumps too" in text


def test_the_stripe_index_is_measured_on_the_model_grid_not_the_scans():
    """A generation made on a 64 x 64 grid and upsampled to a 256 x 256 scan is not blurry for that alone:
    both are compared on 64 x 64 slices (STRIPE_GRID)."""
    from skimage.transform import resize

    from napari_gem3d.metrics.consistency import STRIPE_GRID, axis_ratios

    rng = np.random.default_rng(2)
    real = gaussian_filter(rng.normal(size=(256, 256, 20)), (1.0, 1.0, 0.6)).astype(np.float32)
    affine = np.diag([0.8, 0.8, 6.5, 1.0])
    coarse = resize(real, (STRIPE_GRID, STRIPE_GRID, 20), order=1, anti_aliasing=True)
    upsampled = resize(coarse, real.shape, order=1).astype(np.float32)
    across, within = axis_ratios(Volume(upsampled, affine), Volume(real, affine))
    # measured at the scans' 256 x 256 the in-plane ratio is 0.44 (the grid's lost detail); on the grid, the
    # interpolations' own smoothing is what remains
    assert within > 0.7 and abs(across - 1.0) < 0.05
