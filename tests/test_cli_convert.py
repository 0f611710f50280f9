"""``gem3d convert-official`` end to end: tiny official-layout checkpoints -> bundle -> ``gem3d sample``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_gem3d.cli import main
from napari_gem3d.io import read_volume, write_volume
from napari_gem3d.models import load_bundle
from napari_gem3d.volume import Volume
from test_convert_official import tiny_checkpoints, write_evil_checkpoint


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    out = tiny_checkpoints(folder)
    out["params_file"] = folder / "params.json"
    out["params_file"].write_text(json.dumps(out["params"]))
    return out


def _convert_args(tiny, out: Path) -> list[str]:
    p = tiny["paths"]
    return [
        "convert-official", "--volume", str(p["volume"]), "--slice", str(p["slice"]), "--vae", str(p["vae"]),
        "--params", str(tiny["params_file"]), "--out", str(out),
    ]


@pytest.fixture(scope="module")
def bundle_dir(tiny, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "official-tiny"
    assert main(_convert_args(tiny, out)) == 0
    return out


def test_convert_official_in_process(tiny, bundle_dir):
    bundle = load_bundle(bundle_dir)
    assert set(bundle.unets) == {"volume", "slice"}
    assert bundle.config.image_size == (32, 32)
    assert set(bundle.config.provenance["converted_from"]) == {"volume", "slice", "vae"}
    # golden weights arrived (the numerical match is tests/test_convert_official.py's job)
    official = tiny["golden"]["volume"]
    pairs = {
        "down.0.0.conv.weight": "input_blocks.0.0.weight",
        "down.0.0.tconv.conv.weight": "input_blocks.0.1.temporal_conv.weight",
    }
    state = bundle.volume.state_dict()
    for ours, theirs in pairs.items():
        assert torch.equal(state[ours], official[f"model.diffusion_model.{theirs}"])
    vae = tiny["golden"]["vae"]
    assert torch.equal(bundle.vae.state_dict()["quant.weight"], vae["first_stage_model.quant_conv.weight"])


def test_convert_official_subprocess(tiny, bundle_dir, tmp_path):
    out = tmp_path / "via-subprocess"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "napari_gem3d.cli", *_convert_args(tiny, out)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert run.returncode == 0, run.stderr
    assert f"wrote bundle {out}" in run.stdout
    # same checkpoints, same bytes: the bundle written by the other process has the same content hash
    assert load_bundle(out).model_hash == load_bundle(bundle_dir).model_hash


def test_refusals_exit_non_zero_with_one_line(tiny, tmp_path, capsys):
    marker = tmp_path / "MARKER"
    evil = write_evil_checkpoint(tmp_path / "evil.ckpt", marker, "os.system")
    out = tmp_path / "out" / "bundle"
    assert main(["convert-official", "--volume", str(evil), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("gem3d convert-official: error: ") and "refused" in err and "system" in err
    assert not marker.exists()
    assert not (tmp_path / "out").exists()  # nothing written at --out, not even its parent
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    assert main(["convert-official", "--volume", str(text), "--out", str(out)]) == 2
    assert "not a PyTorch checkpoint" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.ckpt", "notes.ckpt"]  # no marker, no output


def test_existing_out_needs_overwrite(tiny, bundle_dir, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in bundle_dir.iterdir()}
    assert main(_convert_args(tiny, bundle_dir)) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in bundle_dir.iterdir()} == before


def test_params_file_errors_name_the_file(tiny, tmp_path, capsys):
    bad = tmp_path / "params.json"
    bad.write_text("{volume: 1")
    args = ["convert-official", "--volume", str(tiny["paths"]["volume"]), "--params", str(bad), "--out",
            str(tmp_path / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{bad}: not valid JSON" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def _case(folder: Path) -> tuple[Path, Path, np.ndarray]:
    """A small brain-like phantom: official brain labels 0..4, oblique-free but anisotropic geometry."""
    shape = (22, 18, 16)  # the last (superior) axis is the slice axis: one window of 16
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(zz**2 + yy**2 + xx**2)
    mask = np.zeros(shape, np.uint8)
    mask[r < 0.9] = 1
    mask[np.sqrt((zz - 0.3) ** 2 + yy**2 + xx**2) < 0.4] = 2
    mask[np.sqrt((zz - 0.3) ** 2 + yy**2 + xx**2) < 0.25] = 3
    mask[np.sqrt((zz - 0.3) ** 2 + yy**2 + xx**2) < 0.1] = 4
    rng = np.random.default_rng(0)
    image = (mask * 100.0 + rng.normal(0, 5, shape)).astype(np.float32)
    affine = np.array([[1.2, 0, 0, -10.0], [0, 0.9, 0, 5.0], [0, 0, 2.5, -20.0], [0, 0, 0, 1]])
    write_volume(Volume(mask, affine), folder / "mask.nii.gz")
    write_volume(Volume(image, affine), folder / "image.nii.gz")
    return folder / "mask.nii.gz", folder / "image.nii.gz", affine


def test_sample_with_the_converted_bundle(bundle_dir, tmp_path):
    mask, image, affine = _case(tmp_path)
    out = tmp_path / "generated.nii.gz"
    args = [
        "sample", "--model", str(bundle_dir), "--mask", str(mask), "--image", str(image), "--out", str(out),
        "--steps", "2", "--device", "cpu", "--seed", "3",
    ]
    assert main(args) == 0
    generated, source = read_volume(out), read_volume(image)
    assert generated.shape == source.shape == (22, 18, 16)
    np.testing.assert_allclose(generated.affine, affine, atol=1e-5)
    assert generated.axcodes == source.axcodes
    assert np.isfinite(generated.array).all() and generated.array.std() > 0
