"""The demo recipe's per-stage options: --steps overrides, and the card naming the warped copies."""

from __future__ import annotations

import argparse
import itertools
import json
import os

import pytest
import training.recipes.demo.__main__ as recipe
import yaml
from training.recipes.demo.__main__ import SCHEDULE, _stage_steps, demo_card, stage_config


def test_steps_replace_one_stage_schedule_and_scale_still_applies(tmp_path):
    for stage, (scheduled, _, _) in SCHEDULE.items():
        plain = stage_config(stage, tmp_path, tmp_path / "raw", 0.5)
        wider = stage_config(stage, tmp_path, tmp_path / "raw", 0.5, steps=4 * scheduled)
        assert plain["train"]["steps"] == round(0.5 * scheduled)
        assert wider["train"]["steps"] == round(0.5 * 4 * scheduled)
        assert {k: v for k, v in wider["train"].items() if k not in ("steps", "ckpt_every")} == \
            {k: v for k, v in plain["train"].items() if k not in ("steps", "ckpt_every")}


def test_steps_argument_names_the_stage_and_a_positive_count():
    assert _stage_steps("vae=3000") == ("vae", 3000)
    assert _stage_steps("volume-stage1=12000") == ("volume-stage1", 12000)
    for bad in ("vae", "vae=", "vae=0", "vae=-5", "vae=1.5", "unet=100", "=100"):
        with pytest.raises(argparse.ArgumentTypeError, match="STAGE=N"):
            _stage_steps(bad)


def test_the_card_names_the_warped_copies_only_when_there_are_any(tmp_path):
    assert "warped" not in demo_card(0)["training_data"]
    assert "{" not in demo_card(0)["training_data"]
    assert "16 warped" in demo_card(16)["training_data"]
    cfg = stage_config("baseline", tmp_path, tmp_path / "raw", 1.0, warped=4)
    assert "4 warped" in cfg["model"]["card"]["training_data"]


def _fake_chain(tmp_path, monkeypatch):
    """The recipe's main with data building and training replaced: a "trained" stage writes its result."""
    trained = []
    clock = itertools.count(1_000_000, 10)  # strictly increasing finish times, like a real chain

    def train(stage, config, log):
        cfg = yaml.safe_load(config.read_text())
        folder = tmp_path / "run" / stage
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "result.json").write_text(json.dumps({"steps": cfg["train"]["steps"]}))
        stamp = next(clock)
        os.utime(folder / "result.json", (stamp, stamp))
        trained.append(stage)
        return 0.0

    monkeypatch.setattr(recipe, "build_cases", lambda raw, warped=0: raw)
    monkeypatch.setattr(recipe, "run_stage_subprocess", train)
    return trained


def test_a_stage_trained_again_retrains_every_later_stage_and_keeps_their_old_runs(tmp_path, monkeypatch):
    trained = _fake_chain(tmp_path, monkeypatch)
    run = ["--out", str(tmp_path / "run"), "--skip-eval", "--scale", "0.01"]
    recipe.main(run)
    assert trained == list(recipe.ORDER)
    trained.clear()
    recipe.main(run)  # everything finished: nothing trains
    assert trained == []
    recipe.main([*run, "--steps", "volume-stage1=9000"])  # stage 1 longer: it resumes, and what follows it anew
    assert trained == ["volume-stage1", "volume-stage2", "baseline"]
    assert (tmp_path / "run" / "volume-stage2.stale-1" / "result.json").is_file()
    assert (tmp_path / "run" / "baseline.stale-1" / "result.json").is_file()
    assert not (tmp_path / "run" / "volume-stage1.stale-1").exists()
    # only the VAE asked for: the later stages are left alone now but found stale by the next run
    trained.clear()
    recipe.main([*run, "--stages", "vae", "--steps", "vae=2000"])
    assert trained == ["vae"]
    later = tmp_path / "run" / "slice" / "result.json"
    assert os.stat(tmp_path / "run" / "vae" / "result.json").st_mtime > later.stat().st_mtime
    trained.clear()
    recipe.main([*run, "--steps", "vae=2000"])
    assert trained == list(recipe.ORDER[1:])
    assert (tmp_path / "run" / "slice.stale-1").is_dir() and (tmp_path / "run" / "baseline.stale-2").is_dir()
