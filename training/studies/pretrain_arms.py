"""Issue 17: diffusion pretraining with anatomical guidance vs GEM-3D-enhanced data, with 1-3 labelled subjects.

Arms (the downstream study's segmenter, steps and scoring on the held-out real ``colin27_tumour``):

- random init: trained on the real cases of the first n labelled subjects only;
- diffusion-pretrained: the encoder of a ``pretrain-seg`` run (denoising only) loaded, then fine-tuned;
- diffusion-pretrained + coordinate head: the same with the coordinate-regression head in pretraining;
- GEM-3D-enhanced data: random init, each real case plus one GEM-3D re-generation (augmented mask);
- pretrained (+ coordinates) and GEM-3D data: both.

Pretraining sees the *images* of every training case of the three training subjects (no masks; Colin27
never), so "n labelled subjects" means n subjects' masks and up to 3 subjects' unlabelled images. The two
pretraining runs are trained once (``OUT/pretrain/<name>/``, resumable) and shared by every seed.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..config import TrainConfig, load_config
from ..pretrain_seg.config import PretrainOptions, PretrainSegConfig
from ..run import run_task
from .context import StudyContext, summarise
from .downstream import STEPS, SUBJECTS, TEST_CASE, score, train_segmenter, training_pairs
from .report import subject_row

PRETRAIN_STEPS = 1000
#: arm -> (pretrained encoder: None | "denoise" | "coord", GEM-3D copies per real case)
ARMS = {
    "random init": (None, 0),
    "diffusion-pretrained": ("denoise", 0),
    "diffusion-pretrained + coordinate head": ("coord", 0),
    "GEM-3D-enhanced data": (None, 1),
    "pretrained (+ coordinates) and GEM-3D data": ("coord", 1),
}
EXPECTED = ("(Not one of the paper's tables; issue 17's hypothesis.) Diffusion pretraining beats random "
            "initialisation, the coordinate head adds to it, most with the fewest labelled subjects; "
            "GEM-3D-enhanced data helps; both together help most.")


def pretrain(ctx: StudyContext, name: str, steps: int, threads: int = 1) -> Path:
    """The ``pretrain-seg`` run ``name`` ("denoise" or "coord") on the demo run's data; its export folder."""
    data = load_config(ctx.run / "configs" / "baseline.yaml").data
    out = ctx.out / "pretrain" / name
    result = out / "result.json"
    if not (result.is_file() and json.loads(result.read_text())["steps"] == steps):
        cfg = PretrainSegConfig(
            out=str(out), seed=23, data=data,
            train=TrainConfig(steps=steps, batch_size=16, lr=2e-3, weight_decay=1e-4, warmup_steps=50,
                              ema_decay=0.0, threads=threads, device="cpu" if ctx.device == "cpu" else "auto",
                              log_every=25, ckpt_every=max(1, steps // 4)),
            pretrain=PretrainOptions(coord_weight=1.0 if name == "coord" else 0.0))
        from ..pretrain_seg.task import PretrainSegTask

        run_task(cfg, PretrainSegTask, progress=False)
    return out / "bundle"


def pretrain_arms(ctx: StudyContext, *, counts: tuple[int, ...] = (1, 2, 3), seg_steps: int = STEPS,
                  pretrain_steps: int = PRETRAIN_STEPS) -> dict:
    inits = {name: pretrain(ctx, name, pretrain_steps) for name in ("denoise", "coord")}
    losses = {name: json.loads((path.parent / "result.json").read_text())["last"] for name, path in inits.items()}
    rows = {}
    for n in counts:
        subjects = SUBJECTS[:n]
        for arm, (init, copies) in ARMS.items():
            pairs = training_pairs(ctx, copies, subjects)
            per: dict[str, list[float]] = {}
            for seed in ctx.seeds:
                net = train_segmenter(pairs, seed, steps=seg_steps, init=inits[init] if init else None)
                for m, v in score(ctx, net).items():
                    per.setdefault(m, []).append(v)
            rows[subject_row(n, arm)] = {m: summarise(v) for m, v in per.items()} | {
                "volumes": {"mean": len(pairs), "std": 0.0, "n": 1}}
    return {"rows": rows, "subjects": list(SUBJECTS[: max(counts)]), "test_case": TEST_CASE, "seg_steps": seg_steps,
            "pretrain_steps": pretrain_steps, "pretrain_last_losses": losses, "seeds": list(ctx.seeds),
            "coordinates": "normalised (slice, row, column) position in the model frame (brain bounding box), "
                           "not MNI", "expected": EXPECTED}
