"""A minimal LoRA wrapper for ``nn.Linear``, ``nn.Conv1d`` and ``nn.Conv2d`` (no PEFT dependency).

``add_lora(module, pattern, rank, alpha)`` replaces every matching layer by :class:`LoRALayer`:
``y = base(x) + scale * B(A(x))`` with ``A`` shaped like the base layer (kernel, stride, padding) and
``B`` a 1x1 map initialised to zero, so a fresh adapter changes nothing (bit for bit: it adds exact
zeros). ``merge_lora(module)`` folds ``scale * B A`` into the base weights and puts the plain layers
back, so the state dict has the original keys again (the bundle format is unchanged).
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn

LORA_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)
#: attention projections (spatial and temporal) and the temporal convolutions of the volume UNet
DEFAULT_TARGETS = r"(^|\.)(qkv|proj|qkv_t|proj_t)$|(^|\.)tconv\d*\.conv$"


class LoRALayer(nn.Module):
    """``base`` (frozen) plus a trainable rank-``rank`` update scaled by ``alpha / rank``."""

    def __init__(self, base: nn.Module, rank: int, alpha: float):
        super().__init__()
        if not isinstance(base, LORA_TYPES):
            raise TypeError(f"LoRA supports {[t.__name__ for t in LORA_TYPES]}, not {type(base).__name__}")
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base, self.rank, self.scale = base, int(rank), float(alpha) / float(rank)
        base.requires_grad_(False)
        kw = {"device": base.weight.device, "dtype": base.weight.dtype}
        if isinstance(base, nn.Linear):
            self.lora_A = nn.Linear(base.in_features, rank, bias=False, **kw)
            self.lora_B = nn.Linear(rank, base.out_features, bias=False, **kw)
        else:
            if base.groups != 1 or base.padding_mode != "zeros":
                raise ValueError("LoRA on convolutions needs groups=1 and zero padding")
            conv = type(base)
            self.lora_A = conv(base.in_channels, rank, base.kernel_size, stride=base.stride, padding=base.padding,
                               dilation=base.dilation, bias=False, **kw)
            self.lora_B = conv(rank, base.out_channels, 1, bias=False, **kw)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scale * self.lora_B(self.lora_A(x))

    def delta_weight(self) -> torch.Tensor:
        """``scale * B A`` in the base weight's layout."""
        a, b = self.lora_A.weight, self.lora_B.weight
        if isinstance(self.base, nn.Linear):
            return self.scale * (b @ a)
        return self.scale * torch.einsum("or,ri...->oi...", b.flatten(1), a)

    @torch.no_grad()
    def merged(self) -> nn.Module:
        """The base layer with the update folded into its weight (trainable again)."""
        self.base.weight.add_(self.delta_weight().to(self.base.weight.dtype))
        self.base.requires_grad_(True)
        return self.base


def _set_child(root: nn.Module, name: str, child: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, child)


def add_lora(module: nn.Module, pattern: str = DEFAULT_TARGETS, rank: int = 4, alpha: float = 4.0) -> list[str]:
    """Freeze ``module`` and wrap every Linear/Conv1d/Conv2d whose name matches ``pattern``.

    Returns the wrapped names; raises ValueError when nothing matches (a typo in the pattern).
    """
    rx = re.compile(pattern)
    module.requires_grad_(False)
    names = [n for n, m in module.named_modules() if n and isinstance(m, LORA_TYPES) and rx.search(n)]
    if not names:
        raise ValueError(f"no Linear/Conv1d/Conv2d layer name matches the LoRA pattern {pattern!r}")
    for n in names:
        _set_child(module, n, LoRALayer(module.get_submodule(n), rank, alpha))
    return names


def merge_lora(module: nn.Module) -> int:
    """Fold every adapter into its base layer in place; returns how many were merged."""
    names = [n for n, m in module.named_modules() if isinstance(m, LoRALayer)]
    for n in names:
        _set_child(module, n, module.get_submodule(n).merged())
    return len(names)


def has_lora(module: nn.Module) -> bool:
    return any(isinstance(m, LoRALayer) for m in module.modules())
