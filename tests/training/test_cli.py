"""The entry points: ``python -m training <stage> --config FILE`` (also under torchrun) and the recipe."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from train_helpers import ROOT, require_file, tiny_config

from napari_gem3d.models import load_bundle


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1"}


def _write(tmp: Path, raw: dict) -> Path:
    path = tmp / f"{raw['stage']}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_cli_runs_a_stage_and_reports_config_errors(tmp_path, pairs_data):
    cfg = _write(tmp_path, tiny_config(tmp_path, pairs_data, "vae", "vae", train={"steps": 1}))
    run = subprocess.run([sys.executable, "-m", "training", "vae", "--config", str(cfg), "--set", "train.steps=2"],
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    bundle = load_bundle(tmp_path / "vae" / "bundle")
    assert bundle.config.provenance["training"]["vae"]["steps"] == 2
    bad = subprocess.run([sys.executable, "-m", "training", "slice", "--config", str(cfg)],
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "stage" in bad.stderr


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_torchrun_two_processes_gloo(tmp_path, pairs_data):
    raw = tiny_config(tmp_path, pairs_data, "vae", "vae", train={"steps": 2, "batch_size": 1})
    cfg = _write(tmp_path, raw)
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    run = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "training", "vae",
                          "--config", str(cfg)], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "vae" / "bundle" / "config.json").is_file()


@pytest.mark.slow
@pytest.mark.data
def test_demo_recipe_smoke(tmp_path):
    from training.recipes.demo.subjects import ITK, MRICRON, brain1_dir

    for path in (MRICRON / "ch2.nii.gz", ITK / "KmeansTest_T1UCharRaw.nii.gz", brain1_dir() / "brain1_image.nrrd"):
        require_file(path)
    run = subprocess.run([sys.executable, "-m", "training.recipes.demo", "--out", str(tmp_path / "demo"),
                          "--scale", "0.002", "--skip-eval"], cwd=ROOT, env=_env(), capture_output=True,
                         text=True, timeout=1800)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    bundle = load_bundle(tmp_path / "demo" / "baseline" / "bundle")
    assert bundle.config.provenance["untrained"] == []


@pytest.mark.slow
@pytest.mark.data
def test_demo_recipe_time_budget_path_writes_small_half_precision_files(tmp_path):
    """The GPU recipe's path (--budget-minutes, fp16 storage) on the CPU with a tiny budget: every stage stops
    on its share of the budget, and every bundle file is fp16 and under 16 MiB (what comes back from a device)."""
    from safetensors.torch import load_file
    from training.recipes.demo.subjects import ITK, MRICRON, brain1_dir

    for path in (MRICRON / "ch2.nii.gz", ITK / "KmeansTest_T1UCharRaw.nii.gz", brain1_dir() / "brain1_image.nrrd"):
        require_file(path)
    out = tmp_path / "budget"
    run = subprocess.run([sys.executable, "-m", "training.recipes.demo", "--out", str(out), "--scale", "1",
                          "--budget-minutes", "0.01", "--storage", "fp16", "--skip-eval"], cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for stage in ("vae", "slice", "volume-stage1", "volume-stage2", "baseline"):
        result = json.loads((out / stage / "result.json").read_text())
        assert 1 <= result["steps"] < result["configured_steps"], (stage, result)
    folder = out / "baseline" / "bundle"
    for f in folder.glob("*.safetensors"):
        assert f.stat().st_size <= 16 * 2**20
        assert {t.dtype for t in load_file(str(f)).values() if t.is_floating_point()} == {torch.float16}
    bundle = load_bundle(folder)
    assert bundle.config.provenance["untrained"] == []
    assert next(bundle.volume.parameters()).dtype == torch.float32  # loaded back as fp32
