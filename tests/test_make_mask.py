"""gem3d make-mask: tissue GMM under a bias field, lesion splitting/naming/translation, geometry, the CLI."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import ndimage

from data_files import require_data
from napari_gem3d import make_mask as mm
from napari_gem3d.io import read_volume, write_volume
from napari_gem3d.models.card import ModelCard
from napari_gem3d.volume import Volume

ROOT = Path(__file__).resolve().parents[1]
NAMES = {0: "outside brain", 1: "CSF", 2: "grey matter", 3: "white matter", 4: "oedema",
         5: "enhancing tumour rim", 6: "necrotic tumour core"}
CARD = ModelCard(modality="MR", contrast="T1", body_region="brain", tissue_labels=(1, 2, 3),
                 lesion_labels=(4, 5, 6), background_labels=(0,))
SPACING = 2.0
MEANS = {1: 30.0, 2: 70.0, 3: 100.0}


def _phantom(shape=(56, 64, 56), noise=3.0, bias=0.25, seed=0, skull=False):
    """(image, tissue 0..3, affine): an ellipsoid brain, outer CSF shell, GM ribbon, WM, two ventricles,
    times a smooth multiplicative bias field (1 +- ``bias``); optionally with a dark skull and bright scalp."""
    rng = np.random.default_rng(seed)
    g = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) / (n / 2) for n in shape], indexing="ij")
    r = np.sqrt((g[0] / 0.78) ** 2 + (g[1] / 0.82) ** 2 + (g[2] / 0.78) ** 2)
    tissue = np.zeros(shape, np.int16)
    tissue[r <= 1.0] = 1
    tissue[r <= 0.93] = 2
    tissue[r <= 0.72] = 3
    for side in (-1, 1):  # ventricles
        v = np.sqrt(((g[0] - side * 0.16) / 0.09) ** 2 + (g[1] / 0.3) ** 2 + (g[2] / 0.12) ** 2)
        tissue[v <= 1.0] = 1
    image = np.zeros(shape, np.float32)
    for k, m in MEANS.items():
        image[tissue == k] = m
    if skull:
        image[(r > 1.0) & (r <= 1.08)] = 8.0  # skull: dark
        image[(r > 1.08) & (r <= 1.16)] = 120.0  # scalp fat: bright
    field = 1 + bias * (0.7 * g[0] + 0.5 * g[1] - 0.4 * g[2])
    head = image > 0
    image = image * field + rng.normal(0, noise, shape).astype(np.float32) * head  # background stays 0
    image = np.clip(image, 0, None).astype(np.float32)
    affine = np.diag([SPACING, SPACING, SPACING, 1.0])
    affine[:3, 3] = [-55.0, -63.0, -50.0]
    return image, tissue, affine


def _dice(a, b) -> float:
    return 2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)


def _tumour_case(seed=3):
    sys.path.insert(0, str(ROOT))
    from training.recipes.demo.tumours import insert_tumour

    image, tissue, affine = _phantom(bias=0.0, noise=2.0)
    out = insert_tumour(image, tissue, (SPACING,) * 3, np.random.default_rng(seed), radius_mm=16.0)
    assert out is not None
    timage, labels = out
    return Volume(timage, affine), labels


# ----------------------------------------------------------------------------------------------- GMM
def test_gmm_recovers_class_means_under_a_bias_field():
    image, tissue, affine = _phantom(bias=0.25)
    brain = tissue > 0
    seg = mm.segment_tissue(image, brain, (SPACING,) * 3)
    pred = np.where(seg["classes"] >= 0, seg["classes"] + 1, 0)
    for k in (1, 2, 3):
        assert _dice(pred == k, tissue == k) > 0.9, (k, _dice(pred == k, tissue == k))
    # class means in the image's units (the bias field is normalised to geometric mean 1 in the brain)
    true = np.array([MEANS[k] for k in (1, 2, 3)])
    assert np.allclose(seg["means"], true, rtol=0.1), seg["means"]
    assert seg["bias_used"]
    # without the correction the same bias field costs accuracy
    plain = mm.segment_tissue(image, brain, (SPACING,) * 3, bias=False)
    pred0 = np.where(plain["classes"] >= 0, plain["classes"] + 1, 0)
    assert min(_dice(pred0 == k, tissue == k) for k in (1, 2, 3)) < min(
        _dice(pred == k, tissue == k) for k in (1, 2, 3))


def test_fit_gmm_tied_variance_and_bright_outliers():
    rng = np.random.default_rng(1)
    v = np.concatenate([rng.normal(30, 5, 20000), rng.normal(70, 5, 50000), rng.normal(100, 5, 40000)])
    mu, sd, pi = mm.fit_gmm(v, 3)
    assert np.allclose(mu, [30, 70, 100], atol=1.5) and np.allclose(sd, 5, atol=0.5)
    assert np.allclose(pi, [2 / 11, 5 / 11, 4 / 11], atol=0.02)
    bright = np.concatenate([v, rng.normal(200, 5, 1500)])  # 1.3 % vessels / enhancement
    mu, sd, pi, extra = mm.fit_tissue(bright, 3)
    assert extra is not None and abs(extra[0] - 200) < 3
    assert np.allclose(mu, [30, 70, 100], atol=2)


# ------------------------------------------------------------------------------------------ lesions
def test_auto_split_puts_core_rim_oedema_in_the_right_order():
    image, truth = _tumour_case()
    lesion = Volume((truth >= 4).astype(np.uint8), image.affine)
    out, report = mm.make_model_mask(image, CARD, NAMES, lesion=lesion, brain="none")
    labels = np.asarray(out.array)
    assert [r["method"] for r in report["lesions"]] == ["intensity"]
    les = truth >= 4
    depth = ndimage.distance_transform_edt(les)
    mean_depth = {k: depth[labels == k].mean() for k in (4, 5, 6)}
    assert mean_depth[6] > mean_depth[5] > mean_depth[4]  # core inside the rim inside the oedema
    cimg = np.asarray(image.array)
    mean_int = {k: cimg[labels == k].mean() for k in (4, 5, 6)}
    assert mean_int[5] > mean_int[4] and mean_int[5] > mean_int[6]  # the rim enhances
    for k in (4, 5, 6):
        assert _dice(labels == k, truth == k) > 0.6, (k, _dice(labels == k, truth == k))
    assert np.array_equal(labels >= 4, les)  # exactly the user's lesion voxels carry lesion labels


def test_auto_split_falls_back_to_depth_shells_when_intensities_do_not_separate():
    image, tissue, affine = _phantom(bias=0.0)
    g = np.indices(image.shape)
    ball = np.sqrt(sum((g[i] - c) ** 2 for i, c in enumerate((28, 32, 37)))) <= 5  # plain white matter
    assert set(np.unique(tissue[ball])) == {3}
    out, report = mm.make_model_mask(Volume(image, affine), CARD, NAMES,
                                     lesion=Volume(ball.astype(np.uint8), affine), brain="none")
    labels = np.asarray(out.array)
    assert report["lesions"][0]["method"] == "depth shells"
    assert labels[28, 32, 37] == 6 and labels[28, 32, 32] == 4  # centre core, edge oedema
    assert set(np.unique(labels[ball])) == {4, 5, 6}


def test_a_lesion_enhancing_throughout_is_all_enhancing_rim():
    """A lesion brighter than white matter everywhere (brain1's, in a post-contrast T1) has no necrosis: its
    darker part is still enhancing, so none of it becomes the (CSF-dark) necrotic core."""
    image, tissue, affine = _phantom(bias=0.0)
    g = np.indices(image.shape)
    r = np.sqrt(sum((g[i] - c) ** 2 for i, c in enumerate((28, 32, 37))))
    ball = r <= 5
    bright = image.copy()
    bright[ball] = 145.0 - 3.0 * r[ball]  # WM 100: enhancing, brighter at the centre, no dark voxel
    out, report = mm.make_model_mask(Volume(bright, affine), CARD, NAMES,
                                     lesion=Volume(ball.astype(np.uint8), affine), brain="none")
    labels = np.asarray(out.array)
    assert report["lesions"][0]["method"] == "intensity (enhancing throughout: all rim)"
    assert set(np.unique(labels[ball])) == {5}
    dim = image.copy()
    dim[ball] = 102.0  # about as bright as white matter: nothing to separate by intensity
    out, report = mm.make_model_mask(Volume(dim, affine), CARD, NAMES,
                                     lesion=Volume(ball.astype(np.uint8), affine), brain="none")
    assert report["lesions"][0]["method"] == "depth shells"


def test_lesion_as_name_and_bad_name():
    image, truth = _tumour_case()
    lesion = Volume((truth >= 4).astype(np.int16) * 7, image.affine)
    out, _ = mm.make_model_mask(image, CARD, NAMES, lesion=lesion, lesion_as="OEDEMA", brain="none")
    labels = np.asarray(out.array)
    assert np.all(labels[truth >= 4] == 4) and not np.any(labels[truth < 4] >= 4)
    with pytest.raises(ValueError, match="valid names:.*'oedema'.*'necrotic tumour core'"):
        mm.make_model_mask(image, CARD, NAMES, lesion=lesion, lesion_as="tumour", brain="none")


def test_label_map_translates_and_names_unmapped_values():
    image, truth = _tumour_case()
    brats = np.zeros(truth.shape, np.int16)  # BraTS-style scheme: 1 core, 2 oedema, 4 enhancing
    brats[truth == 6], brats[truth == 4], brats[truth == 5] = 1, 2, 4
    lesion = Volume(brats, image.affine)
    label_map = {1: "necrotic tumour core", 2: "Oedema", 4: "enhancing tumour rim"}
    out, report = mm.make_model_mask(image, CARD, NAMES, lesion=lesion, label_map=label_map, brain="none")
    labels = np.asarray(out.array)
    for k in (4, 5, 6):
        assert np.array_equal(labels == k, truth == k)
    assert report["method"]["lesion"].startswith("label map")
    brats[0, 0, 0] = 9
    with pytest.raises(ValueError, match=r"value\(s\) 9.*--label-map"):
        mm.make_model_mask(image, CARD, NAMES, lesion=Volume(brats, image.affine), label_map=label_map, brain="none")
    with pytest.raises(ValueError, match="valid names"):
        mm.make_model_mask(image, CARD, NAMES, lesion=lesion, label_map={1: "tumor"}, brain="none")


# --------------------------------------------------------------------------------- geometry and cards
def test_output_geometry_is_the_images_and_mismatches_are_refused(tmp_path):
    image, tissue, affine = _phantom()
    path = write_volume(Volume(image, affine), tmp_path / "t1.nii.gz")
    vol = read_volume(path)
    out, report = mm.make_model_mask(vol, CARD, NAMES, brain="fallback")
    assert out.shape == vol.shape and np.array_equal(out.affine, vol.affine)
    assert out.array.dtype == np.uint8 and "source" not in out.header
    assert set(np.unique(out.array)) <= {0, 1, 2, 3}
    assert report["counts"]["white matter"] > 0 and "fallback" in report["method"]["brain"]
    with pytest.raises(ValueError, match="shape .* resample"):
        mm.make_model_mask(vol, CARD, NAMES, lesion=Volume(np.zeros((4, 4, 4), np.uint8), affine))
    moved = affine.copy()
    moved[0, 3] += 5.0
    with pytest.raises(ValueError, match="position/orientation.*resample"):
        mm.make_model_mask(vol, CARD, NAMES, lesion=Volume(np.zeros(image.shape, np.uint8), moved))


def test_fallback_brain_mask_drops_skull_and_scalp():
    image, tissue, affine = _phantom(skull=True, bias=0.1)
    brain = mm.brain_mask_fallback(Volume(image, affine))
    truth = tissue > 0
    assert np.count_nonzero(brain & ~truth) < 0.01 * np.count_nonzero(brain)  # no skull or scalp
    assert np.count_nonzero(brain & truth) > 0.8 * np.count_nonzero(truth)  # (the outer CSF rim may go)
    assert brain[truth & (tissue > 1)].mean() > 0.99  # all grey and white matter


@pytest.mark.parametrize("card, match", [
    (ModelCard(modality="CT", body_region="abdomen", tissue_labels=(1, 2, 3)), "brain MR model cards only"),
    (ModelCard(modality="MR", body_region="abdomen", tissue_labels=(1, 2, 3)), "brain MR model cards only"),
    (ModelCard.unknown(), "no model card"),
    (ModelCard(modality="MR", body_region="brain", tissue_labels=(1, 2)), "CSF, grey matter and white matter"),
])
def test_unsupported_cards_are_refused(card, match):
    image, _, affine = _phantom()
    with pytest.raises(ValueError, match=match):
        mm.make_model_mask(Volume(image, affine), card, NAMES, brain="none")


def test_the_bundled_demo_card_is_served():
    import json

    from napari_gem3d import demo_model_path

    config = json.loads((demo_model_path() / "config.json").read_text())
    if config.get("card") is None:
        pytest.skip("the bundled demo model has no card yet")
    names = {int(k): v for k, v in config["labels"]["names"].items()}
    roles = mm.check_brain_card(ModelCard.from_dict(config["card"]), names)
    assert (roles["csf"], roles["gm"], roles["wm"], roles["background"]) == (1, 2, 3, 0)
    assert roles["lesion"] == {"oedema": 4, "rim": 5, "core": 6}


# ---------------------------------------------------------------------------------------------- CLI
@pytest.fixture
def cli(monkeypatch):
    """The make-mask command with the demo labels and card, without loading the network weights."""
    from napari_gem3d.commands import make_mask as cmd

    def fake_load_model(path):
        config = SimpleNamespace(name="demo", card=CARD, labels=SimpleNamespace(names=NAMES))
        return SimpleNamespace(config=config)

    monkeypatch.setattr(cmd, "load_model", fake_load_model)

    def run(argv):
        p = argparse.ArgumentParser()
        cmd.add_arguments(p)
        args = p.parse_args(argv)
        args.argv = ["make-mask", *argv]
        return cmd.run(args)

    return run


def test_cli_writes_a_model_mask_and_refuses_to_overwrite_the_image(cli, tmp_path, capsys):
    image, truth = _tumour_case()
    img = write_volume(image, tmp_path / "t1.nii.gz")
    les = write_volume(image.with_array((truth >= 4).astype(np.uint8)), tmp_path / "lesion.nrrd")
    out = tmp_path / "mask.nii.gz"
    assert cli(["--image", str(img), "--lesion", str(les), "--brain", "none", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    mask = read_volume(out)
    assert set(np.unique(mask.array)) <= set(NAMES) and mask.array.dtype == np.uint8
    assert np.allclose(mask.affine, image.affine) and mask.shape == image.shape
    assert {4, 5, 6} <= set(np.unique(mask.array))
    prov = mask.header["provenance"]["make_mask"]
    assert prov["counts"]["outside brain"] > 0 and "lesion" in prov["method"]
    with pytest.raises(FileExistsError, match="it is the input --image"):
        cli(["--image", str(img), "--out", str(img), "--overwrite"])
    with pytest.raises(FileExistsError, match="exists"):
        cli(["--image", str(img), "--out", str(out)])
    with pytest.raises(ValueError, match="VALUE:NAME"):
        cli(["--image", str(img), "--lesion", str(les), "--label-map", "oedema", "--out", str(tmp_path / "x.nii.gz")])


def test_cli_is_registered():
    from napari_gem3d import cli

    if "make-mask" not in cli.COMMANDS:
        pytest.skip("make-mask is not registered in cli.COMMANDS yet")
    assert cli.main(["make-mask", "--help"]) == 0


# --------------------------------------------------------------------------------------------- data
@pytest.mark.data
def test_real_head_brain_and_tissue():
    sys.path.insert(0, str(ROOT))
    from training.recipes.demo.subjects import ITK

    image = read_volume(require_data(ITK / "KmeansTest_T1UCharRaw.nii.gz"))
    strip = read_volume(require_data(ITK / "KmeansTest_T1RawSkullStrip.nii.gz"))
    ref = ndimage.binary_fill_holes(np.asarray(strip.array) > 0)
    out, report = mm.make_model_mask(image, CARD, NAMES)  # deepbet when installed, else the fallback
    labels = np.asarray(out.array)
    assert _dice(labels > 0, ref) > 0.93, report["method"]
    means = list(report["class_means"].values())
    assert means == sorted(means)


def test_a_ct_in_hounsfield_units_is_refused_by_an_mr_card():
    image, _, affine = _phantom(seed=5)
    ct = Volume(image * 10.0 - 1024.0, affine)  # air at -1024 HU around the head
    with pytest.raises(ValueError, match=r"looks like CT in Hounsfield units .* MR-only.* Fix: a CT scan needs"):
        mm.make_model_mask(ct, CARD, NAMES, brain="none")
