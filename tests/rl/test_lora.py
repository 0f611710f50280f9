"""The minimal LoRA wrapper: identity at init, exact merge, original state-dict keys after merging."""

from __future__ import annotations

import pytest
import torch
from helpers import random_bundle
from torch import nn
from training.rl.lora import LoRALayer, add_lora, has_lora, merge_lora
from training.rl.policy import set_trainable

pytestmark = pytest.mark.rl


@pytest.mark.parametrize("layer, shape", [
    (nn.Linear(6, 5), (3, 6)),
    (nn.Conv1d(4, 3, 3, padding=1), (2, 4, 7)),
    (nn.Conv2d(4, 3, 3, padding=1, stride=2), (2, 4, 9, 9)),
])
def test_lora_starts_as_identity_and_merges_exactly(layer, shape):
    torch.manual_seed(0)
    x = torch.randn(shape)
    # The reference on the path the wrapped layer takes: LoRALayer freezes its base, and frozen weights may
    # take another MKL/oneDNN kernel than trainable ones (float results differ in the last bits on some CPUs).
    # Frozen for the reference only, trainable again before the wrap, so the freezing below is still tested.
    ref = layer.requires_grad_(False)(x).detach()
    layer.requires_grad_(True)
    lora = LoRALayer(layer, rank=2, alpha=4.0)
    assert torch.equal(lora(x), ref)  # B = 0: exact zeros added
    assert not any(p.requires_grad for p in lora.base.parameters())
    with torch.no_grad():
        lora.lora_B.weight.normal_()
    changed = lora(x).detach()
    assert not torch.allclose(changed, ref)
    merged = lora.merged()
    torch.testing.assert_close(merged(x), changed, rtol=1e-5, atol=1e-5)


def test_lora_on_the_volume_unet_targets_attention_and_temporal_layers():
    bundle = random_bundle()
    unet = bundle.volume
    keys = set(unet.state_dict())
    x = torch.randn(1, 4, unet.config.in_channels, 4, 4)
    t = torch.tensor([500])
    # the reference with every weight frozen, as LoRA leaves the base network (frozen and trainable weights
    # may take different MKL kernels: last-bit differences); trainable again so set_trainable must freeze them
    unet.requires_grad_(False)
    with torch.no_grad():
        ref = unet(x, t)
    unet.requires_grad_(True)
    params = set_trainable(unet, "lora", lora_rank=2)
    names = [n for n, m in unet.named_modules() if isinstance(m, LoRALayer)]
    assert any("tconv" in n for n in names) and any(n.endswith("qkv_t") for n in names)
    assert all(n.split(".")[-1] in ("lora_A", "lora_B") or "lora_" in n
               for n, p in unet.named_parameters() if p.requires_grad)
    assert sum(p.numel() for p in params) < 0.5 * sum(p.numel() for p in unet.parameters())
    with torch.no_grad():
        assert torch.equal(unet(x, t), ref)
        for p in params:
            p.add_(0.01 * torch.randn_like(p))
        moved = unet(x, t)
    assert merge_lora(unet) == len(names) and not has_lora(unet)
    assert set(unet.state_dict()) == keys
    with torch.no_grad():
        torch.testing.assert_close(unet(x, t), moved, rtol=1e-4, atol=1e-5)


def test_lora_pattern_that_matches_nothing_is_an_error():
    with pytest.raises(ValueError, match="LoRA pattern"):
        add_lora(nn.Sequential(nn.Linear(2, 2)), pattern=r"does_not_exist")


def test_temporal_mode_trains_only_temporal_layers():
    unet = random_bundle().volume
    params = set_trainable(unet, "temporal")
    assert {id(p) for p in params} == {id(p) for p in unet.temporal_parameters()}
    assert all(("tconv" in n or n.split(".")[-2] in ("qkv_t", "proj_t")) == p.requires_grad
               for n, p in unet.named_parameters())
