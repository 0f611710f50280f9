"""gem3d regenerate (and sample's --paste-informed) from the command line, as a user runs them."""

from __future__ import annotations

import numpy as np
import pytest

from napari_gem3d.cli import main
from napari_gem3d.io import read_volume, write_volume
from sampler_helpers import write_cli_case

S_AXIS = 1  # the synthetic case stores the model's slice axis (S) as its second axis


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("regen")
    _, mask = write_cli_case(root)
    edited = np.array(mask.array)
    plane = edited[:, 12, :]
    plane[plane == 2] = 6  # the tumour core grows into grey matter on one slice
    write_volume(mask.with_array(edited), root / "edited.nii.gz")
    yield root
    torch.set_num_threads(threads)


def _sample(files, out, *extra):
    return main(["sample", "--mask", str(files / "mask.nii.gz"), "--image", str(files / "image.nii.gz"),
                 "--model", str(files / "model"), "--out", str(out), "--steps", "2", "--device", "cpu",
                 "--force", *extra])


def _regenerate(files, previous, out):
    return main(["regenerate", "--from", str(previous), "--mask", str(files / "edited.nii.gz"),
                 "--model", str(files / "model"), "--out", str(out), "--device", "cpu", "--force"])


@pytest.mark.parametrize("quality, rho, warned", [("official", "0", True), ("official", "auto", False),
                                                  ("standard", "auto", False), ("fast", "auto", False)])
def test_regenerate_keeps_the_rest_byte_for_byte_and_warns_after_stochastic_ddim(files, capsys, quality, rho,
                                                                                 warned):
    """Warned: stochastic DDIM with each window's own step noise (independent slice noise, rho 0)."""
    gen, out = files / f"gen_{quality}_{rho}.nii.gz", files / f"regen_{quality}_{rho}.nii.gz"
    assert _sample(files, gen, "--quality", quality, "--slice-noise-correlation", rho) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert _regenerate(files, gen, out) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert ("warning: this result was made with stochastic DDIM" in err) is warned
    before, after = np.asarray(read_volume(gen).array), np.asarray(read_volume(out).array)
    changed = np.flatnonzero(np.any(before != after, axis=(0, 2)))
    assert changed.size and 12 in changed and changed.size < before.shape[S_AXIS] // 2  # a local refill
    regen = read_volume(out).header["provenance"]["regenerated"]
    assert not regen["full_run"] and ("warning" in regen) is warned


def test_sample_paste_informed_is_recorded_and_refused_with_official_compat(files, capsys):
    for extra, pasted in (((), False), (("--paste-informed",), True)):
        out = files / f"paste_{pasted}.nii.gz"
        assert _sample(files, out, *extra) == 0, capsys.readouterr().err
        assert read_volume(out).header["provenance"]["paste_informed"] is pasted
    capsys.readouterr()
    assert _sample(files, files / "never.nii.gz", "--paste-informed", "--official-compat") == 2
    assert "never pastes the informed slice" in capsys.readouterr().err
    assert not (files / "never.nii.gz").exists()
