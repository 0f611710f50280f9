"""``training/studies/REPORT.md`` from the studies' JSON results (``OUT/<study>.json``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from napari_gem3d.io import atomic_write

from .samplers import FAST_NAME, FAST_SDE_NAME, GOAL_SOLVERS

HERE = Path(__file__).resolve().parent

TITLES = {
    "table2": "Table 2: GEM-3D (true informed slice) vs the mask-only baseline",
    "table1": "Table 1: FID-A/C/S by informed-slice source, with and without mask augmentation",
    "c1": "C.1: overlap inpainting on vs off",
    "c2": "C.2: stage 2 (temporal layers) vs stage 1 only",
    "compat": "official_compat vs the fixed sampler",
    "coherence": "Slice-to-slice stripes: noise prior and solver",
    "downstream": "Table 4 (small): downstream segmentation with GEM-3D-enhanced training data",
    "pretrain": "Issue 17: diffusion-pretrained segmenter (± coordinate head) vs GEM-3D data, 1-3 labelled subjects",
    "first_stage": "Issue 17: KL autoencoder vs VQ-GAN first stage at equal size, each under a whole GEM-3D chain",
}
COLUMNS = {
    "table2": ("ms_ssim", "psnr_db", "stripe_index", "consistency_ratio", "seconds"),
    "table1": ("FID-A", "FID-C", "FID-S"),
    "c1": ("ms_ssim", "stripe_index", "consistency_ratio", "seam_ratio", "seam_ratio_real"),
    "c2": ("ms_ssim", "stripe_index", "consistency_ratio", "seam_ratio", "seam_ratio_real"),
    "compat": ("ms_ssim", "stripe_index", "consistency_ratio", "seam_ratio", "seam_ratio_real"),
    "coherence": ("ms_ssim", "stripe_index", "slice_axis_ratio", "in_plane_ratio", "seam_ratio", "seconds"),
    "downstream": ("volumes", "dice_tumour", "dice_tissue", "dice_csf", "dice_gm", "dice_wm", "hd95_tumour_mm"),
    "pretrain": ("volumes", "dice_tumour", "dice_tissue", "dice_csf", "dice_gm", "dice_wm", "hd95_tumour_mm"),
    "first_stage": ("parameters_first_stage", "recon_psnr_db", "recon_ms_ssim", "ms_ssim", "stripe_index",
                    "slice_axis_ratio", "in_plane_ratio", "FID-A", "FID-C", "FID-S", "dice_tissue", "dice_tumour"),
}
NAMES = {
    "ms_ssim": "MS-SSIM ↑", "psnr_db": "PSNR dB ↑", "stripe_index": "stripe index (1 = real)",
    "slice_axis_ratio": "across slices (gen/real)", "in_plane_ratio": "in plane (gen/real)",
    "consistency_ratio": "consistency ratio (1 = real)",
    "seam_ratio": "seam ratio (generated)", "seam_ratio_real": "seam ratio (real, same indices)",
    "seconds": "s / volume", "FID-A": "FID-A ↓", "FID-C": "FID-C ↓", "FID-S": "FID-S ↓",
    "volumes": "training volumes", "dice_tumour": "Dice tumour ↑", "dice_tissue": "Dice tissue ↑",
    "hd95_tumour_mm": "HD95 tumour mm ↓", "parameters_first_stage": "first-stage parameters",
    "dice_csf": "Dice CSF ↑", "dice_gm": "Dice GM ↑", "dice_wm": "Dice WM ↑",
    "recon_psnr_db": "round trip PSNR dB ↑", "recon_ms_ssim": "round trip MS-SSIM ↑",
}


def _cell(stat: dict) -> str:
    if stat is None or stat.get("n", 0) == 0 or not math.isfinite(stat["mean"]):
        return "n/a"
    if stat.get("std", 0.0) == 0.0 and stat.get("n", 1) == 1:
        return f"{stat['mean']:.4g}"
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def table_markdown(study: str, result: dict) -> list[str]:
    cols = COLUMNS[study]
    lines = ["| condition | " + " | ".join(NAMES[c] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for label, row in result["rows"].items():
        lines.append(f"| {label} | " + " | ".join(_cell(row.get(c)) for c in cols) + " |")
    return lines


def _sections(text: str) -> dict[str, str]:
    """The ``## title`` sections of an earlier report, by title (heading line included)."""
    found, title, lines = {}, None, []
    for line in text.splitlines():
        if line.startswith("## "):
            if title is not None:
                found[title] = "\n".join(lines).rstrip("\n")
            title, lines = line[3:].strip(), [line]
        elif title is not None:
            lines.append(line)
    if title is not None:
        found[title] = "\n".join(lines).rstrip("\n")
    return found


def write_report(out: Path, header: list[str], findings: dict[str, str], dest: Path = HERE / "REPORT.md",
                 goals: list[str] | None = None) -> Path:
    """The report: a section per study with results in ``out``; a study not re-run keeps its section from the
    earlier ``dest`` (marked as such), so running a subset never drops the others."""
    earlier = _sections(dest.read_text()) if dest.is_file() else {}
    lines = ["# Studies on the demo set-up", "", *header, ""]
    if goals:
        lines += ["## " + GOALS_TITLE, "", *goals, ""]
    for study, title in TITLES.items():
        path = out / f"{study}.json"
        if not path.is_file():
            if title in earlier:
                kept = earlier[title]
                note = "_(Kept from an earlier run: not re-run with the model and settings above.)_"
                if note not in kept:
                    kept = kept.replace("\n", f"\n\n{note}\n", 1)
                lines += [kept, ""]
            continue
        result = json.loads(path.read_text())
        lines += [f"## {title}", ""]
        expected = result.get("expected")
        if isinstance(expected, dict):
            expected = expected.get(study)
        meta = {k: v for k, v in result.items() if k not in ("rows", "expected")}
        lines += [f"Set-up: `{json.dumps(meta)}`", ""]
        lines += table_markdown(study, result)
        lines += ["", f"**Paper's claim:** {expected}", ""]
        if study in READINGS:
            lines += [f"**Reading:** {READINGS[study](result)}", ""]
        if study in findings:
            lines += [f"**Ours:** {findings[study]}", ""]
    _atomic_write(dest, "\n".join(lines))
    return dest


def write_results(out: Path, goals: dict, dest: Path = HERE / "results.json") -> Path:
    """``results.json``: every study's numbers (those in ``out`` replace earlier ones) and the goals."""
    results = json.loads(dest.read_text()) if dest.is_file() else {}
    for study in TITLES:
        path = out / f"{study}.json"
        if path.is_file():
            results[study] = json.loads(path.read_text())
    results["goals"] = goals
    _atomic_write(dest, json.dumps(results, indent=1))
    return dest


def _atomic_write(path: Path, text: str) -> None:
    with atomic_write(path, "w") as fh:
        fh.write(text)


GOALS_TITLE = "Coherence goals (issue 15), measured"


def _mean(result: dict | None, row: str, metric: str) -> float | None:
    stat = (result or {}).get("rows", {}).get(row, {}).get(metric)
    return None if not stat or not stat.get("n") else float(stat["mean"])


def coherence_goals(out: Path) -> dict:
    """The coherence issue's goals on held-out Colin27, each ``{"value", "target", "met"}`` (None: not run)."""
    def load(study):
        path = out / f"{study}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    coh, c1, t2 = load("coherence"), load("c1"), load("table2")
    goals = {}
    for solver in GOAL_SOLVERS:
        value = _mean(coh, f"held out: model's noise prior, {solver}", "stripe_index")
        goals[f"stripe index <= 1.2 (GEM-3D, {solver})"] = {"value": value, "target": 1.2,
                                                             "met": None if value is None else value <= 1.2}
    for name in GOAL_SOLVERS:
        suffix = "" if name == "DDIM eta 1" else f", {name}"
        on = _mean(c1, f"overlap inpainting on{suffix}", "seam_ratio")
        off = _mean(c1, f"overlap inpainting off{suffix}", "seam_ratio")
        met = None if on is None or off is None else (on <= off and on <= 1.1)
        goals[f"C.1 seam ratio with inpainting <= without and <= 1.1 ({name})"] = {
            "value": on, "without": off, "target": 1.1, "met": met}
    gem, base = _mean(t2, "GEM-3D (true informed slice)", "ms_ssim"), _mean(t2, "mask-only baseline", "ms_ssim")
    goals["Table 2: GEM-3D MS-SSIM >= mask-only baseline (DDIM eta 1)"] = {
        "value": gem, "baseline": base, "met": None if gem is None or base is None else gem >= base}
    gem = _mean(coh, f"held out: model's noise prior, {FAST_NAME}", "ms_ssim")
    base = _mean(coh, f"held out: mask-only baseline, {FAST_NAME}", "ms_ssim")
    goals[f"Table 2: GEM-3D MS-SSIM >= mask-only baseline ({FAST_NAME})"] = {
        "value": gem, "baseline": base, "met": None if gem is None or base is None else gem >= base}
    return goals


def goals_markdown(goals: dict) -> list[str]:
    lines = ["| goal | ours | met |", "|---|---|---|"]
    for name, g in goals.items():
        value = "not run" if g.get("value") is None else f"{g['value']:.3f}"
        for other in ("without", "baseline"):
            if g.get(other) is not None:
                value += f" ({other}: {g[other]:.3f})"
        met = {True: "yes", False: "**no**", None: "-"}[g.get("met")]
        lines.append(f"| {name} | {value} | {met} |")
    return lines


def _compare(result: dict, a: str, b: str, metric: str, better: str) -> str:
    """One sentence: does row ``a`` beat row ``b`` on ``metric`` (higher / lower / closer to 1)?"""
    ra, rb = result["rows"][a].get(metric), result["rows"][b].get(metric)
    if not ra or not rb or not ra["n"] or not rb["n"]:
        return f"{metric}: not measured"
    ma, mb = ra["mean"], rb["mean"]
    key = {"higher": lambda v: v, "lower": lambda v: -v, "closer1": lambda v: -abs(v - 1.0)}[better]
    wins = key(ma) > key(mb)
    spread = max(ra["std"], rb["std"])
    sure = "beyond" if abs(ma - mb) > spread else "within"
    verdict = "agrees" if wins else "DISAGREES"
    return f"{NAMES.get(metric, metric)} {ma:.3f} vs {mb:.3f} ({a} vs {b}): {verdict}, {sure} the seed spread"


def subject_row(subjects: int, arm: str) -> str:
    """The pretrain study's row label: ``arm`` trained with ``subjects`` labelled subjects."""
    return f"{subjects} labelled subject{'s' if subjects > 1 else ''}: {arm}"


#: (row a, row b, metric, which is better) pairs whose order the paper predicts (a better than b)
CLAIMS = {
    "table2": [("GEM-3D (true informed slice)", "mask-only baseline", "ms_ssim", "higher")],
    "table1": [(f"{src}{aug}", f"mask-only baseline{aug}", view, "lower")
               for aug in ("", ", mask augmented") for src in ("IC: cross-picked slice", "IG: generated slice")
               for view in ("FID-A", "FID-C", "FID-S")],
    "c1": [(f"overlap inpainting on{s}", f"overlap inpainting off{s}", m, b)
           for s in ("", f", {FAST_NAME}", f", {FAST_SDE_NAME}")
           for m, b in (("consistency_ratio", "closer1"), ("seam_ratio", "closer1"), ("ms_ssim", "higher"))],
    "c2": [("stage 1 + stage 2 (temporal layers)", "stage 1 only (2-D network)", "consistency_ratio", "closer1"),
           ("stage 1 + stage 2 (temporal layers)", "stage 1 only (2-D network)", "seam_ratio", "closer1"),
           ("stage 1 + stage 2 (temporal layers)", "stage 1 only (2-D network)", "ms_ssim", "higher")],
    "compat": [("fixed sampler", "official_compat (official plan and re-noising)", "consistency_ratio", "closer1"),
               ("fixed sampler", "official_compat (official plan and re-noising)", "seam_ratio", "closer1"),
               ("fixed sampler", "official_compat (official plan and re-noising)", "ms_ssim", "higher")],
    "coherence": [(f"held out: model's noise prior, {solver}",
                   "held out: independent slice noise (rho = 0, the paper), DDIM eta 1", m, b)
                  for solver in GOAL_SOLVERS
                  for m, b in (("stripe_index", "closer1"), ("ms_ssim", "higher"))],
    "downstream": [(f"real + {k}x GEM-3D", "real only", m, b) for k in (1, 2, 3)
                   for m, b in (("dice_tumour", "higher"), ("dice_tissue", "higher"))],
    "pretrain": [(subject_row(n, a), subject_row(n, b), m, better) for n in (1, 2, 3)
                 for a, b in (("diffusion-pretrained", "random init"),
                              ("diffusion-pretrained + coordinate head", "random init"),
                              ("diffusion-pretrained + coordinate head", "diffusion-pretrained"),
                              ("GEM-3D-enhanced data", "random init"),
                              ("pretrained (+ coordinates) and GEM-3D data", "random init"),
                              ("2.5-D (3 slices), random init", "random init"),
                              ("2.5-D (3 slices), diffusion-pretrained + coordinate head",
                               "2.5-D (3 slices), random init"))
                 for m, better in (("dice_tumour", "higher"), ("dice_tissue", "higher"), ("hd95_tumour_mm", "lower"))],
    "first_stage": [("VQ-GAN, same size and schedule", "KL autoencoder (the run's chain)", m, better)
                    for m, better in (("recon_psnr_db", "higher"), ("recon_ms_ssim", "higher"), ("ms_ssim", "higher"),
                                      ("stripe_index", "closer1"), ("FID-A", "lower"), ("FID-C", "lower"),
                                      ("FID-S", "lower"), ("dice_tissue", "higher"), ("dice_tumour", "higher"))],
}


def findings(out: Path) -> dict[str, str]:
    """Each study's claims checked against its numbers, as Markdown bullet lists."""
    found = {}
    for study, claims in CLAIMS.items():
        path = out / f"{study}.json"
        if not path.is_file():
            continue
        result = json.loads(path.read_text())
        lines = [_compare(result, *c) for c in claims if c[0] in result["rows"] and c[1] in result["rows"]]
        agree = sum("agrees" in s for s in lines)
        found[study] = f"{agree} of {len(lines)} orderings agree.\n\n" + "\n".join(f"- {s}" for s in lines)
    return found


def _delta(result: dict, a: str, b: str, metric: str) -> float | None:
    ma, mb = _mean(result, a, metric), _mean(result, b, metric)
    return None if ma is None or mb is None else ma - mb


def _signed(values: list[float | None]) -> str:
    return ", ".join("n/a" if v is None else f"{v:+.3f}" for v in values)


def pretrain_reading(result: dict) -> str:
    """The pretrain study's main differences in tissue Dice, per labelled-subject count, in one paragraph."""
    counts = [n for n in (1, 2, 3) if subject_row(n, "random init") in result["rows"]]

    def gain(arm: str, base: str = "random init") -> str:
        return _signed([_delta(result, subject_row(n, arm), subject_row(n, base), "dice_tissue") for n in counts])

    tumour = [_mean(result, row, "dice_tumour") for row in result["rows"]]
    best_tumour = max((t for t in tumour if t is not None), default=float("nan"))
    text = (f"tissue Dice change against random initialisation with {', '.join(map(str, counts))} labelled "
            f"subject(s): diffusion-pretrained {gain('diffusion-pretrained')}; with the coordinate head "
            f"{gain('diffusion-pretrained + coordinate head')}; GEM-3D-enhanced data {gain('GEM-3D-enhanced data')}; "
            f"pretrained (+ coordinates) with GEM-3D data {gain('pretrained (+ coordinates) and GEM-3D data')}.")
    if any(subject_row(n, "2.5-D (3 slices), random init") in result["rows"] for n in counts):
        flat = "2.5-D (3 slices), random init"
        text += (f" 2.5-D (3 slices) against 2-D, both random init: {gain(flat)}; "
                 "2.5-D pretrained (+ coordinates) against 2.5-D random init: "
                 f"{gain('2.5-D (3 slices), diffusion-pretrained + coordinate head', flat)}.")
    return text + (f" Tumour Dice is at most {best_tumour:.3f} in any arm: at this scale the tumour is essentially "
                   "not found, so only the tissue numbers carry information.")


def first_stage_reading(result: dict) -> str:
    """KL vs VQ in one paragraph: each measure's difference, VQ minus KL."""
    rows = list(result["rows"])
    if len(rows) != 2:
        return "two chains are needed for a comparison."
    kl, vq = rows
    parts = [f"{NAMES.get(m, m)} {_signed([_delta(result, vq, kl, m)])}"
             for m in COLUMNS["first_stage"] if m != "parameters_first_stage"]
    return f"VQ minus KL (same size, same schedule): {'; '.join(parts)}."


#: a generated paragraph per study that reads its table (beside the claim-by-claim list)
READINGS = {"pretrain": pretrain_reading, "first_stage": first_stage_reading}
