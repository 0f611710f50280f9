"""Correlated slice noise: an AR(1) field along the slices, N(0, 1) marginals, GEM-3D mode only."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from napari_gem3d.commands.common import slice_noise_correlation
from napari_gem3d.sampling import SamplingOptions
from napari_gem3d.sampling.denoise import FrameCorrelatedNoise, SeededNoise, ar1_along_axis0
from napari_gem3d.sampling.propagate import slice_noise_field
from sampler_helpers import collect, request, tiny_bundle


@pytest.mark.parametrize("rho", [0.5, 0.9])
def test_the_field_has_unit_marginals_and_the_asked_neighbour_correlation(rho):
    field = slice_noise_field(3, (400, 2, 16, 16), rho).numpy()
    flat = field.reshape(400, -1)
    assert abs(flat.std() - 1.0) < 0.02 and abs(flat.mean()) < 0.02
    neighbours = np.mean([np.corrcoef(flat[k], flat[k + 1])[0, 1] for k in range(399)])
    assert abs(neighbours - rho) < 0.02
    two_apart = np.mean([np.corrcoef(flat[k], flat[k + 2])[0, 1] for k in range(398)])
    assert abs(two_apart - rho**2) < 0.03  # AR(1): correlation rho^d at distance d
    assert torch.equal(slice_noise_field(3, (400, 2, 16, 16), rho), slice_noise_field(3, (400, 2, 16, 16), rho))


def test_step_draws_are_correlated_along_frames_from_the_same_stream():
    base, wrapped = SeededNoise(5, 1), FrameCorrelatedNoise(SeededNoise(5, 1), 0.9)
    z = base.draw("ddim", (8, 4, 8, 8))
    assert torch.equal(wrapped.draw("ddim", (8, 4, 8, 8)), ar1_along_axis0(z, 0.9))
    assert torch.equal(FrameCorrelatedNoise(SeededNoise(5, 1), 0.9).draw("ddim", (4, 8, 8)),
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
    assert slice_noise_correlation("auto", "gem3d", False) == 0.9
    assert slice_noise_correlation("auto", "baseline", False) == 0.0
    assert slice_noise_correlation("auto", "gem3d", True) == 0.0
    assert slice_noise_correlation(0.3, "gem3d", False) == 0.3
    from napari_gem3d.commands.common import _correlation

    with pytest.raises(argparse.ArgumentTypeError):
        _correlation("1.5")
