"""The VQ autoencoder's codebook: MONAI's EMA quantiser with dead-code restarts, and its perplexity.

Why EMA codebook updates plus a commitment loss, and why restarts: see :mod:`napari_gem3d.models.vq`.
Imports MONAI, so :mod:`.vq` imports this module only when it builds a VQ model.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from monai.networks.layers.vector_quantizer import EMAQuantizer

from .vq import VQConfig


def codebook_perplexity(counts: torch.Tensor) -> torch.Tensor:
    """``exp(entropy)`` of the code usage ``counts`` (1: one code used; ``K``: all ``K`` codes used equally)."""
    p = counts.float() / counts.sum().clamp_min(1)
    return torch.exp(-torch.special.xlogy(p, p).sum())


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N*H*W, C)``, the rows the codebook is matched against."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def _synchronised() -> bool:
    return dist.is_available() and dist.is_initialized()


class CodebookQuantizer(EMAQuantizer):
    """MONAI's EMA codebook (2-D, synchronised across DDP processes) with dead-code restarts.

    ``forward(z)`` (training: updates the codebook) -> straight-through quantised ``z``, commitment loss, code
    usage counts of this step (summed over processes). ``snap(z)``: the nearest codes, straight-through,
    without any update.
    """

    def __init__(self, cfg: VQConfig):
        super().__init__(spatial_dims=2, num_embeddings=cfg.codebook_size, embedding_dim=cfg.embed_dim,
                         commitment_cost=cfg.commitment_cost, decay=cfg.codebook_decay)
        self.dead_code_steps = cfg.dead_code_steps
        self.register_buffer("unused_steps", torch.zeros(cfg.codebook_size, dtype=torch.long))
        self.register_buffer("restarts", torch.zeros((), dtype=torch.long))  # codes restarted so far
        self.unused_steps: torch.Tensor
        self.restarts: torch.Tensor

    def snap(self, z: torch.Tensor) -> torch.Tensor:
        with torch.autocast(z.device.type, enabled=False):  # distances in float32 (MONAI's guard is CUDA-only)
            q = self.embed(self.quantize(z)[2]).to(z.dtype)
        return z + (q - z).detach()

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        inputs = inputs.float()
        with torch.autocast(inputs.device.type, enabled=False):
            quantized, loss, indices = super().forward(inputs)
        counts = torch.bincount(indices.flatten(), minlength=self.num_embeddings).float()
        if self.training:
            if self.ddp_sync and _synchronised():
                dist.all_reduce(counts)
            self._restart_dead_codes(counts, inputs)
        return quantized, loss, counts

    @torch.no_grad()
    def _restart_dead_codes(self, counts: torch.Tensor, inputs: torch.Tensor) -> None:
        self.unused_steps.add_(1).masked_fill_(counts > 0, 0)
        if self.dead_code_steps <= 0:
            return
        dead = torch.nonzero(self.unused_steps >= self.dead_code_steps).flatten()
        if dead.numel() == 0:
            return
        rows = _channels_last(inputs.detach())
        fresh = rows[torch.randint(rows.shape[0], (dead.numel(),), device=rows.device)].contiguous()
        if self.ddp_sync and _synchronised():  # the codebook is not a DDP-synchronised parameter
            dist.broadcast(fresh, src=0)
        self.embedding.weight.data[dead] = fresh
        self.ema_w.data[dead] = fresh  # as if each had been chosen once by its new encoding
        self.ema_cluster_size.data[dead] = 1.0
        self.unused_steps[dead] = 0
        self.restarts += dead.numel()
