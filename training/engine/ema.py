"""Exponential moving average of trainable parameters (LitEma-style warm-up)."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """Shadow copies of ``module``'s trainable parameters; decay ``min(decay, (1 + n) / (10 + n))``."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = float(decay)
        self.num_updates = 0
        self.shadow = {n: p.detach().clone().float() for n, p in module.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for n, p in module.named_parameters():
            if n in self.shadow:
                self.shadow[n].mul_(d).add_(p.detach().float(), alpha=1 - d)

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Write the averaged weights into ``module`` (the caller keeps a backup if needed)."""
        for n, p in module.named_parameters():
            if n in self.shadow:
                p.copy_(self.shadow[n].to(p.dtype))

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        if set(state["shadow"]) != set(self.shadow):
            raise ValueError("EMA state does not match the trainable parameters of this model")
        self.decay, self.num_updates = float(state["decay"]), int(state["num_updates"])
        for n, t in state["shadow"].items():
            self.shadow[n].copy_(t)
