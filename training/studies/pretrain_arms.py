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
#: arm -> (pretrained encoder: None | a PRETRAININGS name, GEM-3D copies per real case, 2.5-D context slices)
ARMS = {
    "random init": (None, 0, 0),
    "diffusion-pretrained": ("denoise", 0, 0),
    "diffusion-pretrained + coordinate head": ("coord", 0, 0),
    "GEM-3D-enhanced data": (None, 1, 0),
    "pretrained (+ coordinates) and GEM-3D data": ("coord", 1, 0),
    "2.5-D (3 slices), random init": (None, 0, 1),
    "2.5-D (3 slices), diffusion-pretrained + coordinate head": ("coord-2.5d", 0, 1),
}
#: pretraining run -> (coordinate head, 2.5-D context slices)
PRETRAININGS = {"denoise": (False, 0), "coord": (True, 0), "coord-2.5d": (True, 1)}
EXPECTED = ("(Not one of the paper's tables; issue 17's hypothesis.) Diffusion pretraining beats random "
            "initialisation, the coordinate head adds to it, most with the fewest labelled subjects; "
            "GEM-3D-enhanced data helps; both together help most.")


def pretrain(ctx: StudyContext, name: str, steps: int, threads: int = 1) -> Path:
    """The ``pretrain-seg`` run ``name`` (of PRETRAININGS) on the demo run's data; its export folder."""
    coordinates, context = PRETRAININGS[name]
    data = load_config(ctx.run / "configs" / "baseline.yaml").data
    out = ctx.out / "pretrain" / name
    result = out / "result.json"
    if not (result.is_file() and json.loads(result.read_text())["steps"] == steps):
        cfg = PretrainSegConfig(
            out=str(out), seed=23, data=data,
            train=TrainConfig(steps=steps, batch_size=16, lr=2e-3, weight_decay=1e-4, warmup_steps=50,
                              ema_decay=0.0, threads=threads, device="cpu" if ctx.device == "cpu" else "auto",
                              log_every=25, ckpt_every=max(1, steps // 4)),
            pretrain=PretrainOptions(coord_weight=1.0 if coordinates else 0.0, context=context))
        from ..pretrain_seg.task import PretrainSegTask

        run_task(cfg, PretrainSegTask, progress=False)
    return out / "bundle"


def pretrain_arms(ctx: StudyContext, *, counts: tuple[int, ...] = (1, 2, 3), seg_steps: int = STEPS,
                  pretrain_steps: int = PRETRAIN_STEPS, arms: tuple[str, ...] | None = None,
                  earlier: dict | None = None) -> dict:
    """Every arm of ``arms`` (default all) for each labelled-subject count; rows of ``earlier`` (a previous
    result with the same steps and seeds) for arms not run now are kept."""
    arms = tuple(ARMS) if arms is None else arms
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        raise ValueError(f"unknown arm(s) {unknown}; known: {list(ARMS)}")
    needed = sorted({ARMS[a][0] for a in arms} - {None})
    inits = {name: pretrain(ctx, name, pretrain_steps) for name in needed}
    losses = {name: json.loads((path.parent / "result.json").read_text())["last"] for name, path in inits.items()}
    same = earlier is not None and all(earlier.get(k) == v for k, v in (
        ("seg_steps", seg_steps), ("pretrain_steps", pretrain_steps), ("seeds", list(ctx.seeds))))
    rows = dict(earlier["rows"]) if same else {}
    losses = {**(earlier.get("pretrain_last_losses", {}) if same else {}), **losses}
    for n in counts:
        subjects = SUBJECTS[:n]
        for arm in arms:
            init, copies, context = ARMS[arm]
            pairs = training_pairs(ctx, copies, subjects)
            per: dict[str, list[float]] = {}
            for seed in ctx.seeds:
                net = train_segmenter(pairs, seed, steps=seg_steps, init=inits[init] if init else None,
                                      context=context)
                for m, v in score(ctx, net).items():
                    per.setdefault(m, []).append(v)
            rows[subject_row(n, arm)] = {m: summarise(v) for m, v in per.items()} | {
                "volumes": {"mean": len(pairs), "std": 0.0, "n": 1}}
    order = [subject_row(n, a) for n in (1, 2, 3) for a in ARMS]
    rows = {k: rows[k] for k in sorted(rows, key=lambda k: order.index(k) if k in order else len(order))}
    return {"rows": rows, "subjects": list(SUBJECTS[: max(counts)]), "test_case": TEST_CASE, "seg_steps": seg_steps,
            "pretrain_steps": pretrain_steps, "pretrain_last_losses": losses, "seeds": list(ctx.seeds),
            "coordinates": "normalised (slice, row, column) position in the model frame (brain bounding box), "
                           "not MNI",
            "2.5-D": "3 input channels: the slice and its two neighbours (end slices repeated); pretrained the same "
                     "way, the middle slice denoised", "expected": EXPECTED}
