"""Correlated slice noise: an AR(1) field along the slices, N(0, 1) marginals, GEM-3D mode only."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from napari_gem3d.commands.common import slice_noise_correlation
from napari_gem3d.sampling import SamplingOptions
from napari_gem3d.sampling.denoise import FrameCorrelatedNoise, Known, SeededNoise, paste_known
from napari_gem3d.sampling.propagate import slice_noise_field
from napari_gem3d.sampling.slice_prior import SliceNoisePrior, ar1_along_axis0, ar1_conditional_fill
from sampler_helpers import collect, request, tiny_bundle


@pytest.mark.parametrize("rho", [0.5, 0.9])
def test_the_field_has_unit_marginals_and_the_asked_neighbour_correlation(rho):
    prior = SliceNoisePrior(rho, rho)
    field = slice_noise_field(3, (400, 2, 16, 16), prior).numpy()
    flat = field.reshape(400, -1)
    assert abs(flat.std() - 1.0) < 0.02 and abs(flat.mean()) < 0.02
    neighbours = np.mean([np.corrcoef(flat[k], flat[k + 1])[0, 1] for k in range(399)])
    assert abs(neighbours - rho) < 0.02
    two_apart = np.mean([np.corrcoef(flat[k], flat[k + 2])[0, 1] for k in range(398)])
    assert abs(two_apart - rho**2) < 0.03  # AR(1): correlation rho^d at distance d
    assert torch.equal(slice_noise_field(3, (400, 2, 16, 16), prior), slice_noise_field(3, (400, 2, 16, 16), prior))


def test_step_draws_are_correlated_along_frames_from_the_same_stream():
    base, wrapped = SeededNoise(5, 1), FrameCorrelatedNoise(SeededNoise(5, 1), SliceNoisePrior(0.9, 0.9))
    z = base.draw("ddim", (8, 4, 8, 8))
    assert torch.equal(wrapped.draw("ddim", (8, 4, 8, 8)), ar1_along_axis0(z, 0.9))
    assert torch.equal(FrameCorrelatedNoise(SeededNoise(5, 1), SliceNoisePrior(0.9, 0.9)).draw("ddim", (4, 8, 8)),
                       SeededNoise(5, 1).draw("ddim", (4, 8, 8)))  # 2-D slices (the slice model): untouched


def test_generation_with_correlation_is_recorded_and_smoother_across_slices():
    bundle = tiny_bundle(window=8)
    plain = collect(bundle, request(steps=3, seed=1))[1]
    correlated = collect(bundle, request(steps=3, seed=1, slice_noise_correlation=0.9))[1]
    assert plain.provenance["slice_noise_correlation"] == 0.0
    assert correlated.provenance["slice_noise_correlation"] == 0.9

    def roughness(latents):
        return float(np.abs(np.diff(latents, axis=0)).mean() / np.abs(latents).mean())

    assert roughness(correlated.latents) < roughness(plain.latents)


def test_the_option_is_refused_where_it_does_not_apply_and_auto_is_mode_aware():
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="slice_noise_correlation"):
            SamplingOptions(slice_noise_correlation=bad)
    with pytest.raises(ValueError, match="GEM-3D mode"):
        SamplingOptions(mode="baseline", slice_noise_correlation=0.9)
    with pytest.raises(ValueError, match="GEM-3D mode"):
        SamplingOptions(official_compat=True, slice_noise_correlation=0.9)
    assert slice_noise_correlation("auto", "gem3d", False) is None  # the model's, resolved by the sampler
    assert slice_noise_correlation("auto", "baseline", False) == 0.0
    assert slice_noise_correlation("auto", "gem3d", True) == 0.0
    assert slice_noise_correlation(0.3, "gem3d", False) == 0.3
    from napari_gem3d.commands.common import _correlation

    with pytest.raises(argparse.ArgumentTypeError):
        _correlation("1.5")


@pytest.mark.parametrize("fixed_frames", [(2, 5), (0,), (6,), (1, 2, 3), (3,)])
def test_conditional_fill_completes_an_ar1_sequence_with_the_ar1_law(fixed_frames):
    """Fixed frames from a true AR(1) sequence, the others filled: the whole sequence has the AR(1)
    covariance rho^|i - j| again (a wrong conditional mean or variance breaks it)."""
    rho, frames, n = 0.9, 7, 200_000
    gen = torch.Generator().manual_seed(0)
    truth = ar1_along_axis0(torch.randn(frames, n, generator=gen, dtype=torch.float64), rho)
    fixed = torch.zeros(frames, dtype=torch.bool)
    fixed[list(fixed_frames)] = True
    free = int((~fixed).sum())
    filled = truth.clone()
    z = torch.randn(free, n, generator=gen, dtype=torch.float64)
    filled[~fixed] = ar1_conditional_fill(truth, fixed, rho, z).double()
    assert torch.equal(filled[fixed], truth[fixed])
    cov = filled @ filled.T / n
    lags = torch.arange(frames)
    expected = rho ** (lags[:, None] - lags[None, :]).abs().double()
    assert (cov - expected).abs().max() < 0.015, (cov - expected).abs().max()


def test_known_frames_continue_their_neighbours_noise_when_it_is_correlated():
    """paste_known with correlated noise: the known frame's noise is close to its generated neighbour's
    (correlation rho), not independent of it as with rho = 0."""
    frames, rho = 6, 0.9
    latents = torch.zeros(1, frames, 4, 8, 8)
    known = Known(mask=torch.tensor([[True, False, False, False, False, False]]), latents=latents)
    a = torch.tensor(0.3)
    x = torch.stack([ar1_along_axis0(torch.randn(frames, 4, 8, 8, generator=torch.Generator().manual_seed(s)), rho)
                     for s in range(1)])
    corr = []
    for seed in range(40):
        noise = FrameCorrelatedNoise(SeededNoise(seed, 0), SliceNoisePrior(rho, rho))
        out = paste_known(x, known, a, [noise], neighbours=x)
        eps = out[0, 0] / (1 - a).sqrt()
        corr.append(float(np.corrcoef(eps.flatten(), x[0, 1].flatten())[0, 1]))
    assert abs(np.mean(corr) - rho) < 0.05
    independent = paste_known(x, known, a, [SeededNoise(0, 0)])[0, 0] / (1 - a).sqrt()
    assert abs(float(np.corrcoef(independent.flatten(), x[0, 1].flatten())[0, 1])) < 0.2


def test_the_models_correlation_is_the_prior_it_was_trained_with():
    """None (the CLI's and the library's 'auto'): the GEM-3D network's trained noise prior, 0.9 for a network
    trained with independent noise; the provenance records the number used; explicit values win."""
    import dataclasses

    from napari_gem3d.sampling.request import (
        COARSE_SLICE_NOISE_CORRELATION,
        UNTRAINED_PRIOR_CORRELATION,
        model_slice_noise_correlation,
    )

    bundle = tiny_bundle(window=8)
    untrained = collect(bundle, request(steps=2, seed=1, slice_noise_correlation=None))[1]
    assert untrained.provenance["slice_noise_correlation"] == UNTRAINED_PRIOR_CORRELATION
    volume_cfg = dataclasses.replace(bundle.config.unets["volume"], noise_correlation=0.7)
    bundle.config = dataclasses.replace(bundle.config, unets={**bundle.config.unets, "volume": volume_cfg})
    assert model_slice_noise_correlation(bundle.config) == 0.7
    assert model_slice_noise_correlation(bundle.config, mode="baseline") == 0.0
    assert model_slice_noise_correlation(bundle.config, official_compat=True) == 0.0
    trained = collect(bundle, request(steps=2, seed=1, slice_noise_correlation=None))
    assert trained[1].provenance["slice_noise_correlation"] == 0.7
    assert trained[1].provenance["slice_noise_coarse_correlation"] == COARSE_SLICE_NOISE_CORRELATION
    explicit = collect(bundle, request(steps=2, seed=1, slice_noise_correlation=0.7,
                                       slice_noise_coarse_correlation=COARSE_SLICE_NOISE_CORRELATION))
    assert np.array_equal(trained[1].volume, explicit[1].volume)
    one_band = collect(bundle, request(steps=2, seed=1, slice_noise_correlation=0.7))[1]
    assert one_band.provenance["slice_noise_coarse_correlation"] == 0.7  # an explicit rho alone: one band
    assert not np.array_equal(one_band.volume, explicit[1].volume)
    assert collect(bundle, request(steps=2, seed=1, mode="baseline", slice_noise_correlation=None))[1].provenance[
        "slice_noise_correlation"] == 0.0


def _bands(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    from napari_gem3d.sampling.slice_prior import block_mean

    low = block_mean(x)
    return low, x - low


def test_the_two_band_prior_keeps_unit_noise_and_correlates_each_band_as_asked():
    prior = SliceNoisePrior(rho=0.6, coarse=0.98)
    z = torch.randn(300, 4, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = prior.correlate(z)
    assert abs(float(x.std()) - 1.0) < 0.01  # every slice still N(0, I)
    low, high = _bands(x)
    lf, hf = low.flatten(1), high.flatten(1)
    corr_low = float((lf[1:] * lf[:-1]).mean() / (lf * lf).mean())
    corr_high = float((hf[1:] * hf[:-1]).mean() / (hf * hf).mean())
    assert abs(corr_low - 0.98) < 0.01 and abs(corr_high - 0.6) < 0.02
    assert abs(float((low * high).mean())) < 0.01  # the bands are independent (orthogonal projection)
    assert torch.equal(SliceNoisePrior(0.9, 0.9).correlate(z), ar1_along_axis0(z, 0.9))  # one band: as before
    with pytest.raises(ValueError, match="coarse"):
        SliceNoisePrior(0.9, 1.0)


def test_the_two_band_fill_restores_each_bands_ar1_law():
    prior, frames, n = SliceNoisePrior(rho=0.7, coarse=0.97), 6, 4000
    gen = torch.Generator().manual_seed(1)
    truth = prior.correlate(torch.randn(frames, n, 4, 4, generator=gen, dtype=torch.float64))
    fixed = torch.tensor([False, True, False, False, True, False])
    z = torch.randn(int((~fixed).sum()), n, 4, 4, generator=gen, dtype=torch.float64)
    filled = truth.clone()
    filled[~fixed] = prior.fill(truth, fixed, z).double()
    lags = torch.arange(frames)
    for band, rho in zip(_bands(filled), (0.97, 0.7), strict=True):
        flat = band.flatten(1)
        cov = flat @ flat.T / flat.shape[1]
        expected = cov.diagonal().mean() * rho ** (lags[:, None] - lags[None, :]).abs().double()
        assert (cov - expected).abs().max() < 0.03 * float(cov.diagonal().mean()) + 0.01


def test_a_latent_grid_the_blocks_do_not_tile_gets_one_band():
    import types

    from napari_gem3d.sampling.request import resolve_options

    volume = types.SimpleNamespace(noise_correlation=0.0)
    odd = types.SimpleNamespace(unets={"volume": volume}, latent_size=(9, 12))
    even = types.SimpleNamespace(unets={"volume": volume}, latent_size=(8, 12))
    auto = SamplingOptions(slice_noise_correlation=None)
    assert resolve_options(auto, odd).slice_prior == SliceNoisePrior(0.9, 0.9)
    assert resolve_options(auto, even).slice_prior == SliceNoisePrior(0.9, 0.995)


def test_step_noise_fields_give_a_slice_the_same_noise_in_every_window():
    """Per-step DDIM noise from one field per step over the volume (StepNoiseFields): two windows that share
    slices draw identical noise for them at every step; steps differ; the windows' own streams still advance,
    so their other draws ("known") are those of FrameCorrelatedNoise."""
    from napari_gem3d.sampling.denoise import SliceIndexedNoise, StepNoiseFields

    prior = SliceNoisePrior(0.9, 0.995)
    fields = StepNoiseFields(3, (30, 4, 4, 4), prior)
    a = SliceIndexedNoise(SeededNoise(3, 0), prior, fields, start=5)
    b = SliceIndexedNoise(SeededNoise(3, 1), prior, fields, start=12)
    first_a, first_b = a.draw("ddim", (16, 4, 4, 4)), b.draw("ddim", (16, 4, 4, 4))
    assert torch.equal(first_a[7:], first_b[:9])  # slices 12..20 in both windows
    second_a = a.draw("ddim", (16, 4, 4, 4))
    assert not torch.allclose(second_a, first_a) and torch.equal(second_a, fields.step(1)[5:21])
    own = FrameCorrelatedNoise(SeededNoise(3, 0), prior)
    own.draw("ddim", (16, 4, 4, 4)), own.draw("ddim", (16, 4, 4, 4))
    assert torch.equal(a.draw("known", (1, 4, 4, 4)), own.draw("known", (1, 4, 4, 4)))
    # the field's neighbouring slices are correlated as the prior says (fine band ~0.9 plus the coarse band)
    f = torch.stack([StepNoiseFields(s, (200, 4, 4, 4), prior).step(0) for s in range(20)])
    corr = float((f[:, 1:] * f[:, :-1]).mean() / (f * f).mean())
    assert 0.85 < corr < 0.97, corr


def test_stochastic_ddim_with_slice_noise_uses_the_step_fields_and_deterministic_solvers_do_not():
    from napari_gem3d.sampling.propagate import step_noise_kind

    def kind(**kw):
        return step_noise_kind(SamplingOptions(**kw))

    assert kind(eta=1.0, slice_noise_correlation=0.9) == "slices"
    assert kind(eta=1.0, slice_noise_correlation=0.0) == "windows"
    assert kind(eta=0.0, slice_noise_correlation=0.9) is None and kind(solver="dpmpp2m") is None
