"""Multi-level mask injection (Lesion-DDPM): off by default, exact no-op at initialisation, and a real path
from the mask channels to every resolution once trained."""

from __future__ import annotations

import pytest
import torch

from napari_gem3d.models.unet import UNetConfig, VolumeUNet
from net_helpers import randomise

CFG = dict(in_channels=4 + 7 + 4, out_channels=4, model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
           attention_resolutions=(2,), num_head_channels=16, temporal=True)


def test_off_by_default_and_for_official_configs():
    assert UNetConfig().mask_injection == 0
    assert VolumeUNet(UNetConfig(**CFG)).inject is None


def test_zero_initialised_injection_changes_nothing():
    plain = VolumeUNet(UNetConfig(**CFG))
    randomise(plain)
    injected = VolumeUNet(UNetConfig(**CFG, mask_injection=7))
    missing, unexpected = injected.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("inject.") for k in missing)
    # one 1x1 convolution per stage: stem + 2 blocks + 2 downsamples, middle, 3 x 2 up blocks
    assert len(injected.inject) == 1 + 3 + 2 + 1 + 6
    x, t = torch.randn(2, 4, 15, 16, 16), torch.tensor([37, 812])
    with torch.no_grad():
        assert torch.equal(injected(x, t), plain(x, t))


def _mask_gradient(model: VolumeUNet, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    model.zero_grad()
    model(x, t).square().mean().backward()
    return x.grad[:, :, 4:11]  # the mask channels


def test_trained_injection_carries_the_mask_to_every_level():
    model = VolumeUNet(UNetConfig(**CFG, mask_injection=7))
    randomise(model)
    x, t = torch.randn(1, 4, 15, 16, 16), torch.tensor([500])
    with_injection = _mask_gradient(model, x, t)
    assert all(conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0 for conv in model.inject)
    with torch.no_grad():
        for conv in model.inject:
            conv.weight.zero_()
            conv.bias.zero_()
    assert not torch.allclose(with_injection, _mask_gradient(model, x, t))  # a path beyond the stem


@pytest.mark.parametrize("kw", [dict(mask_injection=12), dict(mask_injection=-1),
                                dict(mask_injection=4, context_dim=64, temporal=False)])
def test_bad_injection_settings_are_refused(kw):
    with pytest.raises(ValueError, match="mask_injection"):
        UNetConfig(**{**CFG, **kw})
