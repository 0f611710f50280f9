"""CPU thread policy: as many threads as idle cores (one worker per core when none is idle), overridable,
recorded, and torch restored afterwards."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import torch

from napari_gem3d.sampling import SamplingOptions
from napari_gem3d.sampling import threads as th
from napari_gem3d.sampling.pipeline import run_to_end
from sampler_helpers import collect, phantom_mask, request, tiny_bundle


def fake_stat(monkeypatch, idle_share: float):
    samples = iter([(0, 0), (int(1000 * idle_share), 1000)])
    monkeypatch.setattr(th, "_cpu_times", lambda: next(samples))
    monkeypatch.setattr(th.time, "sleep", lambda s: None)


@pytest.mark.parametrize("idle_share, threads, workers", [(1.0, 4, 1), (0.5, 2, 1), (0.3, 1, 4), (0.1, 1, 4),
                                                            (0.0, 1, 4)])
def test_threads_follow_the_idle_cores(monkeypatch, idle_share, threads, workers):
    """Idle cores -> that many threads; one idle core or none (one thread's share) -> one single-threaded worker
    per core."""
    monkeypatch.delenv(th.ENV, raising=False)
    monkeypatch.delenv(th.WORKERS_ENV, raising=False)
    monkeypatch.setattr(th.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(th, "usable_cores", lambda: 4)
    fake_stat(monkeypatch, idle_share)
    choice = th.choose_threads()
    assert (choice.threads, choice.workers, choice.how) == (threads, workers, "measured")
    assert choice.idle_cores == pytest.approx(4 * idle_share)


def test_the_workers_can_be_set_with_or_without_a_thread_count(monkeypatch):
    monkeypatch.delenv(th.ENV, raising=False)
    monkeypatch.setenv(th.WORKERS_ENV, "3")
    fake_stat(monkeypatch, 1.0)
    choice = th.choose_threads()  # measured threads, given workers
    assert (choice.threads, choice.workers, choice.how) == (2, 3, "measured, env workers")
    monkeypatch.setenv(th.ENV, "2")
    assert (th.choose_threads().threads, th.choose_threads().workers) == (2, 3)
    monkeypatch.delenv(th.WORKERS_ENV)
    assert th.choose_threads().workers == 1  # a given thread count alone: no workers
    monkeypatch.setenv(th.WORKERS_ENV, "two")
    with pytest.raises(ValueError, match=th.WORKERS_ENV):
        th.choose_threads()


@pytest.mark.parametrize("count", [1, 2, 3, 8])
@pytest.mark.parametrize("n", [0, 1, 2, 5, 16])
def test_worker_parts_cover_every_item_once_in_order(count, n):
    parts = th.Workers(count).parts(n)
    covered = [i for part in parts for i in range(n)[part]]
    assert covered == list(range(n))
    assert len(parts) <= max(1, count) and all(part.stop > part.start for part in parts if n)
    sizes = [part.stop - part.start for part in parts]
    assert max(sizes) - min(sizes) <= 1 or n < 2 or sizes[-1] < sizes[0]


def test_workers_run_side_by_side_with_their_own_thread_count():
    seen = []
    barrier = threading.Barrier(2, timeout=10)  # both jobs must be running at once, or this times out

    def job(i):
        barrier.wait()
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        return i * 10

    with th.Workers(2, threads=1) as workers:
        assert workers.map(job, [1, 2]) == [10, 20]
    assert {n for n, _ in seen} != {threading.current_thread().name} and all(t == 1 for _, t in seen)
    with th.Workers(2) as workers, pytest.raises(ZeroDivisionError):
        workers.map(lambda i: 1 / i, [1, 0])
    assert th.Workers(1).map(lambda i: threading.current_thread().name, [0, 1]) == [threading.current_thread().name] * 2


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


def test_generation_with_workers_matches_one_thread_and_records_them(monkeypatch):
    """Two workers (one thread each) split each round's windows and each decode, and decode a round in the
    background while the next one denoises: the result equals the one-thread run's to float rounding, the
    windows arrive in the same order with the same slices, the UNet runs in the workers without grad, and the
    provenance says so."""
    from napari_gem3d.sampling.plan import rounds

    bundle = tiny_bundle(window=8)
    calls, decodes = [], []
    bundle.volume.register_forward_hook(
        lambda m, i, o: calls.append((threading.current_thread().name, torch.is_grad_enabled(), i[0].shape[0])))
    vae_decode = bundle.codec.vae.decode

    def recorded_decode(z):
        decodes.append((threading.current_thread().name, torch.is_grad_enabled()))
        return vae_decode(z)

    monkeypatch.setattr(bundle.codec.vae, "decode", recorded_decode)
    monkeypatch.setenv(th.ENV, "1")
    results, seen, updates = {}, {}, {}
    for workers in ("1", "2"):
        monkeypatch.setenv(th.WORKERS_ENV, workers)
        calls.clear()
        decodes.clear()
        req = request(phantom_mask(30), start=15, steps=3, cpu_threads="auto")
        updates[workers], results[workers] = collect(bundle, req)
        assert not any(grad for _, grad, _ in calls) and not any(grad for _, grad in decodes)
        names = {name.split("_")[0] for name, _ in decodes}
        assert names == ({"MainThread"} if workers == "1" else {"gem3d-worker", "gem3d-background"})
        for u in updates[workers]:
            np.testing.assert_array_equal(u.slices, results[workers].volume[u.z0:u.z1])
        in_workers = [b for name, _, b in calls if name.startswith("gem3d-worker")]
        seen[workers] = (len(in_workers), sum(b for _, _, b in calls), max(b for _, _, b in calls))
    assert [(u.z0, u.z1, u.index) for u in updates["1"]] == [(u.z0, u.z1, u.index) for u in updates["2"]]
    pairs = sum(len(r) == 2 for r in rounds(results["1"].windows))  # rounds with an up and a down window
    assert pairs >= 1
    assert seen["1"][0] == 0 and seen["1"][2] == 2  # one thread: the round's two windows in one call
    assert seen["2"] == (2 * pairs * 3, seen["1"][1], 1)  # workers: one window each, the same windows in all
    assert results["2"].provenance["cpu_threads"]["workers"] == 2
    one, two = results["1"].volume, results["2"].volume
    assert np.allclose(one, two, rtol=0, atol=1e-5 * float(np.abs(one).max()))
    np.testing.assert_allclose(results["1"].latents, results["2"].latents, rtol=0,
                               atol=1e-5 * float(np.abs(results["1"].latents).max()))


@pytest.mark.parametrize("idle_share, says", [(0.0, "1, as 2 workers side by side (at most one core is idle)"),
                                              (0.5, "1, as 2 workers side by side (at most one core is idle)"),
                                              (1.0, "2 (2 of 2 cores idle now")])
def test_gem3d_info_says_what_a_run_would_use_now(monkeypatch, capsys, idle_share, says):
    from napari_gem3d.cli import main

    for name in (th.ENV, th.WORKERS_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(th.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(th, "usable_cores", lambda: 2)
    fake_stat(monkeypatch, idle_share)
    assert main(["info"]) == 0
    assert f"CPU threads a generation would use now: {says}" in capsys.readouterr().out


def test_torchrun_ranks_on_the_cpu_share_the_cores_instead_of_measuring(monkeypatch):
    """Ranks started together would each see every core idle (or each other busy): their share is fixed."""
    from napari_gem3d.distributed import share_cpu_threads

    for name in (th.ENV, th.WORKERS_ENV):
        monkeypatch.setenv(name, "")  # restored (removed) after the test
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    before = torch.get_num_threads()
    try:
        share_cpu_threads("cpu")
        choice = th.choose_threads()
        assert (choice.threads, choice.workers, choice.how) == (2, 1, "env")
    finally:
        torch.set_num_threads(before)
    monkeypatch.setenv(th.ENV, "3")  # a user's own setting stays
    try:
        share_cpu_threads("cpu")
        assert th.choose_threads().threads == 3
    finally:
        torch.set_num_threads(before)


def test_a_cancel_with_a_decode_in_the_background_ends_every_worker(monkeypatch):
    """Cancelled while a round's decode runs in the background: Cancelled is raised, the windows sent so far
    are whole, and no worker thread outlives the generation."""
    from napari_gem3d.sampling import Cancelled, CancelToken, plan_windows, rounds
    from napari_gem3d.sampling.propagate import generate

    bundle = tiny_bundle(window=8)
    token, steps = CancelToken(), []

    def count_and_cancel(module, inputs, output) -> None:
        steps.append(1)
        if len(steps) == 11:  # in round 2 (3 calls in round 0, 2 per step after): round 1 decodes meanwhile
            token.cancel()

    bundle.volume.register_forward_hook(count_and_cancel)
    monkeypatch.setenv(th.ENV, "1")
    monkeypatch.setenv(th.WORKERS_ENV, "2")
    updates = []
    with pytest.raises(Cancelled):
        for update in generate(bundle, request(phantom_mask(30), start=15, steps=3, cpu_threads="auto"),
                               cancel=token):
            updates.append(update)
    assert len(rounds(plan_windows(30, 8, 1, 15))) == 3 and len(steps) == 11  # round 2: one window, no call after
    assert updates and all(u.slices.shape[0] == u.z1 - u.z0 for u in updates)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("gem3d-")]
