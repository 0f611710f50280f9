"""The bundled demo model, from raw offline brain MRI to a bundle, in one command.

    bash scripts/get_data.sh
    python -m training.recipes.demo --out runs/demo [--install] [--scale 1.0]
    python -m training.recipes.demo --out runs/gpu --device cuda --budget-minutes 8 --scale 20   # a GPU

Steps: build the case pairs (real T1 volumes, tissue labels, synthetic and real tumours; Colin27 held
out), write one YAML config per stage to ``OUT/configs/``, run ``python -m training <stage>`` for
vae -> slice -> volume-stage1 -> volume-stage2 -> baseline (each reading the previous stage's bundle),
evaluate on the held-out volumes (MS-SSIM of GEM-3D with the true informed slice vs the mask-only
baseline, montages), and with ``--install`` copy the bundle and the demo case into the package.
``--scale`` multiplies every stage's step count (e.g. 0.02 for a smoke run), ``--steps STAGE=N`` sets
one stage's; a finished stage is not trained again, but one that started from an earlier stage's old
weights is (its old run kept as ``STAGE.stale-K``). ``--warped N`` (default 16)
adds N warped, re-contrasted copies of each training brain (``training/data/anatomy_variants.py``); the
shipped model's VAE and slice model were trained without them (``--warped 0 --stages vae slice``), its
volume and baseline networks with them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from .build import DEMO_CASE_NAME, build_cases, write_demo_case

REPO = Path(__file__).resolve().parents[3]
PACKAGE_DATA = REPO / "src" / "napari_gem3d" / "data"

#: stage -> (steps, batch size, learning rate)
SCHEDULE = {
    "vae": (1000, 16, 2e-4),
    "slice": (1200, 16, 2e-4),
    "volume-stage1": (5000, 2, 2e-4),
    "volume-stage2": (1200, 2, 1e-4),
    "baseline": (3000, 2, 2e-4),
}
ORDER = ("vae", "slice", "volume-stage1", "volume-stage2", "baseline")
#: share of a --budget-minutes time budget per stage: the CPU run's wall-time shares (REPORT.md, 72 min)
BUDGET_SHARE = {"vae": 0.21, "slice": 0.05, "volume-stage1": 0.32, "volume-stage2": 0.12, "baseline": 0.30}
VAL_CASES = ["colin27", "colin27_tumour"]
#: the first stage's bottleneck (--first-stage): the KL autoencoder (the shipped model) or a VQ-GAN of the same
#: encoder and decoder (EMA codebook + commitment loss); the first-stage study uses the same two
FIRST_STAGES = {"kl": {}, "vq": {"kind": "vq", "codebook_size": 256, "dead_code_steps": 50}}


#: What the demo model is told about itself; training/card.py adds the measured spacing, FOV and intensities.
DEMO_CARD = {
    "modality": "MR",
    "contrast": "T1-weighted",
    "body_region": "brain",
    "tissue_labels": [1, 2, 3],
    "lesion_labels": [4, 5, 6],
    "background_labels": [0],
    "intensity_units": "arbitrary (MR)",
    "skull_stripped": None,  # mixed: the MNI152 template is skull-stripped, the ITK T1 and brain1 are not
    "training_data": "3 T1 brains (MNI152 2009a template, ITK KmeansTest T1, pyradiomics brain1), 8 variants "
                     "each with 0-3 synthetic tumours, cropped to the brain (the skull inside the crop kept in two "
                     "of them){warped}; held out: Colin27",
    "intended_use": "demonstrating GEM-3D generation, counterfactual edits and the plugin on brain T1 MRI",
    "limits": ["a demonstration model trained for about an hour on a CPU, not for clinical or research use",
               "needs a dense label map: outside brain, CSF, grey and white matter (gem3d make-mask makes one)",
               "tumours are synthetic (necrotic core, enhancing rim, oedema), not learned from real lesions",
               "64x64 in-plane grid: lesions under ~1 cm in-plane may not appear"],
}


def demo_card(warped: int = 0) -> dict:
    """The told card; its training data name the warped copies when there are any."""
    also = (f"; the volume and baseline networks also on {warped} warped, re-contrasted copies of each brain (new "
            "anatomy and tissue contrast)") if warped else ""
    return {**DEMO_CARD, "training_data": DEMO_CARD["training_data"].format(warped=also)}


def base_config(out: Path, raw: Path, warped: int = 0) -> dict:
    return {
        "seed": 23,
        "data": {
            "sources": [{"kind": "pairs", "images": str(raw / "images"), "masks": str(raw / "masks")}],
            "cache_dir": str(out / "cache"),
            "image_size": 64,
            "slice_axis": "S",
            "crop": "labels",
            "crop_margin": 3,
            "intensity": {"kind": "percentile", "low": 0.5, "high": 99.5},
            "val_cases": VAL_CASES,
            "flip_lr": 0.5,
        },
        "model": {
            "labels": "demo",
            "vae": {"ch": 32, "ch_mult": [1, 2, 2], "num_res_blocks": 1, "z_channels": 4, "embed_dim": 4},
            "unet": {"model_channels": 32, "channel_mult": [1, 2, 4], "num_res_blocks": 1,
                     "attention_resolutions": [2, 4], "num_head_channels": 32},
            "slice_unet": {"context_dim": 64, "channel_mult": [1, 2, 2]},  # keeps the bundle under 50 MB
            "window": 16,
            "overlap": 1,
            "name": "gem3d-demo-brain",
            "description": "Demo GEM-3D model: 64x64 axial T1 brain slices, tissue + tumour labels "
                           "(demo_labels), trained on CPU on MNI152, ITK KmeansTest T1 and pyradiomics brain1 "
                           "with synthetic tumours. A demonstration, not a clinical or benchmark model.",
            "card": demo_card(warped),
        },
        "train": {"ema_decay": 0.999, "grad_clip": 1.0, "log_every": 25, "ckpt_every": 500,
                  "val_every": 0, "threads": 1, "warmup_steps": 100},
        "vae": {"kl_weight": 1e-6, "adv_weight": 0.0},
        "diffusion": {"lesion_weight": 2.0, "lesion_labels": [4, 5, 6]},
        "val": {"steps": 25, "case": "colin27_tumour"},
    }


def stage_config(stage: str, out: Path, raw: Path, scale: float, *, device: str = "auto",
                 budget_minutes: float = 0.0, storage: str = "fp32", first_stage: str = "kl",
                 mask_condition: str = "pool", warped: int = 0, steps: int | None = None) -> dict:
    """One stage's config; ``budget_minutes`` (whole recipe) gives the stage its BUDGET_SHARE as
    ``train.max_minutes`` (it stops there, or at its steps, whichever comes first); ``steps`` replaces
    the schedule's step count (before ``scale``)."""
    cfg = base_config(out, raw, warped)
    cfg["model"]["vae"].update(FIRST_STAGES[first_stage])
    cfg["model"]["mask_condition"] = mask_condition
    if first_stage != "kl":
        cfg["model"]["name"] += f"-{first_stage}"
    scheduled, batch, lr = SCHEDULE[stage]
    steps = scheduled if steps is None else steps
    cfg.update(stage=stage, out=str(out / stage))
    cfg["train"].update(steps=max(2, int(round(steps * scale))), batch_size=batch, lr=lr, device=device,
                        storage=storage, max_minutes=budget_minutes * BUDGET_SHARE[stage])
    cfg["train"]["ckpt_every"] = max(1, min(500, cfg["train"]["steps"] // 4))
    previous = ORDER[ORDER.index(stage) - 1] if stage != "vae" else None
    if previous:
        cfg["model"]["init_bundle"] = str(out / previous / "bundle")
    if stage == "volume-stage2":
        cfg["train"]["ema_decay"] = 0.0  # official: no EMA in stage 2 (its 2-D weights are the stage-1 export)
    return cfg


def _stage_steps(text: str) -> tuple[str, int]:
    """``STAGE=N`` of ``--steps``, checked."""
    stage, _, n = text.partition("=")
    if stage not in SCHEDULE or not n.isdigit() or int(n) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected STAGE=N with STAGE one of {', '.join(SCHEDULE)} "
                                         "and N a positive whole number, e.g. vae=3000")
    return stage, int(n)


def _stale(out: Path, stage: str) -> bool:
    """The stage finished before an earlier stage of the chain did: it started from that stage's old weights."""
    mine = out / stage / "result.json"
    if not mine.is_file():
        return False
    earlier = (out / s / "result.json" for s in ORDER[:ORDER.index(stage)])
    return any(p.is_file() and p.stat().st_mtime > mine.stat().st_mtime for p in earlier)


def _set_aside(folder: Path) -> Path:
    """Rename a stage's run folder to the first free ``<name>.stale-<k>`` (kept, never deleted)."""
    k = 1
    while (stale := folder.with_name(f"{folder.name}.stale-{k}")).exists():
        k += 1
    folder.rename(stale)
    return stale


def _finished(result: dict, cfg: dict) -> bool:
    """A stage's earlier result covers this config: its steps, or a time budget that stopped it."""
    return result["steps"] == cfg["train"]["steps"] or (
        bool(cfg["train"]["max_minutes"]) and result.get("configured_steps") == cfg["train"]["steps"])


def run_stage_subprocess(stage: str, config: Path, log: Path) -> float:
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    with open(log, "a") as fh:
        proc = subprocess.run([sys.executable, "-m", "training", stage, "--config", str(config)],
                              cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"stage {stage} failed (exit {proc.returncode}); see {log}")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.recipes.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder (default runs/demo)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every stage's steps (smoke runs)")
    p.add_argument("--stages", nargs="*", default=list(ORDER), choices=ORDER)
    p.add_argument("--device", default="auto", help="training device: auto, cpu, cuda, cuda:1 (bf16 autocast on a GPU)")
    p.add_argument("--budget-minutes", type=float, default=0.0,
                   help="training time for all stages together, shared by their CPU wall-time shares; a stage stops "
                        "at its share or its steps (raise --scale on a GPU so the budget is what stops it)")
    p.add_argument("--storage", choices=["fp32", "fp16"], default=None,
                   help="bundle weight storage (default: fp16 on a GPU, so every file stays small, else fp32)")
    p.add_argument("--first-stage", choices=list(FIRST_STAGES), default="kl",
                   help="the autoencoder: kl (default, the shipped model) or vq (a VQ-GAN of the same size)")
    p.add_argument("--mask-condition", choices=["pool", "unshuffle"], default="pool",
                   help="how the mask reaches the latent grid: pool (label fractions per latent pixel) or unshuffle "
                        "(every pixel's label, space-to-depth; lossless)")
    p.add_argument("--warped", type=int, default=16,
                   help="new anatomies per training subject: the subject warped and re-contrasted (default 16; "
                        "the shipped model's VAE and slice model were trained with 0, its volume networks with 16)")
    p.add_argument("--steps", nargs="+", default=[], metavar="STAGE=N", type=_stage_steps,
                   help="replace a stage's step count, e.g. --steps vae=3000 volume-stage1=12000 (the scheduled ones: "
                        + ", ".join(f"{k}={v[0]}" for k, v in SCHEDULE.items()) + ")")
    p.add_argument("--skip-eval", action="store_true")
    p.add_argument("--install", action="store_true", help="copy the bundle + demo case into the package")
    args = p.parse_args(argv)
    steps = dict(args.steps)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "configs").mkdir(exist_ok=True)
    t0 = time.perf_counter()
    raw = build_cases(out / "raw", args.warped)
    timing = json.loads((out / "timing.json").read_text()) if (out / "timing.json").exists() else {}
    timing["build_cases_s"] = time.perf_counter() - t0
    storage = args.storage or ("fp16" if args.device.startswith("cuda") else "fp32")
    for stage in args.stages:
        cfg_path = out / "configs" / f"{stage}.yaml"
        cfg = stage_config(stage, out, raw, args.scale, device=args.device, budget_minutes=args.budget_minutes,
                           storage=storage, first_stage=args.first_stage, mask_condition=args.mask_condition,
                           warped=args.warped, steps=steps.get(stage))
        done = out / stage / "result.json"
        if _stale(out, stage):  # trained on an earlier stage's old weights: train it anew
            print(f"[demo] {stage}: an earlier stage was trained after it; its old run is kept as "
                  f"{_set_aside(out / stage)} and it trains anew", flush=True)
        elif done.is_file() and _finished(json.loads(done.read_text()), cfg):
            print(f"[demo] {stage}: already trained ({done})", flush=True)
            continue
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        print(f"[demo] {stage}: python -m training {stage} --config {cfg_path}", flush=True)
        timing[stage] = run_stage_subprocess(stage, cfg_path, out / "train.log")
        (out / "timing.json").write_text(json.dumps(timing, indent=1))
    stale = [stage for stage in ORDER if _stale(out, stage)]
    if stale:
        print(f"[demo] warning: {', '.join(stale)} in {out} started from an earlier stage's old weights; "
              f"re-run with --stages {' '.join(stale)} to train them anew", flush=True)
    bundle = out / ORDER[-1] / "bundle"
    if not args.skip_eval:
        from .evaluate import evaluate

        timing["evaluate_s"] = evaluate(bundle, out)
        (out / "timing.json").write_text(json.dumps(timing, indent=1))
    if (out / "eval.json").is_file():
        from .report import write_report

        command = f"python -m training.recipes.demo --out {args.out} --install (stages resume; this report: " + \
            " ".join(argv if argv is not None else sys.argv[1:]) + ")"
        print(f"[demo] report: {write_report(out, ORDER, command)}", flush=True)
    if args.install:
        dest = PACKAGE_DATA / "demo_model"
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(bundle, dest)
        write_demo_case(PACKAGE_DATA / "demo_case")
        print(f"[demo] installed {dest} and {PACKAGE_DATA / 'demo_case'} ({DEMO_CASE_NAME})")
    print(f"[demo] done in {time.perf_counter() - t0:.0f} s; bundle {bundle}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
