"""2-D KL autoencoder (the latent space shared by every GEM-3D model).

Its structure follows the published KL-f8 first stage, so the official weights load through
:mod:`napari_gem3d.models.official`; smaller configurations (1 input channel, f4) are ours.
Encoding returns the posterior **mean** (deterministic); ``posterior`` gives mean and log-variance.
The encoder and decoder are shared with the VQ first stage (:mod:`napari_gem3d.models.vq`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .layers import upsample_nearest2x


@dataclass(frozen=True)
class VAEConfig:
    kind: ClassVar[str] = "kl"  # the first-stage kind a bundle records (``vq``: models/vq.py)

    in_channels: int = 3
    out_channels: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 4
    embed_dim: int = 4
    mid_attention: bool = True

    def __post_init__(self):
        object.__setattr__(self, "ch_mult", tuple(self.ch_mult))
        for mult in self.ch_mult:
            if (self.ch * mult) % 32:
                raise ValueError(f"VAE width ch*mult = {self.ch * mult} must be a multiple of 32 (GroupNorm)")

    @property
    def downsampling(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ch_mult"] = list(self.ch_mult)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> VAEConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown VAE config keys {sorted(unknown)}")
        return cls(**d)


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, ch, eps=1e-6)


class _Res(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.shortcut = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.shortcut(x) + h


class _Attn(nn.Module):
    """Single-head self-attention over all pixels with 1x1 q/k/v/out projections."""

    def __init__(self, ch: int):
        super().__init__()
        self.norm = _norm(ch)
        self.q, self.k, self.v = (nn.Conv2d(ch, ch, 1) for _ in range(3))
        self.out = nn.Conv2d(ch, ch, 1)

    def forward(self, x):
        _, _, h, w = x.shape
        y = self.norm(x)
        q, k, v = (rearrange(proj(y), "n c h w -> n 1 (h w) c") for proj in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(q, k, v)
        return x + self.out(rearrange(a, "n 1 (h w) c -> n c h w", h=h, w=w))


class _Mid(nn.Module):
    def __init__(self, ch: int, attention: bool):
        super().__init__()
        self.res1 = _Res(ch, ch)
        self.attn = _Attn(ch) if attention else nn.Identity()
        self.res2 = _Res(ch, ch)

    def forward(self, x):
        return self.res2(self.attn(self.res1(x)))


class _Down(nn.Module):
    """Pad right/bottom by one, then 3x3 stride-2 convolution without padding."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class _Up(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(upsample_nearest2x(x))


class _Level(nn.Module):
    def __init__(self, blocks: list[nn.Module], resample: nn.Module | None):
        super().__init__()
        self.res = nn.ModuleList(blocks)
        self.resample = resample

    def forward(self, x):
        for block in self.res:
            x = block(x)
        return x if self.resample is None else self.resample(x)


class Encoder(nn.Module):
    """``double_z``: mean and log-variance channels (KL); the VQ encoder outputs ``z_channels`` only."""

    def __init__(self, cfg: VAEConfig, double_z: bool = True):
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult]
        self.stem = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        self.levels = nn.ModuleList()
        cin = cfg.ch
        for i, cout in enumerate(widths):
            blocks = [_Res(cin if j == 0 else cout, cout) for j in range(cfg.num_res_blocks)]
            last = i == len(widths) - 1
            self.levels.append(_Level(blocks, None if last else _Down(cout)))
            cin = cout
        self.mid = _Mid(cin, cfg.mid_attention)
        self.head_norm = _norm(cin)
        self.head_conv = nn.Conv2d(cin, (2 if double_z else 1) * cfg.z_channels, 3, padding=1)

    def forward(self, x):
        h = self.stem(x)
        for level in self.levels:
            h = level(h)
        return self.head_conv(F.silu(self.head_norm(self.mid(h))))


class Decoder(nn.Module):
    """Levels are stored full-resolution first (``levels.0``) and run deepest first."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult]
        self.stem = nn.Conv2d(cfg.z_channels, widths[-1], 3, padding=1)
        self.mid = _Mid(widths[-1], cfg.mid_attention)
        levels = []
        cin = widths[-1]
        for i in reversed(range(len(widths))):
            cout = widths[i]
            blocks = [_Res(cin if j == 0 else cout, cout) for j in range(cfg.num_res_blocks + 1)]
            levels.append(_Level(blocks, None if i == 0 else _Up(cout)))
            cin = cout
        self.levels = nn.ModuleList(reversed(levels))
        self.head_norm = _norm(cin)
        self.head_conv = nn.Conv2d(cin, cfg.out_channels, 3, padding=1)

    def forward(self, z):
        h = self.mid(self.stem(z))
        for level in reversed(self.levels):
            h = level(h)
        return self.head_conv(F.silu(self.head_norm(h)))


def check_images(x: torch.Tensor, config: VAEConfig, what: str) -> None:
    """A first stage's input check: (batch, in_channels, H, W) with H and W divisible by its downsampling."""
    f = config.downsampling
    if x.ndim != 4 or x.shape[1] != config.in_channels:
        raise ValueError(f"{what} expects (batch, {config.in_channels}, H, W), got {tuple(x.shape)}")
    if x.shape[-2] % f or x.shape[-1] % f:
        raise ValueError(f"image size {tuple(x.shape[-2:])} must be divisible by {f}")


class AutoencoderKL(nn.Module):
    """``encode(x) -> posterior mean``; ``decode(z)``; images in [-1, 1], latents unscaled."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.quant = nn.Conv2d(2 * cfg.z_channels, 2 * cfg.embed_dim, 1)
        self.post_quant = nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)
        self.decoder = Decoder(cfg)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance (clamped to [-30, 20]) of q(z|x)."""
        check_images(x, self.config, "VAE")
        mean, logvar = self.quant(self.encoder(x)).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The posterior mean, or with a (CPU) ``generator`` a posterior sample (``official_compat``)."""
        mean, logvar = self.posterior(x)
        if generator is None:
            return mean
        eps = torch.randn(mean.shape, generator=generator, dtype=torch.float32).to(mean.device, mean.dtype)
        return mean + torch.exp(0.5 * logvar) * eps

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant(z))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """Training pass: reconstruction from a posterior sample, plus mean and log-variance."""
        mean, logvar = self.posterior(x)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        z = mean + torch.exp(0.5 * logvar) * noise
        return self.decode(z), mean, logvar
