"""The demo recipe's per-stage options: --steps overrides, and the card naming the warped copies."""

from __future__ import annotations

import argparse

import pytest
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
