"""Real vs generated folders -> one table of metrics (per case, mean/std, set-level FIDs), CSV and Markdown.

Pairing: :func:`napari_gem3d.batch.pair_generated` (generated ``<case>*`` after real ``<case>``). Paired
metrics (MS-SSIM, SSIM, PSNR, consistency) need the generated volume in the real volume's geometry; a pair
that differs gets empty paired metrics and a note. FIDs compare the set of real volumes that have at
least one generated volume with the set of all generated volumes.
"""

from __future__ import annotations

import csv
import io as _io
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..volume import Volume, same_grid

CASE_COLUMNS = (
    "ms_ssim",
    "ssim",
    "psnr_db",
    "adj_diff_real",
    "adj_diff_generated",
    "consistency_ratio",
    "seam_ratio_generated",
    "seam_ratio_real",
    "stripe_index",
    "slice_axis_ratio",
    "in_plane_ratio",
)
SET_COLUMNS = ("fid_a", "fid_c", "fid_s", "fid_3d")
CSV_COLUMNS = (
    "scope",
    "case",
    "generated",
    *CASE_COLUMNS,
    *SET_COLUMNS,
    "extractor",
    "ms_ssim_config",
    "note",
)
TITLES = {
    "ms_ssim": "MS-SSIM",
    "ssim": "SSIM",
    "psnr_db": "PSNR (dB)",
    "adj_diff_real": "adj. diff real",
    "adj_diff_generated": "adj. diff gen",
    "consistency_ratio": "consistency gen/real",
    "seam_ratio_generated": "seam ratio gen",
    "seam_ratio_real": "seam ratio real",
    "stripe_index": "stripe index",
    "slice_axis_ratio": "across slices gen/real",
    "in_plane_ratio": "in plane gen/real",
    "fid_a": "FID-A",
    "fid_c": "FID-C",
    "fid_s": "FID-S",
    "fid_3d": "FID-3D",
}


@dataclass
class EvaluationReport:
    cases: list[dict[str, Any]]
    fid: dict[str, float]
    extractor: str
    fid_3d_extractor: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, dict[str, float]]:
        """Mean and standard deviation (ddof 1) of each per-case metric over the cases that have it."""
        out = {}
        for col in CASE_COLUMNS:
            vals = np.array([c[col] for c in self.cases if _finite_or_inf(c.get(col))], dtype=np.float64)
            if vals.size:
                std = float(np.std(vals, ddof=1)) if vals.size > 1 and np.all(np.isfinite(vals)) else math.nan
                out[col] = {"mean": float(np.mean(vals)), "std": std, "n": int(vals.size)}
        return out

    def rows(self) -> list[dict[str, Any]]:
        rows = [{"scope": "case", **c} for c in self.cases]
        summ = self.summary()
        for stat in ("mean", "std"):
            rows.append(
                {"scope": stat, "case": f"{stat} over cases", **{k: v[stat] for k, v in summ.items()}}
            )
        fid_row = {
            "scope": "set",
            "case": f"{self.counts.get('real', 0)} real vs {self.counts.get('generated', 0)} "
            "generated volumes",
            "extractor": self.extractor,
        }
        fid_row.update(
            {
                "fid_a": self.fid.get("FID-A"),
                "fid_c": self.fid.get("FID-C"),
                "fid_s": self.fid.get("FID-S"),
                "fid_3d": self.fid.get("FID-3D"),
            }
        )
        if self.fid_3d_extractor:
            fid_row["note"] = f"FID-3D extractor: {self.fid_3d_extractor}"
        rows.append(fid_row)
        return rows

    def to_csv(self) -> str:
        buf = _io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in self.rows():
            writer.writerow({k: _fmt(row.get(k), csv=True) for k in CSV_COLUMNS})
        return buf.getvalue()

    def to_markdown(self) -> str:
        lines = ["# Evaluation: generated vs real", ""]
        lines += [f"- Feature extractor for FID-A/C/S: **{self.extractor}**"]
        if self.fid_3d_extractor:
            lines += [f"- Feature extractor for FID-3D: **{self.fid_3d_extractor}**"]
        lines += [f"- {n}" for n in self.notes] + ["", "## Set level", ""]
        lines += _md_table(
            ["FID-A", "FID-C", "FID-S", "FID-3D", "extractor"],
            [[_fmt(self.fid.get(k)) for k in ("FID-A", "FID-C", "FID-S", "FID-3D")] + [self.extractor]],
        )
        lines += ["", "## Over cases (mean ± std)", ""]
        summ = self.summary()
        lines += _md_table(
            ["metric", "mean ± std", "n"],
            [[TITLES[k], f"{_fmt(v['mean'])} ± {_fmt(v['std'])}", str(v["n"])] for k, v in summ.items()],
        )
        lines += ["", "## Per case", ""]
        head = ["case", "generated", *[TITLES[c] for c in CASE_COLUMNS], "MS-SSIM configuration", "note"]
        body = [
            [
                c["case"],
                c["generated"],
                *[_fmt(c.get(k)) for k in CASE_COLUMNS],
                c.get("ms_ssim_config", ""),
                c.get("note", ""),
            ]
            for c in self.cases
        ]
        lines += _md_table(head, body)
        return "\n".join(lines) + "\n"


def _finite_or_inf(v: Any) -> bool:
    return isinstance(v, (int, float)) and not math.isnan(v)


def _fmt(v: Any, csv: bool = False) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return "" if csv else "–"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v) if csv else f"{v:.4g}"
    return str(v)


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    def esc(s: str) -> str:
        return str(s).replace("|", "\\|")

    out = ["| " + " | ".join(esc(h) for h in head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return out


def _pair_metrics(real: Volume, gen: Volume, device: str) -> dict[str, Any]:
    from .consistency import axis_ratios, consistency, window_seams
    from .similarity import compare_volumes

    row: dict[str, Any] = {}
    if not same_grid(real, gen):
        row["note"] = f"geometry differs (real {real.shape}, generated {gen.shape}): no paired metrics"
        return row
    sim = compare_volumes(real.array, gen.array, device=device)
    row.update({k: sim[k] for k in ("ms_ssim", "ssim", "psnr_db", "ms_ssim_config")})
    prov = gen.header.get("provenance") or {}
    axis = (prov.get("grid") or {}).get("slice_axis", "S")
    cons = consistency(real, gen, slice_axis=axis)
    seams = window_seams(cons.generated_profile.size + 1, prov)
    across, within = axis_ratios(gen, real, axis)
    cons = replace(cons, boundaries=tuple(seams))
    row.update(
        {
            "adj_diff_real": cons.real_mean,
            "adj_diff_generated": cons.generated_mean,
            "consistency_ratio": cons.ratio,
            "seam_ratio_generated": cons.seam_ratio_generated,
            "seam_ratio_real": cons.seam_ratio_real,
            "stripe_index": across / within,
            "slice_axis_ratio": across,
            "in_plane_ratio": within,
        }
    )
    if not seams:
        row["note"] = (
            "one window: no seams"
            if "window" in prov
            else "no sampler provenance: seam ratios need the window plan"
        )
    return row


def evaluate_folders(
    real_dir: str | Path,
    generated_dir: str | Path,
    *,
    extractor,
    fid_3d_extractor=None,
    stride: int = 1,
    device: str = "cpu",
    log: Callable[[str], None] = lambda s: None,
) -> EvaluationReport:
    """Every generated volume against its real case; FID-A/C/S (and FID-3D) between the two sets."""
    from ..cases import pair_generated, volume_files
    from ..io import read_volume
    from .fid import ViewFeatures, fid_views, frechet_distance

    pairs = pair_generated(volume_files(real_dir), volume_files(generated_dir))
    real_feats, gen_feats = ViewFeatures(extractor, stride), ViewFeatures(extractor, stride)
    real_3d, gen_3d = [], []
    cases, seen_real = [], set()
    for i, (rp, gp) in enumerate(pairs, start=1):
        real, gen = read_volume(rp), read_volume(gp)
        row = {"case": rp.name, "generated": gp.name, **_pair_metrics(real, gen, device)}
        cases.append(row)
        if rp not in seen_real:
            seen_real.add(rp)
            real_feats.add(real)
            if fid_3d_extractor is not None:
                real_3d.append(fid_3d_extractor(real))
        gen_feats.add(gen)
        if fid_3d_extractor is not None:
            gen_3d.append(fid_3d_extractor(gen))
        log(f"{i}/{len(pairs)} {gp.name}")
    notes = [
        "MS-SSIM/SSIM/PSNR: both volumes mapped to [0, 1] by the real volume's 0.5-99.5 percentile window "
        "(data_range 1); PSNR is inf for identical volumes.",
        "Consistency: mean |slice z+1 - slice z| along the generation axis; ratio generated/real "
        "(1 = as real, >1 flicker, <1 over-smooth); seam ratio = difference across window boundaries / "
        "elsewhere (1 = no seams). Stripe index: the slice-axis gen/real ratio of neighbouring-voxel "
        "differences (across slices gen/real) over the mean in-plane ratio (in plane gen/real), each volume on "
        "its own 1-99 percentile window (1 = as real; slice-to-slice stripes push it up, and so does in-plane "
        "blur: read the two parts).",
        f"FID: every {'' if stride == 1 else f'{stride}th '}slice of each view, each volume on its own "
        "0.5-99.5 "
        "percentile window, fitted into the extractor's input square.",
    ]
    if "offline fallback" in extractor.name:
        notes.append(
            "The fallback extractor is untrained: its FIDs measure intensity/texture/edge statistics, "
            "not anatomy, and compare only with FIDs from the same extractor name."
        )
    fid: dict[str, float] = {}
    if len(seen_real) >= 1 and len(pairs) >= 1:
        try:
            fid.update(fid_views(real_feats, gen_feats))
        except ValueError as exc:
            notes.append(f"FID-A/C/S not computed: {exc}")
    if fid_3d_extractor is not None:
        if len(real_3d) >= 2 and len(gen_3d) >= 2:
            fid["FID-3D"] = frechet_distance(np.stack(real_3d), np.stack(gen_3d))
        else:
            notes.append("FID-3D not computed: it needs at least 2 real and 2 generated volumes")
    return EvaluationReport(
        cases=cases,
        fid=fid,
        extractor=extractor.name,
        fid_3d_extractor=None if fid_3d_extractor is None else fid_3d_extractor.name,
        counts={"real": len(seen_real), "generated": len(pairs)},
        notes=notes,
    )


def write_report(report: EvaluationReport, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``metrics.csv`` and ``metrics.md`` atomically into ``out_dir`` (created if needed)."""
    from ..io import atomic_write

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "metrics.csv", out / "metrics.md"
    for path, text in zip(paths, (report.to_csv(), report.to_markdown()), strict=True):
        with atomic_write(path, "w") as fh:
            fh.write(text)
    return paths
