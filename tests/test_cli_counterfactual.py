"""gem3d counterfactual: headless twin of the gallery widget."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_gem3d.cli import main
from napari_gem3d.io import read_volume, write_volume
from sampler_helpers import write_cli_case
from study_helpers import AFFINE, synthetic_case


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cf")
    write_cli_case(root)
    other, _ = synthetic_case(seed=2, scale=1.5)
    write_volume(other, root / "other.nrrd")
    yield root
    torch.set_num_threads(threads)


def test_counterfactual_cli_writes_one_volume_per_informed_slice(files, capsys):
    out = files / "out"
    code = main(
        [
            "counterfactual",
            "--mask",
            str(files / "mask.nii.gz"),
            "--image",
            str(files / "image.nii.gz"),
            "--informed-from",
            str(files / "image.nii.gz"),
            str(files / "other.nrrd"),
            "--generate",
            "1",
            "--informed-steps",
            "2",
            "--model",
            str(files / "model"),
            "--out",
            str(out),
            "--steps",
            "2",
            "--device",
            "cpu",
            "--seed",
            "4",
        ]
    )
    assert code == 0, capsys.readouterr().err
    index = json.loads((out / "provenance.json").read_text())
    names = [r["name"] for r in index["results"]]
    assert names == ["image", "other", "generated_seed4"]
    for entry in index["results"]:
        vol = read_volume(out / entry["file"])
        assert vol.shape == (22, 26, 30) and np.allclose(vol.affine, AFFINE)
        assert vol.header["provenance"]["seed"] == 4
        assert (out / entry["difference"]).exists()
    kinds = [r["provenance"]["informed"]["kind"] for r in index["results"]]
    assert kinds == ["picked", "picked", "generated"]


def test_counterfactual_cli_errors_are_one_line(files, capsys):
    code = main(
        [
            "counterfactual",
            "--mask",
            str(files / "mask.nii.gz"),
            "--out",
            str(files / "o2"),
            "--model",
            str(files / "model"),
        ]
    )
    assert code == 2
    assert "--informed-from" in capsys.readouterr().err
