"""``training/recipes/demo/REPORT.md``: what the demo recipe ran and what it measured on the held-out volume.

Everything in the report is read from the run folder (``timing.json``, ``<stage>/result.json``,
``eval.json``, ``configs/``); the held-out montages are copied next to the report so that they can be
committed and looked at.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from pathlib import Path

import torch

from .build import built_cases

HERE = Path(__file__).resolve().parent


def _device_line() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
        cpu = model
    except (OSError, StopIteration):
        pass
    return f"CPU only: {cpu}, {os.cpu_count()} logical cores (shared), torch {torch.__version__}"


def _warped_line(out: Path) -> str:
    warped = built_cases(out / "raw").get("warped", 0)
    if not warped:
        return "no warped copies"
    return (f"{warped} warped, re-contrasted copies of each brain for the stages trained in this run, "
            "`training/data/anatomy_variants.py`")


def _bundle_training(bundle: Path) -> dict:
    """The stages recorded in a bundle's provenance (stages trained before this run keep their record there)."""
    try:
        return json.loads((bundle / "config.json").read_text())["provenance"]["training"]
    except (OSError, KeyError, ValueError):
        return {}


def write_report(out: Path, stages: tuple[str, ...], command: str, dest: Path = HERE / "REPORT.md") -> Path:
    """Write the report for run folder ``out``; montages go to ``dest.parent / 'figures'``."""
    timing = json.loads((out / "timing.json").read_text())
    ev = json.loads((out / "eval.json").read_text())
    figures = dest.parent / "figures"
    figures.mkdir(exist_ok=True)
    lines = [
        "# The bundled demo model: how it was made and what it measures",
        "",
        "Written by `python -m training.recipes.demo` (`training/recipes/demo/report.py`) from the run folder;",
        "do not edit by hand, re-run the recipe.",
        "",
        f"- Command: `{command}`",
        f"- Device: {_device_line()}",
        "- Data: MNI152 2009a, ITK KmeansTest T1 and pyradiomics brain1 (training, with synthetic tumours;",
        f"  {_warped_line(out)});",
        "  Colin27 held out (`colin27` and `colin27_tumour`, the latter with one synthetic tumour). Sources and",
        "  licences: [DATA_LICENSES.md](DATA_LICENSES.md).",
        "",
        "## Stages",
        "",
        "| stage | steps | resumed from step | wall time of the last run (s) | last training loss | validation |",
        "|---|---:|---:|---:|---|---|",
    ]
    total = 0.0
    earlier = _bundle_training(out / stages[-1] / "bundle")
    for stage in stages:
        res_path = out / stage / "result.json"
        if not res_path.is_file():
            if stage in earlier:  # trained by an earlier run of the recipe, kept in this run's chain
                e = earlier[stage]
                lines.append(f"| {stage} | {e['steps']} | (an earlier run, finished {e['finished'][:10]}) "
                             "| - | - | - |")
            continue
        res = json.loads(res_path.read_text())
        wall = float(timing.get(stage, res.get("wall_s", 0.0)))
        total += wall
        loss = ", ".join(f"{k} {v:.4g}" for k, v in res.get("last", {}).items() if k.startswith("loss/"))
        val = ", ".join(f"{k} {v:.4g}" for k, v in (res.get("val") or {}).items()) or "-"
        lines.append(f"| {stage} | {res['steps']} | {res.get('resumed_from', 0)} | {wall:.0f} | {loss} | {val} |")
    lines += ["", f"Training wall time: {total / 60:.1f} min for the last runs; a stage resumed from a checkpoint"
              " (interrupted session) ran its earlier steps at the same rate.", ""]
    lines += [
        "## Held-out evaluation",
        "",
        f"DDIM {ev['steps']} steps, eta {ev['eta']}, seeds {ev['seeds']}. MS-SSIM between the generated and the",
        "real volume, both in [0, 1] (intensities mapped from the model range [-1, 1]); GEM-3D is given the true",
        "middle informed slice, the mask-only baseline only the mask. Sampling time is the mean wall time of one",
        "whole-volume generation on this machine (shared, so an upper bound).",
        "",
        "| case | shape (S, P, L) | GEM-3D MS-SSIM | baseline MS-SSIM | GEM-3D - baseline | GEM-3D s/volume |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, row in ev["cases"].items():
        g, b = row["gem3d"], row["baseline"]
        lines.append(
            f"| {name} | {' x '.join(map(str, row['shape']))} | {g['mean']:.3f} ± {g['std']:.3f} | "
            f"{b['mean']:.3f} ± {b['std']:.3f} | {g['mean'] - b['mean']:+.3f} | {g['sample_s']:.1f} |"
        )
        src = out / f"eval-{name}.png"
        if src.is_file():
            shutil.copyfile(src, figures / src.name)
    lines += ["", "MS-SSIM settings: " + next(iter(ev["cases"].values()))["ms_ssim_config"], ""]
    lines += ["## Montages (axial, coronal, sagittal through the volume centre)", ""]
    for name in ev["cases"]:
        if (figures / f"eval-{name}.png").is_file():
            lines += [f"![{name}](figures/eval-{name}.png)", ""]
    dest.write_text("\n".join(lines))
    return dest
