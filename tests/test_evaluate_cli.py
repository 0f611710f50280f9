"""gem3d evaluate: pairs by name, prints a table, writes metrics.csv and metrics.md."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from napari_gem3d.cli import main
from napari_gem3d.io import write_volume
from napari_gem3d.volume import Volume

AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])  # RAS: axis 2 is S, the generation axis
PROV = {"window": 16, "overlap": 1, "start_slice": 20, "mode": "gem3d", "grid": {"slice_axis": "S"}}


def _smooth(seed):
    rng = np.random.default_rng(seed)
    return (gaussian_filter(rng.random((24, 24, 40)), 2.5) * 1000).astype(np.float32)


@pytest.fixture
def folders(tmp_path):
    from napari_gem3d.metrics.consistency import window_seams

    real, gen = tmp_path / "real", tmp_path / "gen"
    real.mkdir()
    gen.mkdir()
    a, b = _smooth(0), _smooth(1)
    write_volume(Volume(a, AFFINE), real / "case0.nii.gz")
    write_volume(Volume(b, AFFINE), real / "case1.nii.gz")
    write_volume(Volume(a, AFFINE), gen / "case0.nii.gz")  # identical to its real case
    seams = window_seams(40, PROV)
    assert len(seams) >= 2
    stepped = b.copy()
    span = float(np.percentile(b, 99.5) - np.percentile(b, 0.5))
    stepped[:, :, seams[0] : seams[1]] += 0.3 * span  # visible jumps exactly at the window boundaries
    write_volume(Volume(stepped, AFFINE), gen / "case1_gen01.nii.gz", provenance=PROV)
    return real, gen, tmp_path / "eval"


def test_evaluate_writes_csv_and_markdown(folders, capsys):
    real, gen, out = folders
    rc = main(
        [
            "evaluate",
            "--real",
            str(real),
            "--generated",
            str(gen),
            "--out",
            str(out),
            "--fid-size",
            "32",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "FID-A" in printed and "wrote" in printed
    rows = list(csv.DictReader((out / "metrics.csv").read_text(encoding="utf-8").splitlines()))
    by_gen = {r["generated"]: r for r in rows if r["scope"] == "case"}
    assert set(by_gen) == {"case0.nii.gz", "case1_gen01.nii.gz"}
    same, stepped = by_gen["case0.nii.gz"], by_gen["case1_gen01.nii.gz"]
    assert float(same["ms_ssim"]) == pytest.approx(1.0, abs=1e-5)
    assert same["psnr_db"] == "inf"
    assert float(same["consistency_ratio"]) == pytest.approx(1.0)
    assert float(stepped["ms_ssim"]) < 0.99
    assert float(stepped["seam_ratio_generated"]) > 2.0
    assert 0.5 < float(stepped["seam_ratio_real"]) < 1.5
    assert float(same["stripe_index"]) == pytest.approx(1.0)  # a volume against itself
    assert float(stepped["stripe_index"]) > 1.2  # offsets between windows are slice-to-slice stripes
    assert "scale" in stepped["ms_ssim_config"]
    (fid_row,) = [r for r in rows if r["scope"] == "set"]
    assert "offline fallback" in fid_row["extractor"]
    assert all(float(fid_row[k]) >= 0 for k in ("fid_a", "fid_c", "fid_s"))
    assert float(fid_row["fid_a"]) > 0  # one of the two generated volumes differs
    assert {r["scope"] for r in rows} == {"case", "mean", "std", "set"}
    md = (out / "metrics.md").read_text(encoding="utf-8")
    for text in ("FID-A", "FID-C", "FID-S", "MS-SSIM", "PSNR", "consistency", fid_row["extractor"]):
        assert text in md
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_evaluate_errors_are_one_line(folders, tmp_path, capsys):
    real, gen, out = folders
    write_volume(Volume(_smooth(2), AFFINE), gen / "other.nii.gz")
    assert main(["evaluate", "--real", str(real), "--generated", str(gen), "--out", str(out)]) == 2
    assert "no real volume of the same case" in capsys.readouterr().err
    (gen / "other.nii.gz").unlink()
    assert (
        main(
            [
                "evaluate",
                "--real",
                str(real),
                "--generated",
                str(gen),
                "--out",
                str(out),
                "--extractor",
                "radimagenet",
            ]
        )
        == 2
    )
    assert "--weights" in capsys.readouterr().err
    assert not (out / "metrics.csv").exists()


def test_evaluate_fid_3d_with_deepbet(folders):
    import importlib.metadata
    import os

    try:
        importlib.metadata.distribution("deepbet")
    except importlib.metadata.PackageNotFoundError:
        if os.environ.get("GEM3D_REQUIRE_DATA", "") not in ("", "0"):
            pytest.fail("deepbet is required (GEM3D_REQUIRE_DATA is set): pip install deepbet")
        pytest.skip("deepbet not installed (optional: pip install deepbet)")
    from napari_gem3d.metrics.features import deepbet_extractor, fallback_extractor
    from napari_gem3d.metrics.report import evaluate_folders, write_report

    real, gen, out = folders
    report = evaluate_folders(
        real,
        gen,
        extractor=fallback_extractor(input_size=16),
        fid_3d_extractor=deepbet_extractor(size=64),
        stride=4,
    )
    write_report(report, out)
    rows = list(csv.DictReader((out / "metrics.csv").read_text(encoding="utf-8").splitlines()))
    (fid_row,) = [r for r in rows if r["scope"] == "set"]
    assert float(fid_row["fid_3d"]) > 0 and "deepbet" in fid_row["note"]
    assert "FID-3D" in (out / "metrics.md").read_text(encoding="utf-8")
