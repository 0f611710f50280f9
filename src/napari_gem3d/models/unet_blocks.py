"""UNet blocks: residual, self-attention (spatial + optional temporal), transformer, resampling.

Every block takes ``(x, emb, ctx)`` where ``ctx`` is a :class:`BlockContext` carrying the
number of frames per window (``None`` = plain 2-D batch) and the slice model's position
context. Temporal layers are present only when the block is built with ``temporal=True``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .layers import TemporalConv, multihead_attention, unet_norm, upsample_nearest2x, zero_


@dataclass(frozen=True)
class BlockContext:
    num_frames: int | None = None
    position: torch.Tensor | None = None  # (batch, context_dim) for the slice model


class ResBlock(nn.Module):
    """GN-SiLU-Conv [-TConv] + time bias, GN-SiLU-Dropout-Conv(zero) [-TConv], plus skip."""

    def __init__(self, cin: int, cout: int, emb_dim: int, temporal: bool, dropout: float = 0.0):
        super().__init__()
        self.norm1 = unet_norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, cout)
        self.norm2 = unet_norm(cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)
        self.tconv1 = TemporalConv(cout) if temporal else None
        self.tconv2 = TemporalConv(cout) if temporal else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor, ctx: BlockContext) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.tconv1 is not None:
            h = self.tconv1(h, ctx.num_frames)
        h = h + self.emb_proj(F.silu(emb))[:, :, None, None].to(h.dtype)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.tconv2 is not None:
            h = self.tconv2(h, ctx.num_frames)
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Spatial multi-head self-attention; with ``temporal=True`` also attention over frames.

    The temporal part reuses the same GroupNorm (statistics per pixel column over channel
    groups x frames), has its own fused qkv and a zero-initialised output projection, and
    adds a residual. There is no positional encoding along the frame axis.
    """

    def __init__(self, channels: int, head_channels: int, temporal: bool):
        super().__init__()
        if channels % head_channels:
            raise ValueError(f"{channels} channels are not divisible by head width {head_channels}")
        self.num_heads = channels // head_channels
        self.norm = unet_norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = zero_(nn.Linear(channels, channels))
        self.temporal = temporal
        if temporal:
            self.qkv_t = nn.Linear(channels, 3 * channels)
            self.proj_t = zero_(nn.Linear(channels, channels))

    def _attend(self, tokens_in: torch.Tensor, qkv: nn.Linear, proj: nn.Linear) -> torch.Tensor:
        return proj(multihead_attention(qkv(tokens_in), self.num_heads))

    def forward(self, x: torch.Tensor, emb: torch.Tensor, ctx: BlockContext) -> torch.Tensor:
        n, c, h, w = x.shape
        tokens = rearrange(self.norm(x), "n c h w -> n (h w) c")
        x = x + rearrange(self._attend(tokens, self.qkv, self.proj), "n (h w) c -> n c h w", h=h, w=w)
        if not self.temporal:
            return x
        f = ctx.num_frames
        cols = rearrange(x, "(b f) c h w -> (b h w) c f", f=f)
        tokens = rearrange(self.norm(cols), "n c f -> n f c")
        cols = cols + rearrange(self._attend(tokens, self.qkv_t, self.proj_t), "n f c -> n c f")
        return rearrange(cols, "(b h w) c f -> (b f) c h w", f=f, h=h, w=w)


class TransformerBlock(nn.Module):
    """Self-attention, position bias, GEGLU feed-forward (each pre-LayerNorm + residual).

    The official slice model feeds one context vector per sample to a cross-attention whose
    keys/values are all that same vector, so its output is ``out(v(context))`` at every token
    whatever the scores: a learned additive bias. We compute that bias directly.
    """

    def __init__(self, channels: int, head_channels: int, context_dim: int):
        super().__init__()
        self.num_heads = channels // head_channels
        self.norm1 = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels, bias=False)
        self.attn_out = nn.Linear(channels, channels)
        self.pos_value = nn.Linear(context_dim, channels, bias=False)
        self.pos_out = nn.Linear(channels, channels)
        self.norm3 = nn.LayerNorm(channels)
        self.ff_in = nn.Linear(channels, 8 * channels)
        self.ff_out = nn.Linear(4 * channels, channels)

    def forward(self, tokens: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        tokens = tokens + self.attn_out(multihead_attention(self.qkv(self.norm1(tokens)), self.num_heads))
        tokens = tokens + self.pos_out(self.pos_value(position.to(tokens.dtype)))[:, None, :]
        value, gate = self.ff_in(self.norm3(tokens)).chunk(2, dim=-1)
        return tokens + self.ff_out(value * F.gelu(gate))


class SpatialTransformer(nn.Module):
    """GN -> 1x1 in -> transformer blocks over H*W tokens -> 1x1 out (zero) -> + input."""

    def __init__(self, channels: int, head_channels: int, context_dim: int, depth: int = 1):
        super().__init__()
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.blocks = nn.ModuleList(TransformerBlock(channels, head_channels, context_dim) for _ in range(depth))
        self.proj_out = zero_(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor, ctx: BlockContext) -> torch.Tensor:
        if ctx.position is None:
            raise ValueError("the slice model needs a position context (call it with position p in [0, 1])")
        _, _, h, w = x.shape
        tokens = rearrange(self.proj_in(self.norm(x)), "n c h w -> n (h w) c")
        for block in self.blocks:
            tokens = block(tokens, ctx.position)
        return x + self.proj_out(rearrange(tokens, "n (h w) c -> n c h w", h=h, w=w))


class Downsample(nn.Module):
    """3x3 stride-2 convolution (symmetric padding) [-TConv]."""

    def __init__(self, channels: int, temporal: bool):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        self.tconv = TemporalConv(channels) if temporal else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor, ctx: BlockContext) -> torch.Tensor:
        x = self.conv(x)
        return x if self.tconv is None else self.tconv(x, ctx.num_frames)


class Upsample(nn.Module):
    """Nearest x2, 3x3 convolution [-TConv]."""

    def __init__(self, channels: int, temporal: bool):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.tconv = TemporalConv(channels) if temporal else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor, ctx: BlockContext) -> torch.Tensor:
        x = self.conv(upsample_nearest2x(x))
        return x if self.tconv is None else self.tconv(x, ctx.num_frames)


class Stem(nn.Module):
    """Input 3x3 convolution [-TConv]."""

    def __init__(self, cin: int, cout: int, temporal: bool):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.tconv = TemporalConv(cout) if temporal else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor, ctx: BlockContext) -> torch.Tensor:
        x = self.conv(x)
        return x if self.tconv is None else self.tconv(x, ctx.num_frames)


class Stage(nn.Sequential):
    """A sequence of blocks that all take ``(x, emb, ctx)``."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, ctx: BlockContext) -> torch.Tensor:  # type: ignore[override]
        for block in self:
            x = block(x, emb, ctx)
        return x
