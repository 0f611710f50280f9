"""The MR contrast check (contrast.py): a scan whose name says FLAIR / T2, or whose tissue medians under the mask
run in another contrast's order, is refused by a T1 model; T1 scans pass."""

from __future__ import annotations

import numpy as np
import pytest

from napari_gem3d.cli import main
from napari_gem3d.contrast import families, name_findings, order_findings
from napari_gem3d.domain import check_domain
from napari_gem3d.io import read_volume, write_volume

ROLES = {"csf": 1, "gm": 2, "wm": 3}  # the demo card's


@pytest.fixture(scope="module")
def config(demo_config):
    return demo_config


@pytest.fixture(scope="module")
def case(demo_pair):
    return demo_pair


@pytest.mark.parametrize("name, expected", [
    ("sub-01_T2w.nii.gz", {"T2"}), ("sub-01_FLAIR.nii.gz", {"FLAIR"}), ("AX_T2_FLAIR_3.nii", {"FLAIR"}),
    ("t1_mprage_sag_p2.nii.gz", {"T1"}), ("BraTS_001_t1ce.nii.gz", {"T1"}), ("case_pd_t2.nrrd", {"PD", "T2"}),
    ("brain1_image.nrrd", set()), ("image.nii.gz", set()), ("patient_dwi_adc.nii", {"diffusion"}),
    ("t2flair_tra", {"FLAIR"}), ("T1-weighted", {"T1"}),
])
def test_names_say_their_contrast_by_whole_tokens(name, expected):
    assert families(name) == expected


def named(volume, name: str, descrip: str = ""):
    return volume.with_array(volume.array, source=f"/data/{name}", descrip=descrip)


def test_a_name_that_says_another_contrast_is_an_error_and_one_that_says_both_a_warning(config, case):
    image, _ = case
    card = config.card
    assert name_findings(card, named(image, "image.nii.gz")) == []
    assert name_findings(card, named(image, "sub-02_T1w.nii.gz")) == []
    [(severity, message, fix)] = name_findings(card, named(image, "sub-02_FLAIR.nii.gz"))
    assert severity == "error" and "FLAIR" in message and "T1-weighted MR only" in message and "rename" in fix
    [(severity, message, _)] = name_findings(card, named(image, "scan.nii.gz", descrip="T2 TSE axial"))
    assert severity == "error" and "T2" in message  # the NIfTI description counts too
    [(severity, _, _)] = name_findings(card, named(image, "t1_and_t2_fused.nii.gz"))
    assert severity == "warning"


def remapped(image, mask, means: dict[int, float]):
    """The demo T1 relabelled tissue by tissue: each label's voxels moved to a new mean, texture kept."""
    a = np.asarray(image.array, np.float64)
    m = np.asarray(mask.array)
    out = a.copy()
    for label, target in means.items():
        inside = m == label
        out[inside] = a[inside] - a[inside].mean() + target
    return image.with_array(out.astype(np.float32))


def test_tissue_medians_in_another_contrasts_order_are_an_error(config, case):
    image, mask = case
    labels = np.asarray(mask.array)
    assert order_findings(config.card, image, labels, ROLES)[0] == []  # the real T1
    flair = remapped(image, mask, {1: 100.0, 2: 700.0, 3: 500.0})
    [(severity, message, _)] = order_findings(config.card, flair, labels, ROLES)[0]
    assert severity == "error" and "as in FLAIR-weighted scans" in message and "grey matter" in message
    t2 = remapped(image, mask, {1: 900.0, 2: 500.0, 3: 300.0})
    [(severity, message, _)] = order_findings(config.card, t2, labels, ROLES)[0]
    assert severity == "error" and "as in T2-weighted scans" in message
    close = remapped(image, mask, {1: 100.0, 2: 500.0, 3: 499.0})  # GM a hair above WM: noise, not FLAIR
    assert order_findings(config.card, close, labels, ROLES)[0] == []


def test_check_domain_reports_both_signs_under_one_code(config, case):
    image, mask = case
    assert "contrast" not in [f.code for f in check_domain(config, mask, image).findings]
    flair = named(remapped(image, mask, {1: 100.0, 2: 700.0, 3: 500.0}), "sub-03_FLAIR.nii.gz")
    report = check_domain(config, mask, flair)
    assert [f.code for f in report.errors].count("contrast") == 2 and not report.in_domain
    assert report.facts["tissue_medians"]["grey matter"] > report.facts["tissue_medians"]["white matter"]
    ct = image.with_array((np.asarray(image.array, np.float32) * 8 - 1024).astype(np.int16))  # stored as a CT
    assert [f.code for f in check_domain(config, mask, ct).errors] == ["modality"]  # said once, as a CT


def test_cli_check_and_make_mask_refuse_a_scan_named_flair(tmp_path, case, capsys):
    image, mask = case
    flair = write_volume(image.with_array(image.array, source=None), tmp_path / "sub-04_FLAIR.nii.gz")
    mask_path = write_volume(mask.with_array(mask.array, source=None), tmp_path / "mask.nii.gz")
    assert main(["check", "--image", str(flair), "--mask", str(mask_path)]) == 3
    assert "[error] contrast" in capsys.readouterr().out
    out = tmp_path / "made.nii.gz"
    assert main(["make-mask", "--image", str(flair), "--out", str(out), "--brain", "fallback"]) == 2
    err = capsys.readouterr().err
    assert "says FLAIR" in err and "rename the file" in err and "Traceback" not in err and not out.exists()
    assert read_volume(flair).shape == image.shape  # the input is untouched


@pytest.mark.data
def test_real_t1_brains_pass_and_their_flair_and_t2_surrogates_do_not(config):
    """MNI152, ITK T1, Colin27 and brain1 with their reference tissue maps (training/recipes/demo/subjects.py):
    no contrast finding. The same brains with each tissue moved to FLAIR's or T2's order (texture kept): refused."""
    from training.recipes.demo import subjects
    from training.recipes.demo.subjects import ITK, MRICRON

    from data_files import require_data

    require_data(MRICRON / "ch2.nii.gz")
    require_data(ITK / "KmeansTest_T1UCharRaw.nii.gz")
    require_data(subjects.brain1_dir() / "brain1_image.nrrd")
    for subject in (subjects.mni152(), subjects.itk_t1(), subjects.colin27(), subjects.brain1()):
        labels = np.where(subject.tissue > 3, 0, subject.tissue)
        image, mask = subject.image, subject.image.with_array(labels)
        assert order_findings(config.card, image, labels, ROLES)[0] == [], subject.name
        a = np.asarray(image.array, np.float64)
        means = {k: float(a[labels == k].mean()) for k in (1, 2, 3)}
        span = means[3] - means[1]
        for family, order in (("FLAIR", {1: 0.1, 2: 1.0, 3: 0.7}), ("T2", {1: 1.0, 2: 0.6, 3: 0.35})):
            fake = remapped(image, mask, {k: means[1] + v * span for k, v in order.items()})
            [(severity, message, _)] = order_findings(config.card, fake, labels, ROLES)[0]
            assert severity == "error" and f"as in {family}-weighted scans" in message, subject.name
