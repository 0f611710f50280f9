"""Small building blocks shared by the UNets and the VAE.

Frame folding: a window of F slices travels through every 2-D layer as a batch of
``B*F`` images (frame index fastest). Temporal layers regroup it per pixel column.
All reshapes go through einops so the axis names document themselves.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn


class GroupNorm32(nn.GroupNorm):
    """GroupNorm whose statistics are never below float32 (half inputs are upcast and cast back)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            return super().forward(x.float()).to(x.dtype)
        return super().forward(x)


def unet_norm(channels: int) -> GroupNorm32:
    """The UNet's norm: 32 groups, eps 1e-5, float32 statistics."""
    return GroupNorm32(32, channels, eps=1e-5)


def timestep_embedding(
    t: torch.Tensor, dim: int, max_period: float = 10000.0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Sinusoidal embedding laid out ``[cos | sin]``, built in ``dtype`` (float32 unless float64).

    ``t`` may be integer timesteps or real values (the slice model embeds ``1000 * p``).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=dtype, device=t.device) / half)
    args = t.to(dtype)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


# --- frame folds ---------------------------------------------------------------------------------


def upsample_nearest2x(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour x2 of (..., H, W), equal to ``F.interpolate(x, scale_factor=2, mode="nearest")``
    element for element, as a broadcast copy: torch's CPU kernel took 87 ms where this takes 13 ms for the
    decoder's (38, 64, 32, 32) (2 threads, benchmarks/bench_upsample.py)."""
    return repeat(x, "... h w -> ... (h i) (w j)", i=2, j=2)


def fold_frames(x: torch.Tensor) -> torch.Tensor:
    """``(b, f, c, h, w) -> ((b f), c, h, w)``."""
    return rearrange(x, "b f c h w -> (b f) c h w")


def unfold_frames(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``((b f), c, h, w) -> (b, f, c, h, w)``."""
    return rearrange(x, "(b f) c h w -> b f c h w", f=num_frames)


def to_columns(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``((b f), c, h, w) -> ((b h w), c, f)``: one sequence of frames per pixel."""
    return rearrange(x, "(b f) c h w -> (b h w) c f", f=num_frames)


def from_columns(x: torch.Tensor, num_frames: int, height: int, width: int) -> torch.Tensor:
    """Exact inverse of :func:`to_columns` (height and width keep their names: non-square safe)."""
    return rearrange(x, "(b h w) c f -> (b f) c h w", f=num_frames, h=height, w=width)


class TemporalConv(nn.Module):
    """Full (channel-mixing) Conv1d with kernel 3 along the frame axis, applied per pixel.

    Not residual: its output replaces its input. Initialised to the identity (Dirac centre
    tap, zero bias), so a fresh temporal layer changes nothing.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel_size=3, padding=1)
        self.reset_identity()

    def reset_identity(self) -> None:
        with torch.no_grad():
            nn.init.dirac_(self.conv.weight)  # weight[c, c, 1] = 1, the rest 0 (no arange: cheap on a meta device)
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        h, w = x.shape[-2:]
        return from_columns(self.conv(to_columns(x, num_frames)), num_frames, h, w)


def multihead_attention(qkv: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Self-attention from a fused ``qkv`` of shape ``(n, tokens, 3*c)``.

    The 3c channels are grouped per head: ``[head 0: q, k, v][head 1: q, k, v]...``, each
    ``c/num_heads`` wide. Returns ``(n, tokens, c)`` with head-major channels.
    """
    q, k, v = rearrange(qkv, "n t (h three d) -> three n h t d", h=num_heads, three=3)
    out = F.scaled_dot_product_attention(q, k, v)
    return rearrange(out, "n h t d -> n t (h d)")


def zero_(module: nn.Module) -> nn.Module:
    """Zero every parameter of ``module`` in place and return it."""
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
    return module
