"""The benchmark scripts run and print the one JSON line their interface promises (numbers not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _one_json_line(*args: str) -> dict:
    out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600, check=True)
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, out.stdout
    return json.loads(lines[0])


def test_bench_sampler_prints_the_promised_fields():
    r = _one_json_line("benchmarks/bench_sampler.py", "--config", "tiny", "--device", "cpu",
                       "--steps", "1", "--slices", "20")
    for key in ("seconds_total", "seconds_per_window", "peak_memory_mb", "reference_seconds_total",
                "speedup_vs_reference", "device"):
        assert key in r
    assert r["device"] == "cpu" and r["volume"][0] == 20 and r["windows"] >= 2
    assert r["seconds_total"] > 0 and r["peak_memory_mb"] > 0
    assert abs(r["speedup_vs_reference"] - r["reference_seconds_total"] / r["seconds_total"]) < 0.01 * r[
        "speedup_vs_reference"] + 2e-3


def test_temporal_conv_candidates_give_the_models_numbers():
    r = _one_json_line("benchmarks/bench_temporal_conv.py", "--channels", "32", "--size", "8", "--reps", "1")
    assert r["columns_conv1d_max_abs_diff"] == 0
    assert r["stacked_1x1_max_abs_diff"] < 1e-4 and r["per_window_1x1_max_abs_diff"] < 1e-4
