"""How a mask reaches the latent grid: pooled label fractions vs the lossless space-to-depth ("unshuffle")."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_gem3d.models import BundleError, build_bundle
from napari_gem3d.models.latent import mask_condition_channels
from napari_gem3d.models.presets import small_config
from napari_gem3d.sampling import InformedSlice, SamplingOptions, SamplingRequest, generate
from napari_gem3d.sampling.pipeline import run_to_end


def _unshuffle_config(**kw):
    cfg = small_config(**kw)
    lat, f = cfg.vae.embed_dim, cfg.vae.downsampling
    mask_ch = mask_condition_channels("unshuffle", lat, cfg.labels.num_channels, f)
    unets = {name: dataclasses.replace(u, in_channels=u.in_channels - cfg.labels.num_channels + mask_ch)
             for name, u in cfg.unets.items() if name != "slice"}
    return dataclasses.replace(cfg, mask_condition="unshuffle", unets={**cfg.unets, **unets})


def test_unshuffle_keeps_where_each_label_is_and_pool_keeps_only_how_much():
    bundle = build_bundle(_unshuffle_config(image_size=16))
    f = bundle.config.vae.downsampling
    labels = bundle.config.labels
    a = np.zeros((1, 16, 16), np.int16)
    b = np.zeros((1, 16, 16), np.int16)
    a[0, 0, 0] = 3  # white matter in the top-left pixel of the first block
    b[0, f - 1, f - 1] = 3  # ... or in its bottom-right pixel: same fraction, another place
    ea, eb = (torch.from_numpy(labels.encode(m)) for m in (a, b))
    unsh = bundle.codec.mask_condition_latents(ea)
    assert unsh.shape == (1, labels.num_channels * f * f, 16 // f, 16 // f)
    assert not torch.equal(unsh, bundle.codec.mask_condition_latents(eb))
    torch.testing.assert_close(F.pixel_shuffle(unsh, f), ea, rtol=0, atol=0)  # lossless
    pooled = dataclasses.replace(bundle.codec, mask_condition="pool")
    torch.testing.assert_close(pooled.mask_condition_latents(ea), pooled.mask_condition_latents(eb))
    # the pooled fractions are the unshuffled channels averaged per label
    per_label = unsh.reshape(1, labels.num_channels, f * f, 16 // f, 16 // f).mean(dim=2)
    torch.testing.assert_close(per_label, pooled.mask_condition_latents(ea))


def test_an_unshuffle_bundle_declares_its_channels_and_generates():
    cfg = _unshuffle_config(image_size=16)
    bundle = build_bundle(cfg)
    assert cfg.unets["volume"].in_channels == 2 * 4 + cfg.labels.num_channels * cfg.vae.downsampling ** 2
    mask = np.zeros((5, 16, 16), np.int16)
    mask[:, 4:12, 4:12] = 3
    informed = InformedSlice(image=np.zeros((16, 16), np.float32), source={"kind": "picked"})
    for mode in ("gem3d", "baseline"):
        request = SamplingRequest(mask=mask, start=2, informed=informed,
                                  options=SamplingOptions(steps=2, seed=0, mode=mode, device="cpu"))
        result = run_to_end(generate(bundle, request))
        assert result.volume.shape == (5, 16, 16) and np.isfinite(result.volume).all()
    with pytest.raises(BundleError, match="input channels"):
        dataclasses.replace(cfg, mask_condition="pool")


def test_a_chain_switches_mask_condition_only_where_the_networks_are_trained_anew():
    from training.bundles import UNTRAINED, with_mask_condition

    bundle = build_bundle(small_config(image_size=16))
    vae_state = {k: v.clone() for k, v in bundle.vae.state_dict().items()}
    switched = with_mask_condition(bundle, "unshuffle", "volume-stage1")
    assert switched.config.mask_condition == "unshuffle"
    assert {"volume", "baseline"} <= set(switched.config.provenance[UNTRAINED])
    for k, v in switched.vae.state_dict().items():
        assert torch.equal(v, vae_state[k])  # the first stage is kept
    assert switched.unets["slice"] is bundle.unets["slice"]
    with pytest.raises(ValueError, match="volume-stage1 and baseline"):
        with_mask_condition(bundle, "unshuffle", "volume-stage2")
