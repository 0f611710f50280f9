"""Lesion guidance: each lesion label's effect on the network output, w times (sampling/lesion_guidance.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from napari_gem3d.models.card import ModelCard
from napari_gem3d.sampling import SamplingOptions
from napari_gem3d.sampling.lesion_guidance import guide, label_slices, reference_masks
from sampler_helpers import PointMassNet, collect, phantom_mask, request, tiny_bundle

LESION = (4, 5, 6)


@pytest.fixture(scope="module")
def bundle():
    b = tiny_bundle()
    card = ModelCard(modality="MR", contrast="T1", body_region="brain", tissue_labels=(1, 2, 3), lesion_labels=LESION)
    return dataclasses.replace(b, config=dataclasses.replace(b.config, card=card))


def test_each_reference_takes_one_lesion_label_out_and_leaves_the_rest():
    mask = phantom_mask(20)
    before = mask.copy()
    refs = reference_masks(mask, LESION)
    assert sorted(refs) == [4, 5, 6]
    for label, ref in refs.items():
        was = mask == label
        assert not np.any(ref == label)
        assert np.array_equal(ref[~was], mask[~was])  # only that label's voxels change
        assert set(np.unique(ref[was])) <= set(np.unique(mask)) - {label}  # to labels already there
    assert np.array_equal(mask, before)
    assert reference_masks(np.where(np.isin(mask, LESION), 3, mask), LESION) == {}  # nothing to guide
    assert label_slices(mask, [6])[6].tolist() == np.isin(mask, [6]).any(axis=(1, 2)).tolist()


def test_guide_scales_each_references_difference():
    g = torch.Generator().manual_seed(0)
    out, r1, r2 = (torch.randn(3, 4, generator=g) for _ in range(3))
    assert torch.equal(guide(out, [r1, r2], 1.0), out)
    assert torch.allclose(guide(out, [r1, r2], 3.0), out + 2 * (out - r1) + 2 * (out - r2))
    assert torch.allclose(guide(out, [r1], 2.5), r1 + 2.5 * (out - r1))  # one reference: CFG's form


class LesionPointMassNet(PointMassNet):
    """PointMassNet whose x0-hat is the pooled mask's channels 3-6 (white matter and the three lesion labels)."""

    def forward(self, x, t):
        return super().forward(torch.cat([x[:, :, :4], x[:, :, 4 + 3 : 4 + 7]], dim=2), t)


def test_closed_form_network_lands_on_the_guided_target(bundle, monkeypatch):
    """x0-hat is the pooled mask's lesion channels, so guided x0-hat is that target plus (w - 1) times its
    difference from each reference mask's target (one per lesion label); DPM-Solver++ lands exactly on it."""
    monkeypatch.setitem(bundle.unets, "volume", LesionPointMassNet(bundle.config.schedule))
    w = 2.5
    mask = phantom_mask(24)
    _, result = collect(bundle, request(mask=mask, solver="dpmpp2m", steps=5, lesion_guidance=w))

    def target(m):
        return bundle.codec.mask_condition_latents(torch.from_numpy(bundle.config.labels.encode(m)))[:, 3:7]

    refs = reference_masks(mask, LESION)
    assert len(refs) == 3
    expected = target(mask) + (w - 1) * sum(target(mask) - target(r) for r in refs.values())
    assert not torch.allclose(expected, target(mask), atol=1e-3)  # the guidance moves it
    assert torch.allclose(torch.from_numpy(result.latents), expected, atol=1e-4)
    assert result.provenance["lesion_guidance"] == w


def test_windows_before_any_lesion_window_are_bitwise_unchanged(bundle):
    mask = phantom_mask(40)
    mask[np.isin(mask, LESION)] = 3
    mask[34:38, 10:16, 10:16] = 5  # a lesion in the top slices only, far from the start at slice 8
    _, plain = collect(bundle, request(mask=mask, start=8, seed=1, solver="dpmpp2m", steps=4))
    _, guided = collect(bundle, request(mask=mask, start=8, seed=1, solver="dpmpp2m", steps=4, lesion_guidance=3.0))
    first = plain.windows[0]
    assert not any(label_slices(mask, [5])[5][first.start : first.stop])
    z0, z1 = first.emit_range
    assert np.array_equal(plain.volume[z0:z1], guided.volume[z0:z1])
    assert not np.allclose(plain.volume[34:38], guided.volume[34:38])
    healthy = np.where(mask == 5, 3, mask)  # no lesion at all: guidance runs nothing extra
    _, a = collect(bundle, request(mask=healthy, start=8, seed=1, solver="dpmpp2m", steps=4))
    _, b = collect(bundle, request(mask=healthy, start=8, seed=1, solver="dpmpp2m", steps=4, lesion_guidance=3.0))
    assert np.array_equal(a.volume, b.volume)


@pytest.mark.parametrize("value", [0.5, 0.0, 11.0, float("nan"), True, "2"])
def test_out_of_range_guidance_is_refused(value):
    with pytest.raises(ValueError, match="lesion_guidance must be a number from 1"):
        SamplingOptions(lesion_guidance=value)


def test_guidance_needs_gem3d_mode_and_a_card_with_lesion_labels(bundle):
    with pytest.raises(ValueError, match="GEM-3D mode only"):
        SamplingOptions(mode="baseline", lesion_guidance=2.0)
    with pytest.raises(ValueError, match="official sampler, which has no lesion guidance"):
        SamplingOptions(official_compat=True, lesion_guidance=2.0)
    with pytest.raises(ValueError, match="model card names none"):
        collect(tiny_bundle(), request(lesion_guidance=2.0))


def test_the_command_line_flag_reaches_the_options_and_refuses_bad_values(capsys):
    import argparse

    from napari_gem3d.commands.common import add_sampling_options, sampling_options

    p = argparse.ArgumentParser()
    add_sampling_options(p)
    assert sampling_options(p.parse_args(["--device", "cpu"])).lesion_guidance == 1.0
    assert sampling_options(p.parse_args(["--device", "cpu", "--lesion-guidance", "3"])).lesion_guidance == 3.0
    for bad in ("0.5", "11", "strong"):
        with pytest.raises(SystemExit):
            p.parse_args(["--lesion-guidance", bad])
        assert "expected a number from 1 (no guidance) to 10" in capsys.readouterr().err


@pytest.mark.data
def test_guidance_draws_a_held_out_tumour_nearer_its_real_contrast():
    """Held-out Colin27 with one synthetic tumour (the demo recipe's rule, another seed than its own held-out
    case), the bundled model, the Fast preset: unguided, the enhancing rim is drawn at a fraction of its real
    contrast to white matter and the core barely darker than it; at w = 3 each moves towards the real one,
    and the volume's MS-SSIM to the real scan stays where it was (measured: docs/make-mask.md)."""
    from training.recipes.demo.subjects import MRICRON, colin27
    from training.recipes.demo.tumours import add_tumours

    from data_files import require_data
    from napari_gem3d import demo_model_path
    from napari_gem3d.metrics.similarity import compare_volumes
    from napari_gem3d.models import load_bundle
    from napari_gem3d.sampling.pipeline import run_to_end, sample_volume

    require_data(MRICRON / "ch2.nii.gz")
    held = colin27()
    img, lab = add_tumours(np.asarray(held.image.array, np.float32), held.tissue, held.image.spacing,
                           np.random.default_rng([17, 100]), 1)
    image, mask = held.image.with_array(img), held.image.with_array(lab.astype(np.uint8))
    bundle = load_bundle(demo_model_path())
    rim, core, white = lab == 5, lab == 6, lab == 3
    assert rim.sum() > 500 and core.sum() > 500

    def run(w: float) -> dict:
        options = SamplingOptions(solver="dpmpp2m", steps=6, eta=0.0, seed=0, device="cpu",
                                  slice_noise_correlation=None, lesion_guidance=w)
        gen = np.asarray(run_to_end(sample_volume(bundle, mask, image=image, options=options)).volume.array,
                         np.float64)
        sd = gen[white].std()
        return {"rim": (gen[rim].mean() - gen[white].mean()) / sd, "core_below_rim": (gen[rim].mean() -
                gen[core].mean()) / sd, "ms_ssim": compare_volumes(img, gen.astype(np.float32))["ms_ssim"]}

    plain, guided = run(1.0), run(3.0)
    real_rim = (img[rim].mean() - img[white].mean()) / img[white].std()
    assert plain["rim"] < 0.5 * real_rim  # the miss guidance is for
    assert guided["rim"] > plain["rim"] + 0.6 and guided["rim"] < 1.2 * real_rim
    assert guided["core_below_rim"] > plain["core_below_rim"] + 0.8
    assert guided["ms_ssim"] > plain["ms_ssim"] - 0.01


def test_a_regeneration_keeps_the_results_lesion_guidance(bundle):
    """regenerate (CLI and dock) re-makes with the settings in the result's provenance: guidance included, so a
    refilled range is drawn as the rest of the volume was; an older result without the key is unguided."""
    from napari_gem3d.sampling.regenerate import options_from

    assert options_from({"seed": 3, "lesion_guidance": 2.5}).lesion_guidance == 2.5
    assert options_from({"seed": 3}).lesion_guidance == 1.0
