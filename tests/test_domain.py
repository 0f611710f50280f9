"""The model card and the domain check: in-domain inputs pass, each kind of out-of-domain input is named."""

from __future__ import annotations

import dataclasses

import nibabel as nib
import numpy as np
import pytest

from napari_gem3d import demo_model_path
from napari_gem3d.cli import main
from napari_gem3d.domain import DomainError, check_domain, guess_modality, require_domain
from napari_gem3d.io import read_volume, write_volume
from napari_gem3d.models import BundleConfig, BundleError, ModelCard
from napari_gem3d.volume import Volume


@pytest.fixture(scope="module")
def config(demo_config) -> BundleConfig:
    return demo_config


@pytest.fixture(scope="module")
def case(demo_pair):
    return demo_pair


def codes(report, severity=None):
    return sorted(f.code for f in report.findings if severity is None or f.severity == severity)


def as_ct(image: Volume) -> Volume:
    """The demo T1 written the way a CT is stored: air at -1024 HU."""
    return image.with_array((np.asarray(image.array, np.float32) * 8 - 1024).astype(np.int16))


def scaled(volume: Volume, factors) -> Volume:
    return Volume(volume.array, volume.affine @ np.diag([*factors, 1.0]), {})


# ------------------------------------------------------------------------------------------- card
def test_the_demo_bundle_has_a_card_that_names_declared_labels(config):
    card = config.card
    assert card.known and card.modality == "MR" and card.body_region == "brain"
    assert card.tissue_labels == (1, 2, 3) and card.lesion_labels == (4, 5, 6) and card.background_labels == (0,)
    assert card.spacing_mm["slice"][0] <= 2.0 <= card.spacing_mm["slice"][1]
    assert ModelCard.from_dict(card.to_dict()) == card


def test_a_bundle_without_a_card_loads_with_an_unknown_one_and_a_wrong_card_is_refused(config):
    raw = config.to_dict()
    del raw["card"]
    assert BundleConfig.from_dict(raw).card == ModelCard.unknown()
    raw["card"] = {**config.card.to_dict(), "lesion_labels": [4, 5, 9]}
    with pytest.raises(BundleError, match=r"names labels \[9\]"):
        BundleConfig.from_dict(raw)
    raw["card"] = {**config.card.to_dict(), "colour": "blue"}
    with pytest.raises(BundleError, match="unknown field"):
        BundleConfig.from_dict(raw)


def test_gem3d_info_prints_the_card(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "modality: MR; contrast: T1-weighted; body region: brain" in out
    assert "required tissue labels: 1 CSF, 2 grey matter, 3 white matter" in out
    assert "limit:" in out
    from napari_gem3d.models import load_bundle
    from napari_gem3d.sampling.request import model_slice_noise_correlation

    rho = model_slice_noise_correlation(load_bundle(demo_model_path()).config)
    assert f"slice-noise correlation by default: {rho:g}" in out


# ------------------------------------------------------------------------------------------ check
def test_the_demo_case_is_in_domain_with_no_finding(config, case):
    image, mask = case
    report = check_domain(config, mask, image)
    assert report.in_domain and report.findings == ()
    assert report.facts["image_modality"]["guess"] == "MR"


def test_ct_is_recognised_and_refused_by_an_mr_model(config, case):
    image, mask = case
    assert guess_modality(as_ct(image))[0] == "CT" and guess_modality(image)[0] == "MR"
    report = check_domain(config, mask, as_ct(image))
    assert codes(report, "error") == ["modality"] and not report.in_domain
    assert "convert-official" in report.errors[0].fix


def test_a_lesion_only_mask_is_named_as_such(config, case):
    image, mask = case
    lesion_only = mask.with_array((np.asarray(mask.array) >= 4).astype(np.uint8))
    report = check_domain(config, lesion_only, image)
    assert codes(report, "error") == ["lesion_only"]
    assert "make-mask" in report.errors[0].fix


def test_missing_tissue_unknown_labels_and_uncovered_body(config, case):
    image, mask = case
    m = np.asarray(mask.array)
    only_lesions = mask.with_array(np.where(m >= 4, m, np.where(m > 0, 0, m)).astype(np.uint8))
    assert "tissue_missing" in codes(check_domain(config, only_lesions, image), "error")
    no_csf = mask.with_array(np.where(m == 1, 2, m).astype(np.uint8))
    assert codes(check_domain(config, no_csf, image)) == ["tissue_missing"]  # a warning only
    assert check_domain(config, no_csf, image).in_domain
    unknown = mask.with_array(np.where(m == 6, 9, m).astype(np.uint8))
    assert "labels_unknown" in codes(check_domain(config, unknown, image), "error")
    # a brain labelled in a few slices only: most of the imaged head is unlabelled
    thin = np.zeros_like(m)
    thin[:, 30:33, :] = m[:, 30:33, :]
    assert "tissue_cover" in codes(check_domain(config, mask.with_array(thin), image), "error")


def test_geometry_findings(config, case):
    image, mask = case
    wide = check_domain(config, scaled(mask, (2.5, 2.5, 2.5)), scaled(image, (2.5, 2.5, 2.5)))
    assert "fov" in codes(wide, "error")
    # stretch the stored axis that is the model's slice axis (S is stored axis 1 in the demo case)
    thick = check_domain(config, scaled(mask, (1, 8, 1)), scaled(image, (1, 8, 1)))
    assert "slice_thickness" in codes(thick, "warning") and thick.in_domain
    across = check_domain(config, scaled(mask, (3, 1, 1)), scaled(image, (3, 1, 1)))
    assert "orientation" in codes(across, "warning")


def test_a_lesion_too_small_for_the_latent_grid_is_a_warning_with_counts(config, case):
    image, mask = case
    m = np.where(np.asarray(mask.array) >= 4, 3, np.asarray(mask.array)).astype(np.uint8)
    m[30:32, 40:42, 30:32] = 5  # 8 voxels of enhancing rim
    report = check_domain(config, mask.with_array(m), image)
    assert codes(report) == ["lesion_small"] and report.in_domain
    assert report.facts["lesion_voxels"] == 8 and "8 voxels" in report.findings[0].message


def test_an_unknown_card_is_reported_not_refused(config, case):
    image, mask = case
    bare = dataclasses.replace(config, card=ModelCard.unknown())
    report = check_domain(bare, mask, as_ct(image))
    assert codes(report) == ["card_unknown"] and report.in_domain


def test_require_domain_refuses_with_every_finding_and_force_records_them(config, case):
    image, mask = case
    with pytest.raises(DomainError) as info:
        require_domain(config, mask, as_ct(image))
    lines = str(info.value).splitlines()
    assert "modality" in lines[0] and any(line.strip().startswith("- [error] modality") for line in lines)
    assert "--force" in lines[-1]
    report = require_domain(config, mask, as_ct(image), force=True)
    assert not report.in_domain and report.summary() == "gem3d: OUT OF DOMAIN, forced: modality"


# -------------------------------------------------------------------------------------------- CLI
@pytest.fixture
def files(tmp_path, case):
    image, mask = case
    paths = {
        "mask": write_volume(mask.with_array(mask.array, source=None), tmp_path / "mask.nii.gz"),
        "image": write_volume(image.with_array(image.array, source=None), tmp_path / "image.nii.gz"),
        "ct": write_volume(as_ct(image.with_array(image.array, source=None)), tmp_path / "ct.nii.gz"),
    }
    return paths


def test_gem3d_check_exit_codes(files, capsys):
    assert main(["check", "--mask", str(files["mask"]), "--image", str(files["image"])]) == 0
    assert "in the model's domain" in capsys.readouterr().out
    assert main(["check", "--mask", str(files["mask"]), "--image", str(files["ct"])]) == 3
    assert "[error] modality" in capsys.readouterr().out


def test_sample_refuses_out_of_domain_and_force_records_it(files, tmp_path, capsys):
    out = tmp_path / "gen.nii.gz"
    argv = ["sample", "--mask", str(files["mask"]), "--image", str(files["ct"]), "--out", str(out), "--steps", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "outside the model's domain" in err and "[error] modality" in err and "Traceback" not in err
    assert not out.exists()
    assert main([*argv, "--force"]) == 0
    written = read_volume(out)
    assert written.header["provenance"]["domain"]["in_domain"] is False
    assert written.header["descrip"] == "gem3d: OUT OF DOMAIN, forced: modality"
    assert nib.load(out).header["descrip"].item().decode().startswith("gem3d: OUT OF DOMAIN")
