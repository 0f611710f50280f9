"""Network helpers shared by the invariant tests."""

from __future__ import annotations

import torch


def randomise(module: torch.nn.Module, seed: int = 0, scale: float = 0.2) -> None:
    """Overwrite every parameter with N(0, scale^2) draws, so zero-initialised layers become non-trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
