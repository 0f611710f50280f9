"""The benchmark scripts run and print the one JSON line their interface promises (numbers not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_gem3d.models.layers import TemporalConv
from sampler_helpers import collect, phantom_mask, request, tiny_bundle

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
    for name in ("stacked_1x1", "per_window_1x1", "per_window_baddbmm"):
        assert r[f"{name}_max_abs_diff"] < 1e-4, name


def test_upsample_bench_times_both_and_finds_no_difference():
    r = _one_json_line("benchmarks/bench_upsample.py", "--reps", "1")
    assert set(r["shapes"]) == {"decoder_38x64x32", "decoder_38x64x16", "unet_32x128x16"}
    for row in r["shapes"].values():
        assert row["differing_elements"] == 0 and row["interpolate_ms"] > 0 and row["broadcast_ms"] > 0
        assert abs(row["speedup"] - row["interpolate_ms"] / row["broadcast_ms"]) < 0.01 * row["speedup"] + 0.01


def test_lesion_guidance_bench_counts_the_extra_passes():
    r = _one_json_line("benchmarks/bench_lesion_guidance.py", "--reps", "1", "--scales", "1", "2", "--threads", "1")
    assert set(r["seconds"]) == set(r["ratio_to_first"]) == set(r["window_passes"]) == {"1", "2"}
    assert r["ratio_to_first"]["1"] == 1.0 and r["seconds"]["2"] > 0
    steps = int(r["preset"].split()[1])
    unguided, guided = r["window_passes"]["1"], r["window_passes"]["2"]
    assert unguided % steps == 0 and guided > unguided and (guided - unguided) % steps == 0


def test_busy_core_spinner_stops_when_the_benchmark_is_gone():
    """bench_interactive's busy processes spin until stopped, or until the benchmark that started them dies
    (killed from outside, its ``finally`` never runs): none is left behind."""
    import os
    import time

    code = ("import sys; sys.path.insert(0, 'benchmarks'); import bench_interactive as b; "
            "p = b.spinner(); print(p.pid, flush=True)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         check=True)
    pid = int(out.stdout.split()[-1])

    def alive() -> bool:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                return fh.read().split(")")[-1].split()[0] != "Z"  # a zombie has stopped
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 30
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive():
        os.kill(pid, 9)
        raise AssertionError("the spinner outlived the benchmark that started it")


def test_decode_memory_bench_fits_a_per_slice_cost():
    r = _one_json_line("benchmarks/bench_decode_memory.py", "--device", "cpu", "--size", "64", "--chunks", "1,4")
    assert set(r["per_chunk"]) == {"1", "4"} and r["size"] == 64
    assert r["per_chunk"]["4"]["peak_mb"] > r["per_chunk"]["1"]["peak_mb"]  # more slices per call, higher peak
    assert r["mb_per_slice"] > 0
    assert abs(r["bytes_per_pixel"] - r["mb_per_slice"] * 2**20 / 64**2) < 0.01 * r["bytes_per_pixel"]


@pytest.mark.parametrize("name", ["stacked_1x1", "per_window_1x1", "per_window_baddbmm"])
def test_temporal_conv_experiment_gives_the_same_volume(monkeypatch, name):
    """``bench_sampler.py --temporal-conv NAME`` swaps the formulation, not the numbers."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_sampler

    monkeypatch.setattr(TemporalConv, "forward", TemporalConv.forward)  # the swap is undone after the test
    bundle = tiny_bundle()
    with torch.no_grad():  # temporal layers start as the identity: give them work to do
        for m in bundle.volume.modules():
            if isinstance(m, TemporalConv):
                m.conv.weight.add_(torch.randn(m.conv.weight.shape, generator=torch.Generator().manual_seed(1)) * 0.05)
    req = request(mask=phantom_mask(num_slices=20), steps=2)
    _, ref = collect(bundle, req)
    original = TemporalConv.forward
    bench_sampler.use_temporal_conv(name)
    assert TemporalConv.forward is not original
    _, swapped = collect(bundle, req)
    np.testing.assert_allclose(swapped.volume, ref.volume, atol=1e-4)
