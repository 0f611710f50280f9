"""Local regeneration: only the changed slices (plus a margin) are regenerated, the rest is byte-identical."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_gem3d.masks import mask_slice_hashes
from napari_gem3d.sampling import SamplingOptions
from napari_gem3d.sampling.pipeline import run_to_end, sample_volume
from napari_gem3d.sampling.plan import coverage, plan_bridge
from napari_gem3d.sampling.propagate import generate
from napari_gem3d.sampling.regenerate import FULL_RUN_FRACTION, plan_regeneration, regenerate
from napari_gem3d.volume import model_grid, to_model
from sampler_helpers import tiny_bundle
from study_helpers import synthetic_case

S_AXIS = 1  # the synthetic case stores the model's slice axis (S) as its second axis


# ------------------------------------------------------------------------------------------ the plan
@pytest.mark.parametrize("n", [1, 5, 8, 9, 26, 77])
@pytest.mark.parametrize("window", [4, 8, 16])
def test_the_bridge_plan_writes_the_range_once_and_holds_both_sides(n, window):
    rng = np.random.default_rng(n * 31 + window)
    for _ in range(12):
        lo = int(rng.integers(0, n))
        hi = int(rng.integers(lo + 1, n + 1))
        windows = plan_bridge(n, window, 1, lo, hi)
        counts = coverage(windows, n)
        assert counts == [1 if lo <= z < hi else 0 for z in range(n)]
        for w in windows:
            assert all(not lo <= z < hi for z in w.known_slices if z < lo or z >= hi)
            assert w.informed_slice is None or 0 <= w.informed_slice < n
        first, last = windows[0], windows[-1]
        if lo > 0:  # the finished slice under the range is held in the first window
            assert lo - 1 in first.known_slices
        if hi < n:  # ... and the one above it in the last
            assert hi in last.known_slices


def test_the_bridge_plan_refuses_an_empty_or_outside_range():
    for lo, hi in ((3, 3), (-1, 4), (5, 30)):
        with pytest.raises(ValueError, match="range to regenerate"):
            plan_bridge(26, 8, 1, lo, hi)


# ------------------------------------------------------------------------------------- regeneration
@pytest.fixture(scope="module")
def setup():
    bundle = tiny_bundle(window=8)
    image, mask = synthetic_case()
    options = SamplingOptions(steps=3, seed=4, device="cpu")
    first = run_to_end(sample_volume(bundle, mask, image=image, options=options))
    return bundle, image, mask, first


def _edit(mask, slices):
    """Grow the tumour core into grey matter on stored S-slices ``slices``."""
    a = np.array(mask.array)
    for z in slices:
        plane = a[:, z, :]
        plane[(plane == 2) & (np.arange(plane.shape[1]) % 3 == 0)[None, :]] = 6
    return mask.with_array(a)


def test_only_the_changed_slices_and_the_margin_change(setup):
    bundle, image, mask, first = setup
    edited = _edit(mask, [12, 13])
    out = run_to_end(regenerate(bundle, first.volume, edited, image=image, margin=2, cancel=None))
    regen = out.provenance["regenerated"]
    assert not regen["full_run"]
    grid = model_grid(mask, bundle.config.image_size, bundle.config.slice_axis)
    lo, hi = regen["range"]
    assert (hi - lo) == len(regen["changed_slices"]) + 4
    before, after = np.asarray(first.volume.array), np.asarray(out.volume.array)
    assert after.dtype == before.dtype
    changed = np.flatnonzero(np.any(before != after, axis=(0, 2)))
    # stored S index k is model slice N-1-k or k depending on the grid's flip: map the range back
    stored_axis, flip = (int(v) for v in grid.inverse_ornt[0])
    assert stored_axis == S_AXIS
    model = {grid.num_slices - 1 - k if flip < 0 else k for k in changed}
    assert model and model <= set(range(lo, hi))
    outside = [k for k in range(before.shape[S_AXIS]) if (grid.num_slices - 1 - k if flip < 0 else k) not in
               range(lo, hi)]
    assert np.array_equal(before[:, outside, :].view(np.uint8), after[:, outside, :].view(np.uint8))
    # the new mask's slice hashes are recorded, so the next edit compares against this one
    assert out.provenance["mask_slices_sha256"] != first.provenance["mask_slices_sha256"]


def test_a_result_of_stochastic_ddim_is_regenerated_with_a_seam_warning(setup):
    """Stochastic DDIM whose step noise was each window's own stream (the setup's result: eta 1 with
    independent slice noise; or any made before 2026-12-07) leaves seams at the kept slices (docs/benchmarks.md):
    the regeneration says so in its provenance (the CLI prints it, the dock shows it). Deterministic results and
    those whose step noise came from the per-slice fields do not get it."""
    from napari_gem3d.sampling.regenerate import STOCHASTIC_SEAMS, seam_warning

    bundle, image, mask, first = setup
    assert first.provenance["solver"] == "ddim" and first.provenance["eta"] > 0
    assert first.provenance["step_noise"] == "windows"
    out = run_to_end(regenerate(bundle, first.volume, _edit(mask, [12]), image=image))
    warning = out.provenance["regenerated"]["warning"]
    assert warning == STOCHASTIC_SEAMS.format(sampler="stochastic DDIM (eta 1)") == seam_warning(first.provenance)
    assert seam_warning({"solver": "ddim", "eta": 1.0}) == warning  # made before step_noise existed
    assert seam_warning({"solver": "ddim", "eta": 0.0}) is None and seam_warning({"solver": "dpmpp2m"}) is None
    for options, kind in ((SamplingOptions(steps=3, seed=4, device="cpu", solver="dpmpp2m"), None),
                          (SamplingOptions(steps=3, seed=4, device="cpu", slice_noise_correlation=0.9), "slices")):
        made = run_to_end(sample_volume(bundle, mask, image=image, options=options))
        assert made.provenance["step_noise"] == kind
        out = run_to_end(regenerate(bundle, made.volume, _edit(mask, [12]), image=image))
        assert "warning" not in out.provenance["regenerated"]


def test_both_boundaries_are_known_frames_at_every_step(setup, monkeypatch):
    bundle, image, mask, first = setup
    edited = _edit(mask, [12])
    seen = []

    class Recorder:
        def on_round(self, windows, cond, known, plan):
            seen.append([(w.start, w.stop, w.known) for w in windows])
            assert known is not None and bool(known.mask.any())

        def on_step(self, i, x_t, x_prev, log_prob):
            pass

        def on_round_end(self, x0):
            pass

    import napari_gem3d.sampling.propagate as propagate

    original = propagate.generate

    def recording(*args, **kw):
        return original(*args, recorder=Recorder(), **kw)

    monkeypatch.setattr(propagate, "generate", recording)
    out = run_to_end(regenerate(bundle, first.volume, edited, image=image, margin=1))
    lo, hi = out.provenance["regenerated"]["range"]
    (start, stop, known), = seen[0]
    frames = {start + f for f in known}
    assert lo - 1 in frames and hi in frames  # held on both sides
    assert not frames & set(range(lo, hi))


def test_a_different_model_or_no_change_is_refused(setup):
    bundle, image, mask, first = setup
    with pytest.raises(ValueError, match="nothing to regenerate"):
        run_to_end(regenerate(bundle, first.volume, mask, image=image))
    other = tiny_bundle(window=8, seed=1)
    other.model_hash = "f" * 64
    with pytest.raises(ValueError, match="same model"):
        run_to_end(regenerate(other, first.volume, _edit(mask, [12]), image=image))


def test_an_edit_over_most_of_the_volume_falls_back_to_a_full_run(setup):
    bundle, image, mask, first = setup
    n = mask.shape[S_AXIS]
    wide = _edit(mask, range(2, n - 2))
    out = run_to_end(regenerate(bundle, first.volume, wide, image=image))
    regen = out.provenance["regenerated"]
    assert regen["full_run"] and "full run" in regen["reason"]
    assert (regen["range"][1] - regen["range"][0]) > FULL_RUN_FRACTION * n


def test_a_full_run_fallback_keeps_the_results_paste_choice(setup):
    """The fallback re-makes the result as it was made: a current result did not paste its true informed
    slice; one recorded before the choice existed (no ``paste_informed``) pasted it, and still does."""
    from napari_gem3d.sampling.regenerate import options_from

    bundle, image, mask, first = setup
    assert first.provenance["paste_informed"] is False
    assert options_from({"seed": 3}).paste_informed is True  # an older result's provenance
    assert options_from({"seed": 3, "paste_informed": False}).paste_informed is False
    wide = _edit(mask, range(2, mask.shape[S_AXIS] - 2))
    now = run_to_end(regenerate(bundle, first.volume, wide, image=image))
    assert now.provenance["regenerated"]["full_run"] and now.provenance["paste_informed"] is False
    assert all(not w.known for w in now.result.windows[:1])
    older = first.volume.with_array(first.volume.array, provenance={k: v for k, v in first.provenance.items()
                                                                    if k != "paste_informed"})
    then = run_to_end(regenerate(bundle, older, wide, image=image))
    assert then.provenance["paste_informed"] is True
    assert then.result.windows[0].known == (then.result.provenance["start_slice"] - then.result.windows[0].start,)


def test_plan_regeneration_margin_and_ends():
    grid_mask = np.zeros((20, 4, 4), np.int16)
    hashes = mask_slice_hashes(grid_mask)
    edited = grid_mask.copy()
    edited[0, 1, 1] = 3
    plan = plan_regeneration(hashes, edited, margin=3)
    assert (plan.lo, plan.hi, plan.changed) == (0, 4, (0,))
    edited = grid_mask.copy()
    edited[19, 1, 1] = 3
    assert (plan_regeneration(hashes, edited, margin=2).lo, plan_regeneration(hashes, edited, margin=2).hi) == (17, 20)
    with pytest.raises(ValueError, match="margin"):
        plan_regeneration(hashes, edited, margin=-1)


def test_generate_with_a_given_plan_writes_only_its_range(setup):
    bundle, image, mask, first = setup
    grid = model_grid(mask, bundle.config.image_size, bundle.config.slice_axis)
    model_mask = to_model(mask, grid, "labels")
    from napari_gem3d.sampling.request import InformedSlice, SamplingRequest

    windows = plan_bridge(grid.num_slices, 8, 1, 10, 14)
    latents = first.result.latents
    preset = {z: torch.from_numpy(latents[z]) for w in windows for z in w.known_slices}
    request = SamplingRequest(mask=model_mask, start=10, options=SamplingOptions(steps=2, device="cpu"),
                              informed=InformedSlice(image=np.zeros(grid.size, np.float32)))
    updates = []
    gen = generate(bundle, request, windows=windows, preset=preset)
    while True:
        try:
            updates.append(next(gen))
        except StopIteration as stop:
            result = stop.value
            break
    assert [(u.z0, u.z1) for u in updates] == [(10, 14)]
    assert np.all(result.volume[:10] == 0) and np.all(result.volume[14:] == 0)
    for z in preset:  # the finished slices are held, never rewritten
        assert np.array_equal(result.latents[z], latents[z])


def test_the_default_margin_follows_the_slice_noise_of_the_result():
    """No margin given: one slice each side for a result made with correlated slice noise (the default), two
    for one made with independent noise; the provenance records the margin used."""
    from dataclasses import replace

    from napari_gem3d.sampling.regenerate import COHERENT_MARGIN, DEFAULT_MARGIN, margin_for

    coherent, independent = SamplingOptions(slice_noise_correlation=0.9), SamplingOptions()
    assert margin_for(coherent) == COHERENT_MARGIN == 1 and margin_for(independent) == DEFAULT_MARGIN == 2
    assert margin_for(coherent, 3) == 3
    bundle = tiny_bundle(window=8)
    image, mask = synthetic_case()
    edited = _edit(mask, [12])
    for options, margin in ((replace(independent, steps=2, seed=1, device="cpu"), 2),
                            (replace(coherent, steps=2, seed=1, device="cpu"), 1)):
        first = run_to_end(sample_volume(bundle, mask, image=image, options=options))
        out = run_to_end(regenerate(bundle, first.volume, edited, image=image))
        regen = out.provenance["regenerated"]
        assert regen["margin"] == margin and regen["range"] == [12 - margin, 13 + margin]
