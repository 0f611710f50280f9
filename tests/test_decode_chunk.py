"""Slices per VAE call: the automatic choice bounds the pixels per call, and chunking never changes a result."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from napari_gem3d.masks import official_brain_spec
from napari_gem3d.models.presets import small_config
from napari_gem3d.sampling import SamplingOptions
from napari_gem3d.sampling.request import DECODE_PIXELS
from net_helpers import path_tol
from sampler_helpers import bundle_from_config, collect, phantom_mask, request, tiny_bundle


def test_automatic_chunk_is_a_pixel_budget():
    auto = SamplingOptions()
    assert auto.decode_chunk is None
    assert auto.chunk_for(512, 512) == 4  # the official slice size: 4 slices per call, not 16 (15.3 GiB on CUDA)
    assert auto.chunk_for(64, 64) == DECODE_PIXELS // 64**2  # small slices: whole windows in one call
    assert auto.chunk_for(2048, 2048) == 1  # never zero
    for h, w in [(512, 512), (256, 320), (97, 1000)]:
        assert auto.chunk_for(h, w) * h * w <= DECODE_PIXELS
    assert SamplingOptions(decode_chunk=7).chunk_for(512, 512) == 7  # an explicit choice wins


@pytest.mark.parametrize("bad", [0, -3])
def test_bad_chunk_is_refused(bad):
    with pytest.raises(ValueError, match="decode_chunk"):
        SamplingOptions(decode_chunk=bad)


def _vae_mask_bundle():
    """A tiny bundle that encodes the mask with the VAE (the official condition), so encoding is chunked too."""
    cfg = small_config(32, labels=official_brain_spec())
    lat = cfg.vae.embed_dim
    return bundle_from_config(
        replace(cfg, mask_condition="vae", unets={"volume": replace(cfg.unets["volume"], in_channels=3 * lat)})
    )


@pytest.mark.parametrize("which", ["pooled mask", "VAE-encoded mask", "VAE-encoded mask, official_compat"])
def test_chunking_does_not_change_the_volume(which):
    """Also in official_compat mode, where the mask and informed latents are posterior samples."""
    if which == "pooled mask":
        bundle, mask = tiny_bundle(), phantom_mask(num_slices=24)
    else:
        bundle = _vae_mask_bundle()
        mask = np.clip(phantom_mask(num_slices=24), 0, 4).astype(np.uint8)  # the official labels 0..4
    compat = which.endswith("official_compat")
    results = {}
    for chunk in (None, 1, 5):
        _, results[chunk] = collect(bundle, request(mask=mask, steps=2, decode_chunk=chunk, official_compat=compat))
    assert results[None].provenance["decode_chunk"] == DECODE_PIXELS // 32**2
    assert results[1].provenance["decode_chunk"] == 1 and results[5].provenance["decode_chunk"] == 5
    # Another chunk is another batch size for the VAE convolutions, which may take another oneDNN/MKL kernel:
    # equal up to float32 rounding, not bit for bit. The latents pass the VAE encoder (the conditions) and
    # 2 UNet steps: depth 4, 32 eps * max|latents| (|latents| reaches 8); the volume also the decoder:
    # depth 8, 64 eps * max|volume|. Measured on an AMD EPYC: <= 2 eps and <= 13 eps of those maxima.
    # A slice encoded or decoded into the wrong place is off by O(1).
    for chunk in (1, 5):
        for name, depth in (("latents", 4), ("volume", 8)):
            ours, ref = getattr(results[chunk], name), getattr(results[None], name)
            np.testing.assert_allclose(ours, ref, rtol=0, atol=path_tol(ref, depth=depth), err_msg=name)


def test_no_vae_call_sees_more_than_the_chunk(monkeypatch):
    bundle = _vae_mask_bundle()
    sizes = {"posterior": [], "decode": []}
    for name in sizes:
        original = getattr(bundle.vae, name)

        def spy(x, *a, _name=name, _original=original, **kw):
            sizes[_name].append(x.shape[0])
            return _original(x, *a, **kw)

        monkeypatch.setattr(bundle.vae, name, spy)
    mask = np.clip(phantom_mask(num_slices=24), 0, 4).astype(np.uint8)
    collect(bundle, request(mask=mask, steps=1, decode_chunk=5))
    assert sum(sizes["posterior"]) >= 24 + 1  # every mask slice and the informed slice were encoded
    assert sum(sizes["decode"]) == 24  # every slice decoded once
    assert max(sizes["posterior"]) <= 5 and max(sizes["decode"]) <= 5


def test_command_line_decode_chunk(capsys):
    import argparse

    from napari_gem3d.commands.common import add_sampling_options, sampling_options

    p = argparse.ArgumentParser()
    add_sampling_options(p)
    assert sampling_options(p.parse_args([])).decode_chunk is None  # automatic by default
    assert sampling_options(p.parse_args(["--decode-chunk", "3"])).decode_chunk == 3
    for bad in ("0", "two"):
        with pytest.raises(SystemExit):
            p.parse_args(["--decode-chunk", bad])
        assert "expected a positive whole number" in capsys.readouterr().err
