"""CPU thread policy: as many threads as idle cores, overridable, recorded, and torch restored afterwards."""

from __future__ import annotations

import os

import pytest
import torch

from napari_gem3d.sampling import SamplingOptions
from napari_gem3d.sampling import threads as th
from napari_gem3d.sampling.pipeline import run_to_end
from sampler_helpers import phantom_mask, tiny_bundle


def fake_stat(monkeypatch, idle_share: float):
    samples = iter([(0, 0), (int(1000 * idle_share), 1000)])
    monkeypatch.setattr(th, "_cpu_times", lambda: next(samples))
    monkeypatch.setattr(th.time, "sleep", lambda s: None)


@pytest.mark.parametrize("idle_share, expected", [(1.0, 4), (0.5, 2), (0.3, 1), (0.0, 1)])
def test_threads_follow_the_idle_cores(monkeypatch, idle_share, expected):
    monkeypatch.delenv(th.ENV, raising=False)
    monkeypatch.setattr(th.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(th, "usable_cores", lambda: 4)
    fake_stat(monkeypatch, idle_share)
    choice = th.choose_threads()
    assert (choice.threads, choice.how) == (expected, "measured")
    assert choice.idle_cores == pytest.approx(4 * idle_share)


def test_the_environment_overrides_and_bad_values_are_refused(monkeypatch):
    monkeypatch.setenv(th.ENV, "3")
    assert th.choose_threads().to_dict()["threads"] == 3 and th.choose_threads().how == "env"
    for bad in ("x", "-1"):
        monkeypatch.setenv(th.ENV, bad)
        with pytest.raises(ValueError, match=th.ENV):
            th.choose_threads()


def test_generation_records_its_threads_and_restores_torch(monkeypatch):
    from napari_gem3d.sampling.propagate import generate
    from napari_gem3d.sampling.request import SamplingRequest

    monkeypatch.setenv(th.ENV, "1")
    before = torch.get_num_threads()
    bundle = tiny_bundle(window=8)
    request = SamplingRequest(mask=phantom_mask(10), start=5,
                              options=SamplingOptions(steps=1, device="cpu", mode="baseline", cpu_threads="auto"))
    result = run_to_end(generate(bundle, request))
    assert result.provenance["cpu_threads"]["threads"] == 1 and result.provenance["cpu_threads"]["how"] == "env"
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="cpu_threads"):
        SamplingOptions(cpu_threads=0)
    assert os.environ[th.ENV] == "1"
