"""Our networks reproduce the official modules on the golden cases (fp32 <= 1e-4, fp64 ~1e-9)."""

from __future__ import annotations

import math

import pytest
import torch

from napari_gem3d.models.official import KeyMismatchError, from_official


def _weights(tensors):
    return {k: v for k, v in tensors.items() if k.startswith(("model.", "first_stage_model."))}


def _assert_sinusoid_close(ours: torch.Tensor, ref: torch.Tensor, t: torch.Tensor) -> None:
    """``ours`` and ``ref`` are the [cos | sin] embedding of ``t`` built on different machines or code paths.

    A sinusoid is only as exact as its argument a = t * freq. The frequencies come from exp, whose result
    may differ by an ulp or two between libraries and instruction sets (MKL on an AVX-512 Xeon, under
    MKL_ENABLE_INSTRUCTIONS=AVX2, an AMD EPYC: 2 eps relative), the product rounds once more, and cos/sin
    add an ulp of their result: |ours - ref| <= ~3 eps |a| + 2 eps. The bound per element is
    2 eps |a| with a safety factor of 2, plus 4 eps: at a = 930 rad (1000 * p for p = 0.93), where one
    float32 ulp of the argument is 6e-5, it is 4.4e-4 in float32 (measured: 2.6e-5 on a Xeon, 5.4e-5 with
    AVX2) and 8e-13 in float64; for small arguments it stays at a few eps. A swapped cos/sin half or a wrong
    frequency is off by O(1).
    """
    eps = torch.finfo(ref.dtype).eps
    half = ref.shape[-1] // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)
    arg = (t.double()[:, None] * freqs[None]).abs()
    bound = 4 * eps * torch.cat([arg, arg], dim=-1) + 4 * eps
    excess = ((ours.double() - ref.double()).abs() - bound).max().item()
    assert ours.shape == ref.shape and excess <= 0, f"sinusoid off by {excess:.3g} beyond its bound"


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float64, 1e-9)])
def test_volume_unet_matches_official(golden, dtype, tol):
    t, meta = golden("unet_volume_tiny")
    model = from_official("volume", _weights(t), meta["constructor_kwargs"]).to(dtype)
    x = t["input.x"].reshape(2, 16, 12, 16, 16).to(dtype)  # batch index = window*16 + frame
    steps = t["input.timesteps"].reshape(2, 16)
    assert torch.equal(steps, steps[:, :1].expand(2, 16))
    with torch.no_grad():
        eps = model(x, steps[:, 0]).reshape(32, 4, 16, 16)
    ref = t["output.eps_fp32" if dtype == torch.float32 else "output.eps_fp64"]
    assert (eps - ref).abs().max().item() <= tol


def test_volume_unet_intermediates_match(golden):
    t, meta = golden("unet_volume_tiny")
    model = from_official("volume", _weights(t), meta["constructor_kwargs"]).double()
    from napari_gem3d.models.layers import timestep_embedding

    steps = t["input.timesteps"]
    sinus = timestep_embedding(steps, 32, dtype=torch.float64)
    _assert_sinusoid_close(sinus, t["intermediate.t_emb_sinusoid_fp64"], steps)
    # the official fp32 sinusoid of t up to 812: equal up to the argument's last bits, not bit for bit
    _assert_sinusoid_close(timestep_embedding(steps, 32), t["intermediate.t_emb_sinusoid_fp32_official"], steps)
    with torch.no_grad():
        emb = model.time_mlp(sinus)
        assert (emb - t["intermediate.emb_fp64"]).abs().max() < 1e-10
        from napari_gem3d.models.unet_blocks import BlockContext

        h0 = model.down[0](t["input.x"].double(), emb, BlockContext(num_frames=16))
        assert (h0.float() - t["intermediate.input_blocks.0_fp64_rounded_to_fp32"]).abs().max() < 1e-5


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float64, 1e-9)])
def test_slice_unet_matches_official(golden, dtype, tol):
    t, meta = golden("unet_slice_tiny")
    model = from_official("slice", _weights(t), meta["constructor_kwargs"]).to(dtype)
    with torch.no_grad():
        eps = model(t["input.x"].to(dtype), t["input.timesteps"], t["input.p"].to(dtype))
    ref = t["output.eps_fp32" if dtype == torch.float32 else "output.eps_fp64"]
    assert (eps - ref).abs().max().item() <= tol


def test_slice_position_context_matches_official(golden):
    from napari_gem3d.models.unet import position_context

    t, _ = golden("unet_slice_tiny")
    p = t["input.p"]  # up to 0.93: arguments 1000 * p * freq reach ~930 rad
    _assert_sinusoid_close(position_context(p, 128), t["input.context_fp32"], 1000 * p)
    _assert_sinusoid_close(position_context(p.double(), 128, torch.float64), t["input.context_fp64"], 1000 * p)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float64, 1e-9)])
def test_vae_matches_official(golden, dtype, tol):
    t, meta = golden("vae_tiny")
    model = from_official("vae", _weights(t), meta["constructor_kwargs"]).to(dtype)
    sfx = "fp32" if dtype == torch.float32 else "fp64"
    with torch.no_grad():
        mean, logvar = model.posterior(t["input.x"].to(dtype))
        enc = model.encode(t["input.x"].to(dtype))
        dec = model.decode(mean)
    assert torch.equal(enc, mean)  # encode is the posterior mean, deterministically
    assert (mean - t[f"output.posterior_mean_{sfx}"]).abs().max().item() <= tol
    assert (logvar - t[f"output.posterior_logvar_{sfx}"]).abs().max().item() <= tol
    assert (dec - t[f"output.decode_of_mean_{sfx}"]).abs().max().item() <= tol


def test_temporal_layers_matter_in_golden_case(golden):
    """The golden weights make temporal layers non-trivial: resetting them changes the output."""
    t, meta = golden("unet_volume_tiny")
    model = from_official("volume", _weights(t), meta["constructor_kwargs"])
    x = t["input.x"].reshape(2, 16, 12, 16, 16)
    ts = t["input.timesteps"].reshape(2, 16)[:, 0]
    with torch.no_grad():
        before = model(x, ts)
        for name, module in model.named_modules():
            if hasattr(module, "reset_identity"):
                module.reset_identity()
            if name.endswith(("proj_t",)):
                module.weight.zero_()
                module.bias.zero_()
        after = model(x, ts)
    assert (before - after).abs().max() > 1.0  # the reference README reports 3.93


def test_missing_and_unexpected_keys_are_listed(golden):
    t, meta = golden("unet_volume_tiny")
    weights = _weights(t)
    broken = dict(weights)
    del broken["model.diffusion_model.middle_block.1.qkv_tem.weight"]
    broken["model.diffusion_model.extra.weight"] = torch.zeros(1)
    with pytest.raises(KeyMismatchError) as err:
        from_official("volume", broken, meta["constructor_kwargs"])
    assert "middle_block.1.qkv_tem.weight" in str(err.value)
    assert "extra.weight" in str(err.value)


def test_shape_mismatch_is_reported(golden):
    t, meta = golden("vae_tiny")
    weights = _weights(t)
    weights["first_stage_model.quant_conv.weight"] = torch.zeros(8, 8, 3, 3)
    with pytest.raises(KeyMismatchError, match="quant_conv.weight"):
        from_official("vae", weights, meta["constructor_kwargs"])


def test_unknown_kind_is_refused(golden):
    t, meta = golden("vae_tiny")
    with pytest.raises(ValueError, match="unknown kind"):
        from_official("decoder", _weights(t), meta["constructor_kwargs"])
