"""The shared DDIM loop reproduces the official bidirectional sampler (replaying its recorded noise)."""

from __future__ import annotations

import pytest
import torch

from napari_gem3d.diffusion import NoiseSchedule, make_ddim_plan
from napari_gem3d.sampling.denoise import Known, ReplayNoise, denoise

CASES = {"A_free": None, "B_prev_first": 0, "C_prev_last": 15}


@pytest.fixture(scope="module")
def unet(golden_volume_unet):
    return golden_volume_unet()[0]


@pytest.mark.parametrize("case", CASES)
def test_official_sample_replayed_exactly(golden, unet, case):
    t, meta = golden("ddim_official_sample_tiny")
    assert meta["call"]["S (ddim_steps)"] == 10 and meta["call"]["eta"] == 1.0
    keys = sorted(k for k in t if k.startswith(f"{case}.noise."))
    draws = [("ddim" if k.endswith("ddim") else "known", t[k]) for k in keys]
    known = None
    frame = CASES[case]
    if frame is not None:
        mask = torch.zeros(1, 16, dtype=torch.bool)
        mask[0, frame] = True
        lat = torch.zeros(1, 16, 4, 8, 8)
        lat[0, frame] = t["input.previous"].reshape(4, 8, 8)
        known = Known(mask, lat)
    cond = t["input.cond_concat"][None]
    plan = make_ddim_plan(NoiseSchedule(), 10, 1.0, official_compat=True)
    inter = []

    def hook(i, x_t, x_prev, log_prob):
        inter.append(x_prev[0].clone())

    with torch.no_grad():
        out = denoise(lambda x, ts: unet(torch.cat([x, cond], dim=2), ts), t["input.x_T"][None], plan,
                      [ReplayNoise(draws)], known=known, on_step=hook)
    ref = t[f"{case}.output.sample_fp32"]
    scale = ref.abs().max()
    assert (out[0] - ref).abs().max() <= 1e-5 * scale + 1e-4
    free = [f for f in range(16) if f != frame]
    for k, x in enumerate(inter, start=1):  # latents after each step (non-known frames are not replaced)
        stored = t[f"{case}.x_inter.{k:02d}"]
        assert (x[free] - stored[free]).abs().max() <= 1e-5 * stored.abs().max() + 1e-4
    if frame is not None:  # the known frame after the last step is the official re-noised latent
        a = NoiseSchedule().alphas_cumprod_f32[0]
        expected = a.sqrt() * lat[0, frame] + (1 - a).sqrt() * draws[-1][1].reshape(4, 8, 8)
        assert torch.allclose(out[0, frame], expected, atol=1e-5)


def test_corrected_levels_change_the_official_result(golden, unet):
    """Sanity: the fixed re-noising (default) is a different computation from the official one."""
    t, _ = golden("ddim_official_sample_tiny")
    keys = sorted(k for k in t if k.startswith("B_prev_first.noise."))
    draws = [("ddim" if k.endswith("ddim") else "known", t[k]) for k in keys]
    mask = torch.zeros(1, 16, dtype=torch.bool)
    mask[0, 0] = True
    lat = torch.zeros(1, 16, 4, 8, 8)
    lat[0, 0] = t["input.previous"].reshape(4, 8, 8)
    cond = t["input.cond_concat"][None]
    plan = make_ddim_plan(NoiseSchedule(), 10, 1.0, official_compat=False)
    with torch.no_grad():
        out = denoise(lambda x, ts: unet(torch.cat([x, cond], dim=2), ts), t["input.x_T"][None], plan,
                      [ReplayNoise(draws)], known=Known(mask, lat))
    assert (out[0] - t["B_prev_first.output.sample_fp32"]).abs().max() > 1e-2
