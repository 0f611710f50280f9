"""The studies' report checks the paper's orderings against the numbers, both ways, and shows gaps as n/a."""

from __future__ import annotations

import json

from training.studies.report import (
    GOALS_TITLE,
    coherence_goals,
    findings,
    first_stage_reading,
    goals_markdown,
    pretrain_reading,
    subject_row,
    table_markdown,
    write_report,
    write_results,
)
from training.studies.samplers import FAST_NAME


def _stat(mean, std=0.01, n=3):
    return {"mean": mean, "std": std, "n": n}


def _table2(gem, base, std=0.01):
    return {"rows": {"GEM-3D (true informed slice)": {"ms_ssim": _stat(gem, std)},
                     "mask-only baseline": {"ms_ssim": _stat(base, std)}}, "seeds": [0, 1, 2]}


def test_an_ordering_that_holds_is_reported_as_agreeing_beyond_the_spread(tmp_path):
    (tmp_path / "table2.json").write_text(json.dumps(_table2(0.62, 0.50)))
    text = findings(tmp_path)["table2"]
    assert text.startswith("1 of 1 orderings agree")
    assert "agrees, beyond the seed spread" in text


def test_a_reversed_ordering_is_reported_as_disagreeing(tmp_path):
    (tmp_path / "table2.json").write_text(json.dumps(_table2(0.50, 0.62)))
    text = findings(tmp_path)["table2"]
    assert text.startswith("0 of 1 orderings agree")
    assert "DISAGREES" in text


def test_a_difference_smaller_than_the_spread_is_called_so(tmp_path):
    (tmp_path / "table2.json").write_text(json.dumps(_table2(0.52, 0.50, std=0.05)))
    assert "within the seed spread" in findings(tmp_path)["table2"]


def test_closer_to_one_wins_for_the_consistency_ratio(tmp_path):
    rows = {"overlap inpainting on": {"consistency_ratio": _stat(1.1), "ms_ssim": _stat(0.5)},
            "overlap inpainting off": {"consistency_ratio": _stat(0.7), "ms_ssim": _stat(0.5)}}
    (tmp_path / "c1.json").write_text(json.dumps({"rows": rows}))
    lines = findings(tmp_path)["c1"].splitlines()
    assert any("consistency" in s and "agrees" in s for s in lines)  # |1.1 - 1| < |0.7 - 1|


def test_missing_values_show_as_na_and_the_report_is_written(tmp_path):
    result = {"rows": {"real only": {"volumes": _stat(6, 0, 1), "dice_tumour": _stat(float("nan"), 0, 0)}}}
    lines = table_markdown("downstream", result)
    assert "| real only | 6 | n/a |" in lines[2]
    (tmp_path / "downstream.json").write_text(json.dumps(result))
    dest = write_report(tmp_path, ["header line"], findings(tmp_path), dest=tmp_path / "REPORT.md")
    text = dest.read_text()
    assert "header line" in text and "Table 4" in text and "n/a" in text


def test_a_study_not_rerun_keeps_its_earlier_section_and_results(tmp_path):
    """Re-running a subset rewrites those sections and keeps the others (marked), in the report and results."""
    dest, results = tmp_path / "REPORT.md", tmp_path / "results.json"
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    (first / "table2.json").write_text(json.dumps(_table2(0.62, 0.50)))
    write_report(first, ["header one"], findings(first), dest=dest)
    (second / "c1.json").write_text(json.dumps({"rows": {"overlap inpainting on": {"seam_ratio": _stat(1.05)},
                                                         "overlap inpainting off": {"seam_ratio": _stat(1.2)}}}))
    goals = coherence_goals(second)
    write_report(second, ["header two"], findings(second), dest=dest, goals=goals_markdown(goals))
    text = dest.read_text()
    assert "header two" in text and "header one" not in text
    assert "## Table 2" in text and "Kept from an earlier run" in text and "0.620" in text
    assert "## C.1" in text and text.index("## " + GOALS_TITLE) < text.index("## Table 2")
    write_results(first, {}, dest=results)
    write_results(second, goals, dest=results)
    saved = json.loads(results.read_text())
    assert set(saved) >= {"table2", "c1", "goals"}
    ddim = saved["goals"]["C.1 seam ratio with inpainting <= without and <= 1.1 (DDIM eta 1)"]
    assert ddim["met"] is True and ddim["value"] == 1.05
    assert saved["goals"]["Table 2: GEM-3D MS-SSIM >= mask-only baseline (DDIM eta 1)"]["met"] is None  # not re-run


def test_goals_say_missed_when_a_target_is_not_reached(tmp_path):
    (tmp_path / "coherence.json").write_text(json.dumps({"rows": {
        "held out: model's noise prior, DDIM eta 1": {"stripe_index": _stat(1.9)},
        f"held out: model's noise prior, {FAST_NAME}": {"stripe_index": _stat(1.15)}}}))
    goals = coherence_goals(tmp_path)
    assert goals["stripe index <= 1.2 (GEM-3D, DDIM eta 1)"]["met"] is False
    assert goals[f"stripe index <= 1.2 (GEM-3D, {FAST_NAME})"]["met"] is True
    assert "| **no** |" in "\n".join(goals_markdown(goals))


def test_the_first_stage_study_checks_vq_against_kl_on_every_measure(tmp_path):
    kl, vq = "KL autoencoder (the run's chain)", "VQ-GAN, same size and schedule"
    rows = {kl: {"recon_psnr_db": _stat(17.5), "ms_ssim": _stat(0.60), "stripe_index": _stat(1.8), "FID-A": _stat(0.8),
                 "dice_tissue": _stat(0.55)},
            vq: {"recon_psnr_db": _stat(18.3), "ms_ssim": _stat(0.55), "stripe_index": _stat(1.5), "FID-A": _stat(0.9),
                 "dice_tissue": _stat(0.55, 0.0, 0)}}
    (tmp_path / "first_stage.json").write_text(json.dumps({"rows": rows}))
    lines = findings(tmp_path)["first_stage"].splitlines()
    assert lines[0].startswith("2 of 9 orderings agree")  # a measure missing from a row counts as not measured
    assert any("round trip PSNR" in s and "agrees" in s for s in lines)
    assert any(s.startswith("- MS-SSIM") and "DISAGREES" in s for s in lines)
    assert any("stripe index" in s and "agrees" in s for s in lines)  # 1.5 is closer to 1 than 1.8
    assert any("FID-A" in s and "DISAGREES" in s for s in lines)
    assert "- dice_tissue: not measured" in lines  # n = 0 on the VQ side
    assert any("| VQ-GAN, same size and schedule |" in s for s in table_markdown("first_stage", {"rows": rows}))
    reading = first_stage_reading({"rows": rows})
    assert "round trip PSNR dB ↑ +0.800" in reading and "MS-SSIM ↑ -0.050" in reading and "Dice tissue ↑ n/a" in reading


def test_the_pretrain_reading_gives_each_arms_tissue_dice_change_per_subject_count():
    rows = {subject_row(n, arm): {"dice_tissue": _stat(base + gain), "dice_tumour": _stat(0.05)}
            for n, base in ((1, 0.2), (2, 0.5)) for arm, gain in (
                ("random init", 0.0), ("diffusion-pretrained", -0.01), ("diffusion-pretrained + coordinate head", 0.02),
                ("GEM-3D-enhanced data", 0.1), ("pretrained (+ coordinates) and GEM-3D data", 0.05))}
    text = pretrain_reading({"rows": rows})
    assert "with 1, 2 labelled subject(s): diffusion-pretrained -0.010, -0.010" in text
    assert "GEM-3D-enhanced data +0.100, +0.100" in text and "2.5-D" not in text
    assert "at most 0.050" in text


def test_a_study_context_finds_another_runs_stage_two_bundle(tmp_path):
    import pytest
    from training.studies.context import StudyContext

    ctx = StudyContext(run=tmp_path / "kl", out=tmp_path / "out", steps=2, seeds=(0,))
    ctx.other_runs["vq"] = tmp_path / "vq"
    (tmp_path / "vq" / "volume-stage2" / "bundle").mkdir(parents=True)
    (tmp_path / "vq" / "volume-stage2" / "bundle" / "config.json").write_text("{}")
    assert ctx.bundle_path("vq") == tmp_path / "vq" / "volume-stage2" / "bundle"
    with pytest.raises(FileNotFoundError, match=f"--out {tmp_path / 'kl'}"):
        ctx.bundle_path("final")


def test_the_demo_recipe_trains_every_stage_on_the_chosen_first_stage(tmp_path):
    from training.recipes.demo.__main__ import ORDER, stage_config

    for stage in ORDER:
        vq = stage_config(stage, tmp_path, tmp_path / "raw", 0.1, first_stage="vq")
        kl = stage_config(stage, tmp_path, tmp_path / "raw", 0.1)
        assert vq["model"]["vae"]["kind"] == "vq" and "kind" not in kl["model"]["vae"]
        assert vq["model"]["name"] == kl["model"]["name"] + "-vq"
        assert {k: v for k, v in vq["model"]["vae"].items() if k in kl["model"]["vae"]} == kl["model"]["vae"]
        assert vq["train"] == kl["train"]  # same schedule: only the bottleneck differs
