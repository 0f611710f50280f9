"""`python -m training rl --config FILE` end to end on a tiny bundle and phantom cases: critics, PPO,
held-out before/after, report.json and a bundle that loads."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import yaml
from helpers import random_bundle
from phantoms import phantom

from napari_gem3d.models import load_bundle, save_bundle

pytestmark = pytest.mark.rl


def write_cases(folder, n=5, shape=(10, 16, 16)):
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir(parents=True)
    affine = np.diag([1.2, 1.2, 2.0, 1.0])
    for i in range(n):
        img, msk = phantom(i, shape)
        # file axes (x, y, z) = (w, h, slices): the model's slice axis S is the file's z
        nib.save(nib.Nifti1Image(np.transpose((img + 1) * 500, (2, 1, 0)).astype(np.float32), affine),
                 folder / "images" / f"case{i}.nii.gz")
        nib.save(nib.Nifti1Image(np.transpose(msk, (2, 1, 0)).astype(np.int16), affine),
                 folder / "masks" / f"case{i}.nii.gz")
    return folder


def tiny_rl_config(tmp_path) -> dict:
    data = write_cases(tmp_path / "pairs")
    save_bundle(random_bundle(0, size=16, window=4), tmp_path / "base")
    return {
        "out": str(tmp_path / "out"),
        "seed": 1,
        "model": {"bundle": str(tmp_path / "base")},
        "data": {"sources": [{"kind": "pairs", "images": str(data / "images"), "masks": str(data / "masks")}],
                 "cache_dir": str(tmp_path / "cache"), "image_size": 16, "crop": "none", "val_cases": ["case4"]},
        "rollout": {"steps": 3, "group_size": 2, "conditions": 2, "slices": 7},
        "ppo": {"epochs": 2, "minibatch": 8, "kl_beta": 0.1},
        "critics": {"steps": 5, "batch_size": 8, "depth": 4, "width": 16, "generated_volumes": 4},
        "eval": {"every": 1, "seeds": 2, "max_conditions": 1},
        "train": {"device": "cpu", "threads": 1},
    }


def test_rl_config_run_writes_report_and_bundle(tmp_path):
    from training.__main__ import main

    cfg = tiny_rl_config(tmp_path)
    path = tmp_path / "rl.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["rl", "--config", str(path)]) == 0
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    for side in ("before", "after"):
        assert set(report[side]["rewards"]) == {"realism2d", "coherence3d", "dice", "stats"}
        fid = report[side]["fidelity"]
        assert 0.0 < fid["ms_ssim_to_truth"] <= 1.0 and fid["FID-A"] >= 0.0 and "heldout2d" in report[side]
    assert report["training"]["epochs_run"] == 2
    assert report["training"]["last_epoch"]["ratio_dev_first"] < 1e-5
    curve = report["training"]["heldout_curve"]
    assert [h["epoch"] for h in curve if "epoch" in h] == [0, 1, 2]
    reward_curve = report["training"]["heldout_reward_curve"]  # the held-out reward against rollouts
    per_epoch = cfg["rollout"]["conditions"] * cfg["rollout"]["group_size"]
    assert [(p["epoch"], p["rollouts"]) for p in reward_curve] == [(e, e * per_epoch) for e in (0, 1, 2)]
    # before training the policy is the base model (LoRA starts at zero) on the same seeds: no change at all
    assert reward_curve[0]["combined_reward_delta_z"] == pytest.approx(0.0, abs=1e-6)
    assert reward_curve[0]["ms_ssim_delta"] == pytest.approx(0.0, abs=1e-6)
    assert [p["heldout2d"] for p in reward_curve] == pytest.approx([h["heldout"] for h in curve if "epoch" in h])
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    keys = set().union(*logs)
    for k in ("reward/realism2d", "reward/coherence3d", "reward/dice", "reward/stats", "kl_ref", "clipfrac",
              "approx_kl", "ratio_dev_first", "diversity/voxel_std", "diversity/ms_ssim", "saturation/latent"):
        assert k in keys, k
    tuned = load_bundle(out / "bundle")
    base = load_bundle(tmp_path / "base")
    assert tuned.config.name == base.config.name + "-rl"
    assert "rl" in tuned.config.provenance["training"]
    assert set(tuned.volume.state_dict()) == set(base.volume.state_dict())  # LoRA merged away
    assert (out / "critics" / "critics.json").is_file()


def test_rl_cli_errors_are_one_line(tmp_path, capsys):
    from training.__main__ import main

    cfg = tiny_rl_config(tmp_path)
    cfg["ppo"]["bogus"] = 1
    path = tmp_path / "rl.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["rl", "--config", str(path)]) == 2
    assert "ppo.bogus" in capsys.readouterr().err
    assert main(["rl", "--config", str(tmp_path / "missing.yaml")]) == 2
    cfg["ppo"].pop("bogus")
    cfg["rollout"]["eta"] = 0.0
    path.write_text(yaml.safe_dump(cfg))
    assert main(["rl", "--config", str(path)]) == 2
    assert "eta" in capsys.readouterr().err
