"""The propagation generator: assembly, determinism, batching, re-noising level, cancel, closed form."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_gem3d.diffusion import make_ddim_plan
from napari_gem3d.sampling import Cancelled, CancelToken, SamplingOptions, plan_windows
from napari_gem3d.sampling import propagate as prop
from napari_gem3d.sampling.denoise import SeededNoise
from sampler_helpers import SIZE, PointMassNet, collect, phantom_mask, request, tiny_bundle


@pytest.fixture(scope="module")
def bundle():
    return tiny_bundle()


def test_updates_assemble_exactly_into_the_result(bundle):
    req = request()
    updates, result = collect(bundle, req)
    plan = plan_windows(40, 16, 1, 20)
    assert len(updates) == len(plan) == result.provenance["num_windows"]
    assert [u.index for u in updates] == list(range(len(plan)))
    assert all(u.total == len(plan) for u in updates)
    vol = np.full_like(result.volume, np.nan)
    for u, win in zip(updates, plan, strict=True):
        assert (u.z0, u.z1) == win.emit_range and u.direction == win.direction
        assert u.slices.dtype == np.float32 and u.slices.shape == (u.z1 - u.z0, SIZE, SIZE)
        assert np.all(np.isnan(vol[u.z0 : u.z1]))  # each slice arrives exactly once
        vol[u.z0 : u.z1] = u.slices
    assert np.array_equal(vol, result.volume)
    assert np.all(np.diff([u.elapsed for u in updates]) >= 0)


def test_user_inputs_are_not_modified(bundle):
    req = request()
    mask_before = req.mask.copy()
    img_before = req.informed.image.copy()
    collect(bundle, req)
    assert np.array_equal(req.mask, mask_before) and np.array_equal(req.informed.image, img_before)


def test_deterministic_under_seed(bundle):
    _, a = collect(bundle, request(seed=3))
    _, b = collect(bundle, request(seed=3))
    _, c = collect(bundle, request(seed=4))
    assert np.array_equal(a.volume, b.volume)
    assert not np.allclose(a.volume, c.volume)


def test_batched_directions_equal_sequential(bundle, monkeypatch):
    _, batched = collect(bundle, request(seed=5))
    sizes = []
    original = prop._groups

    def one_at_a_time(windows, independent, batch):
        groups = [[w] for g in original(windows, independent, batch) for w in g]
        sizes.append(len(groups))
        return groups

    monkeypatch.setattr(prop, "_groups", one_at_a_time)
    _, sequential = collect(bundle, request(seed=5))
    assert sizes and sizes[0] == len(batched.windows) > len(prop.rounds(batched.windows))
    assert np.abs(batched.latents - sequential.latents).max() < 1e-4


class ZeroKnownNoise(SeededNoise):
    def draw(self, kind, shape):
        out = super().draw(kind, shape)
        return torch.zeros(shape) if kind == "known" else out


@pytest.mark.parametrize("compat", [False, True])
def test_known_frames_renoised_to_the_current_level(bundle, monkeypatch, compat):
    """With zero re-noising draws, a known frame fed to the UNet at step i is sqrt(abar_i) * latent."""
    monkeypatch.setattr(prop, "SeededNoise", ZeroKnownNoise)
    seen = []
    unet = bundle.volume

    class Spy(torch.nn.Module):
        def forward(self, x, t):
            seen.append((x[:, :, :4].clone(), t.clone()))
            return unet(x, t)

    monkeypatch.setitem(bundle.unets, "volume", Spy())
    try:
        steps = 5
        req = request(steps=steps, official_compat=compat, mask=phantom_mask(31))
        _, result = collect(bundle, req)
    finally:
        monkeypatch.setitem(bundle.unets, "volume", unet)
    plan = make_ddim_plan(bundle.config.schedule, steps, 1.0, official_compat=compat)
    windows = result.windows
    first_round_calls = steps
    second = seen[first_round_calls:first_round_calls + steps]  # round 1: known frames present
    rnd1 = [w for w in windows if w.round == 1]
    latents = torch.from_numpy(result.latents)
    for i, (x, t) in enumerate(second):
        assert torch.equal(t, plan.t[i].expand(len(rnd1)))
        for b, win in enumerate(rnd1):
            for f, z in zip(win.known, win.known_slices, strict=True):
                expected = plan.renoise_a[i].sqrt() * latents[z]
                assert torch.allclose(x[b, f], expected, atol=1e-5)
    # fixed mode: the level is the level of x itself (abar[t_i]); compat: the official table (bug B1)
    if compat:
        assert not torch.allclose(plan.renoise_a[:-1], plan.a_t)
    else:
        assert torch.equal(plan.renoise_a[:-1], plan.a_t) and torch.equal(plan.renoise_a[1:], plan.a_prev)


def test_cancel_stops_within_one_step_and_releases_memory(bundle, monkeypatch):
    token = CancelToken()
    calls = []
    released = []
    unet = bundle.volume

    class Counting(torch.nn.Module):
        def forward(self, x, t):
            calls.append(1)
            if len(calls) == 6:  # in the middle of round 1 (4 steps per round)
                token.cancel()
            return unet(x, t)

    monkeypatch.setattr(prop, "release_memory", lambda device, collect=True: released.append((device, collect)))
    monkeypatch.setitem(bundle.unets, "volume", Counting())
    try:
        gen = prop.generate(bundle, request(), cancel=token)
        updates = []
        with pytest.raises(Cancelled) as err:
            for u in gen:
                updates.append(u)
    finally:
        monkeypatch.setitem(bundle.unets, "volume", unet)
    assert len(calls) == 6  # no UNet call after the cancel
    assert len(updates) == 1 and err.value.completed == 1 and err.value.total == 3
    assert released == [(torch.device("cpu"), False)], "memory must be released when cancelled, without a full gc"


def test_closed_form_network_lands_on_the_analytic_result(bundle, monkeypatch):
    cf = PointMassNet(bundle.config.schedule)
    monkeypatch.setitem(bundle.unets, "baseline", cf)
    steps = 6
    req = request(mode="baseline", steps=steps, eta=0.0, mask=phantom_mask(20))
    _, result = collect(bundle, req)
    ac = bundle.config.schedule.alphas_cumprod_f32
    plan = make_ddim_plan(bundle.config.schedule, steps, 0.0)
    a_first, a0 = ac[plan.t[0]], ac[0]
    enc = torch.from_numpy(bundle.config.labels.encode(req.mask))
    target = bundle.codec.mask_condition_latents(enc)[:, :4]
    for win in result.windows:
        x_t = SeededNoise(req.options.seed, win.index).draw("x_T", (win.length, 4, *bundle.config.latent_size))
        x0 = target[win.start : win.stop]
        eps_t = (x_t - a_first.sqrt() * x0) / (1 - a_first).sqrt()
        expected = a0.sqrt() * x0 + (1 - a0).sqrt() * eps_t  # deterministic DDIM keeps eps; ends at abar_0
        got = torch.from_numpy(result.latents[win.start : win.stop])
        for f in win.write:
            assert torch.allclose(got[f], expected[f], atol=2e-5)


def test_true_informed_slice_is_pasted_at_the_start(bundle):
    img = np.random.default_rng(0).uniform(-1, 1, (SIZE, SIZE)).astype(np.float32)
    updates, result = collect(bundle, request(informed_image=img, true_slice=True, start=17, paste_informed=True))
    ref = bundle.codec.encode(torch.from_numpy(img)[None, None])[0]
    assert torch.allclose(torch.from_numpy(result.latents[17]), ref, atol=1e-6)
    assert result.windows[0].known == (17 - result.windows[0].start,)
    assert result.provenance["paste_informed"] is True


def test_true_informed_slice_only_conditions_by_default(bundle):
    """Default: the true slice sets the appearance but is not a known frame; every slice is generated."""
    img = np.random.default_rng(0).uniform(-1, 1, (SIZE, SIZE)).astype(np.float32)
    _, result = collect(bundle, request(informed_image=img, true_slice=True, start=17))
    ref = bundle.codec.encode(torch.from_numpy(img)[None, None])[0]
    assert result.windows[0].known == ()
    assert 17 - result.windows[0].start in result.windows[0].write  # generated, not held
    assert not torch.allclose(torch.from_numpy(result.latents[17]), ref, atol=1e-2)
    assert result.provenance["paste_informed"] is False
    # the same informed slice as a non-true slice: the same generation (it conditions alike)
    _, other = collect(bundle, request(informed_image=img, true_slice=False, start=17))
    assert np.array_equal(other.latents, result.latents)


def test_baseline_and_no_inpaint_modes_run_and_differ(bundle):
    _, gem = collect(bundle, request(seed=1))
    _, off = collect(bundle, request(seed=1, inpaint_overlap=False))
    _, base = collect(bundle, request(seed=1, mode="baseline"))
    first = gem.windows[0]
    # the first window has no known frames: identical with and without inpainting
    assert np.array_equal(gem.latents[first.start : first.stop], off.latents[first.start : first.stop])
    assert not np.allclose(gem.volume, off.volume)
    assert base.provenance["mode"] == "baseline" and base.provenance["informed"] is None


def test_one_slice_volume_with_true_informed_slice(bundle):
    updates, result = collect(bundle, request(mask=phantom_mask(1), start=0, true_slice=True))
    assert len(updates) == 1 and result.volume.shape == (1, SIZE, SIZE)


def test_bad_requests_have_clear_errors(bundle):
    with pytest.raises(ValueError, match="model grid"):
        collect(bundle, request(mask=np.zeros((20, 16, 16), np.uint8)))
    with pytest.raises(ValueError, match="declare"):
        collect(bundle, request(mask=np.full((20, SIZE, SIZE), 9, np.uint8)))
    with pytest.raises(ValueError, match="informed slice"):
        from napari_gem3d.sampling import SamplingOptions, SamplingRequest

        SamplingRequest(mask=phantom_mask(), start=0, informed=None, options=SamplingOptions())


def test_paste_informed_option_defaults_refusals_and_cli():
    import argparse

    from napari_gem3d.commands.common import add_sampling_options, sampling_options
    from napari_gem3d.sampling.request import pastes_informed

    assert SamplingOptions().paste_informed is False  # conditioning only by default, as the official sampler
    assert pastes_informed(SamplingOptions(paste_informed=True), True)
    assert not pastes_informed(SamplingOptions(), True)
    assert not pastes_informed(SamplingOptions(paste_informed=True), False)  # another scan's slice: never pasted
    assert not pastes_informed(SamplingOptions(paste_informed=True, mode="baseline"), True)
    with pytest.raises(ValueError, match="never pastes"):
        SamplingOptions(official_compat=True, paste_informed=True)
    with pytest.raises(ValueError, match="paste_informed must be"):
        SamplingOptions(paste_informed="yes")
    p = argparse.ArgumentParser()
    add_sampling_options(p)
    assert sampling_options(p.parse_args(["--device", "cpu"])).paste_informed is False
    assert sampling_options(p.parse_args(["--device", "cpu", "--paste-informed"])).paste_informed is True
    with pytest.raises(ValueError, match="never pastes"):
        sampling_options(p.parse_args(["--device", "cpu", "--paste-informed", "--official-compat"]))


@pytest.mark.parametrize("n, start", [(30, 15), (23, 4), (40, 33)])
def test_the_provenance_rebuilds_the_plan_that_ran(bundle, n, start):
    """``first_window_start`` in the provenance lets the seam metrics find the windows this run used."""
    from napari_gem3d.metrics.consistency import window_seams

    _, result = collect(bundle, request(phantom_mask(n), start=start, steps=1))
    prov = result.provenance
    assert prov["first_window_start"] == result.windows[0].start
    edges = sorted({z for w in result.windows for z in w.emit_range if 0 < z < n})
    assert window_seams(n, prov) == edges
