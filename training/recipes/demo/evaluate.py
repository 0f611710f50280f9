"""Held-out evaluation of a demo bundle: GEM-3D (true informed slice) vs the mask-only baseline."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from napari_gem3d.metrics.similarity import ms_ssim
from napari_gem3d.models import load_bundle

from ...config import load_config
from ...data.preprocess import prepare_cases
from ...stages.common import sample_case, save_val_montage

SEEDS = (0, 1)


def evaluate(bundle_path: Path, out: Path, steps: int = 25, threads: int = 1) -> float:
    """Write ``out/eval.json`` and ``out/eval-<case>.png``; returns the wall time."""
    t0 = time.perf_counter()
    torch.set_num_threads(threads)
    cfg = load_config(out / "configs" / "baseline.yaml")
    bundle = load_bundle(bundle_path)
    cases = [c for c in prepare_cases(cfg, bundle.config.labels) if c.name in cfg.data.val_cases]
    results = {"steps": steps, "eta": 1.0, "seeds": list(SEEDS), "cases": {}}
    for case in cases:
        row = {}
        shown = {}
        for mode in ("gem3d", "baseline"):
            scores, times = [], []
            for seed in SEEDS:
                gen, ref = sample_case(bundle, case, mode=mode, steps=steps, eta=1.0, seed=seed,
                                       device=torch.device("cpu"))
                score, msc = ms_ssim((ref["image"] + 1) / 2, (np.clip(gen, -1, 1) + 1) / 2, data_range=1.0)
                scores.append(score)
                times.append(ref["timings"]["total"])  # wall seconds on a shared machine
                shown.setdefault(mode, gen)
            row[mode] = {"ms_ssim": scores, "mean": float(np.mean(scores)), "std": float(np.std(scores)),
                         "sample_s": float(np.mean(times))}
        row["ms_ssim_config"] = msc.describe()
        row["shape"] = list(case.mask.shape)
        results["cases"][case.name] = row
        save_val_montage(out / f"eval-{case.name}.png", case, [
            ("real (held out)", np.asarray(case.image), "image"), ("mask", np.asarray(case.mask), "labels"),
            ("GEM-3D (true middle slice)", shown["gem3d"], "image"), ("mask-only baseline", shown["baseline"], "image"),
        ], title=f"{case.name}: MS-SSIM GEM-3D {row['gem3d']['mean']:.3f} vs baseline {row['baseline']['mean']:.3f} "
                 f"(seed 0 shown, {steps} steps)")
    (out / "eval.json").write_text(json.dumps(results, indent=1))
    return time.perf_counter() - t0
