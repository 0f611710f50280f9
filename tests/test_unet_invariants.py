"""Exact invariants of the networks: identity temporal layers, folds, non-square latents."""

from __future__ import annotations

import pytest
import torch

from napari_gem3d.models.layers import fold_frames, from_columns, to_columns, unfold_frames, upsample_nearest2x
from napari_gem3d.models.unet import UNetConfig, VolumeUNet, is_temporal_name
from napari_gem3d.models.vae import AutoencoderKL, VAEConfig
from net_helpers import path_tol, randomise

TINY = dict(in_channels=12, out_channels=4, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
            attention_resolutions=(2,), num_head_channels=16)


def test_identity_temporal_layers_equal_2d_unet_slice_by_slice():
    torch.manual_seed(0)
    unet2d = VolumeUNet(UNetConfig(**TINY, temporal=False))
    randomise(unet2d)  # zero-initialised 2-D layers made non-trivial
    unet3d = VolumeUNet(UNetConfig(**TINY, temporal=True))
    missing, unexpected = unet3d.load_state_dict(unet2d.state_dict(), strict=False)
    assert not unexpected
    assert missing and all(is_temporal_name(k) for k in missing)
    x = torch.randn(2, 16, 12, 16, 16)
    t = torch.tensor([37, 812])
    with torch.no_grad():
        vol = unet3d(x, t)
        per_slice = torch.stack([unet2d(x[:, f : f + 1], t)[:, 0] for f in range(16)], dim=1)
    assert torch.equal(vol, unet2d(x, t))  # bit-identical to the 2-D network on the same batch
    # and to slice-by-slice calls up to rounding: batch 2 and batch 32 may take different conv/matmul kernels.
    # A whole UNet: depth 4, 32 eps * max|vol| (float32 vs float64 of this network: <= 6 eps * max|vol|)
    assert (vol - per_slice).abs().max() <= path_tol(vol, depth=4)


def test_perturbing_a_temporal_layer_breaks_the_equality():
    """The invariant test above can fail: a non-identity temporal conv changes the output."""
    unet2d = VolumeUNet(UNetConfig(**TINY, temporal=False))
    randomise(unet2d)
    unet3d = VolumeUNet(UNetConfig(**TINY, temporal=True))
    unet3d.load_state_dict(unet2d.state_dict(), strict=False)
    with torch.no_grad():
        unet3d.down[0][0].tconv.conv.weight[:, :, 0] += 0.05
    x, t = torch.randn(1, 16, 12, 16, 16), torch.tensor([500])
    with torch.no_grad():
        assert (unet3d(x, t) - unet2d(x, t)).abs().max() > 1e-3


def test_temporal_parameter_set_is_exactly_the_pseudo3d_layers():
    unet = VolumeUNet(UNetConfig(**TINY, temporal=True))
    names = {n for n, _ in unet.named_parameters() if is_temporal_name(n)}
    plain = VolumeUNet(UNetConfig(**TINY, temporal=False))
    assert names == set(dict(unet.named_parameters())) - set(dict(plain.named_parameters()))
    assert len(unet.temporal_parameters()) == len(names)


@pytest.mark.parametrize("shape", [(2, 16, 3, 8, 8), (1, 5, 4, 6, 10), (3, 2, 1, 7, 3)])
def test_folds_are_exact_inverses(shape):
    x = torch.randn(*shape)
    b, f, c, h, w = shape
    folded = fold_frames(x)
    assert folded.shape == (b * f, c, h, w)
    assert torch.equal(unfold_frames(folded, f), x)
    cols = to_columns(folded, f)
    assert cols.shape == (b * h * w, c, f)
    assert torch.equal(from_columns(cols, f, h, w), folded)
    # column (b, y, x) holds exactly the frames of that pixel
    y, xx = h - 1, w // 2
    assert torch.equal(cols[((b - 1) * h + y) * w + xx], x[b - 1, :, :, y, xx].T)


def test_non_square_latents_keep_pixels_in_place():
    """A pure temporal mixing (frame shift) must move values along frames only, for H != W."""
    torch.manual_seed(0)
    unet = VolumeUNet(UNetConfig(**TINY, temporal=True))
    x = torch.randn(1, 16, 12, 8, 16)
    with torch.no_grad():
        out = unet(x, torch.tensor([10]))
    assert out.shape == (1, 16, 4, 8, 16)
    # temporal attention on a non-square input: spatial layout must survive the column round trip
    from napari_gem3d.models.unet_blocks import BlockContext, SelfAttention

    attn = SelfAttention(64, 16, temporal=True)
    randomise(attn, 3)
    h = torch.randn(16, 64, 4, 6)
    with torch.no_grad():
        full = attn(h, None, BlockContext(num_frames=16))
        # reference: spatial part, then temporal attention computed pixel by pixel
        spatial_only = SelfAttention(64, 16, temporal=False)
        spatial_state = {k: v for k, v in attn.state_dict().items() if not k.startswith(("qkv_t", "proj_t"))}
        spatial_only.load_state_dict(spatial_state)
        s = spatial_only(h, None, BlockContext(num_frames=16))
        y, xpix = 3, 5
        col = s[:, :, y, xpix].T[None]  # (1, c, f)
        from einops import rearrange

        from napari_gem3d.models.layers import multihead_attention

        tokens = rearrange(attn.norm(col), "n c f -> n f c")
        ref = col + rearrange(attn.proj_t(multihead_attention(attn.qkv_t(tokens), attn.num_heads)), "n f c -> n c f")
    # one attention block, batched over all columns versus one column: depth 2, 16 eps * max|ref|
    # (float32 vs float64 of this block: <= 2 eps * max); a column from the wrong pixel is off by O(1)
    assert (full[:, :, y, xpix].T - ref[0]).abs().max() <= path_tol(ref, depth=2)


def test_windows_do_not_interact():
    torch.manual_seed(1)
    unet = VolumeUNet(UNetConfig(**TINY, temporal=True))
    randomise(unet, 2)
    x = torch.randn(2, 16, 12, 8, 8)
    t = torch.tensor([5, 900])
    with torch.no_grad():
        a = unet(x, t)
        x2 = x.clone()
        x2[0] += 1.0
        b = unet(x2, t)
    assert torch.equal(a[1], b[1])
    assert not torch.equal(a[0], b[0])


def test_vae_encoding_is_deterministic_posterior_mean():
    vae = AutoencoderKL(VAEConfig(in_channels=1, out_channels=1, ch=32, ch_mult=(1, 2), num_res_blocks=1))
    vae.eval()
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        a, b = vae.encode(x), vae.encode(x)
        mean, _ = vae.posterior(x)
    assert torch.equal(a, b)
    assert torch.equal(a, mean)


def test_bad_inputs_raise_clear_errors():
    unet = VolumeUNet(UNetConfig(**TINY, temporal=True))
    with pytest.raises(ValueError, match="windows, frames"):
        unet(torch.randn(16, 12, 8, 8), torch.tensor([1]))
    with pytest.raises(ValueError, match="input channels"):
        unet(torch.randn(1, 16, 8, 8, 8), torch.tensor([1]))
    with pytest.raises(ValueError, match="divisible"):
        unet(torch.randn(1, 16, 12, 9, 8), torch.tensor([1]))
    with pytest.raises(ValueError, match="one timestep per window"):
        unet(torch.randn(1, 16, 12, 8, 8), torch.zeros(1, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="multiple of 32"):
        UNetConfig(**{**TINY, "model_channels": 24})


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (38, 64, 16, 16), (4, 1, 1, 1), (3, 2, 4, 6, 8)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_nearest_upsample_equals_torch_interpolate_with_its_gradient(shape, dtype):
    """The broadcast copy the UNet and the VAE upsample with is F.interpolate's nearest x2: the values bit for
    bit (5-D: the last two axes, as interpolate's per-image call), the gradients (each a sum of four terms,
    added in another order) to rounding."""
    import torch.nn.functional as F

    x = torch.randn(shape, dtype=torch.float64).to(dtype).requires_grad_(True)
    flat = x.detach().reshape(-1, 1, *shape[-2:]).clone().requires_grad_(True)
    ours = upsample_nearest2x(x)
    ref = F.interpolate(flat, scale_factor=2.0, mode="nearest").reshape(*shape[:-2], 2 * shape[-2], 2 * shape[-1])
    assert ours.dtype == dtype and torch.equal(ours, ref)
    weight = torch.randn(ours.shape, dtype=torch.float64).to(dtype)
    (ours * weight).sum().backward()
    (ref * weight).sum().backward()
    torch.testing.assert_close(x.grad, flat.grad.reshape(shape))
