"""Tiny synthetic brain-like cases and tiny stage configs for the training tests (helpers)."""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `training/` lives at the repository root, beside src/
    sys.path.insert(0, str(ROOT))


def phantom(shape=(20, 22, 12), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """A head-like ellipsoid with three tissue shells and a small lesion; labels in demo_labels()."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(zz**2 + yy**2 + xx**2)
    mask = np.zeros(shape, np.int16)
    mask[r < 0.85] = 1
    mask[r < 0.7] = 2
    mask[r < 0.45] = 3
    c = rng.uniform(-0.2, 0.2, 3)
    rl = np.sqrt((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2)
    mask[rl < 0.25] = 4
    mask[rl < 0.15] = 5
    mask[rl < 0.08] = 6
    means = np.array([0, 200, 500, 800, 450, 1000, 100], np.float32)
    image = means[mask] + rng.normal(0, 20, shape).astype(np.float32)
    image[mask == 0] = 0
    return image.astype(np.float32), mask


def write_pairs(folder: Path, n=3, shape=(20, 22, 12)) -> Path:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    affine = np.diag([1.5, 1.2, 2.0, 1.0])
    affine[:3, 3] = [-10, 5, 3]
    for i in range(n):
        img, msk = phantom(shape, seed=i)
        nib.save(nib.Nifti1Image(img, affine), folder / "images" / f"case{i}.nii.gz")
        nib.save(nib.Nifti1Image(msk, affine), folder / "masks" / f"case{i}.nii.gz")
    return folder


def tiny_config(tmp: Path, data_dir: Path, stage: str, out: str, **sections) -> dict:
    cfg = {
        "stage": stage,
        "out": str(tmp / out),
        "seed": 5,
        "data": {
            "sources": [{"kind": "pairs", "images": str(data_dir / "images"), "masks": str(data_dir / "masks")}],
            "cache_dir": str(tmp / "cache"),
            "image_size": 16,
            "crop": "nonzero",
            "val_cases": ["case2"],
        },
        "model": {
            "labels": "demo",
            "vae": {"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1},
            "unet": {"model_channels": 32, "channel_mult": [1, 2], "attention_resolutions": [2]},
            "window": 4,
            "name": "tiny-trained",
        },
        "train": {"steps": 2, "batch_size": 2, "lr": 1e-3, "log_every": 1, "ckpt_every": 0, "threads": 1},
        "val": {"steps": 0},
    }
    for k, v in sections.items():
        cfg.setdefault(k, {}).update(v)
    return cfg



def run_chain(tmp: Path, data_dir: Path, chain, edit=None) -> dict[str, tuple[Path, dict]]:
    """Run the ``(stage, folder name)`` chain in order, each stage initialised from the one before;
    ``edit(stage, raw)`` adjusts a stage's config first. Returns ``{stage: (bundle folder, result)}``."""
    from training.config import config_from_dict
    from training.run import run_stage

    out, prev = {}, None
    for stage, name in chain:
        raw = tiny_config(tmp, data_dir, stage, name)
        if prev is not None:
            raw["model"]["init_bundle"] = str(prev)
        if edit is not None:
            edit(stage, raw)
        result = run_stage(config_from_dict(raw), progress=False)
        prev = tmp / name / "bundle"
        out[stage] = (prev, result)
    return out


def require_file(path: Path) -> Path:
    """Skip when offline data is missing (fail when GEM3D_REQUIRE_DATA is set, as in CI)."""
    import os

    import pytest

    if path.exists():
        return path
    if os.environ.get("GEM3D_REQUIRE_DATA", "") not in ("", "0"):
        pytest.fail(f"required offline data is missing: {path} (run scripts/get_data.sh)")
    pytest.skip(f"offline data not installed: {path} (run scripts/get_data.sh)")
