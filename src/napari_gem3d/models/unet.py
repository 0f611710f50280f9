"""The GEM-3D UNets: one skeleton, three uses.

* :class:`VolumeUNet` with ``temporal=True`` is the stage-2 pseudo-3D volume model: every
  spatial layer runs on frames folded into the batch and temporal convolutions / attention
  mix the frames of a window. ``temporal=False`` is the stage-1 2-D network (and the
  mask-only baseline with ``in_channels=8``).
* :class:`SliceUNet` is the position-conditioned informed-slice generator: the same skeleton
  with transformer blocks and a sinusoidal embedding of ``1000 * p``.

The layout (levels, skip stack, where attention sits) follows the published configuration of
the official models so that their weights load through :mod:`napari_gem3d.models.official`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .layers import TemporalConv, fold_frames, timestep_embedding, unet_norm, unfold_frames, zero_
from .unet_blocks import (
    BlockContext,
    Downsample,
    ResBlock,
    SelfAttention,
    SpatialTransformer,
    Stage,
    Stem,
    Upsample,
)


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a UNet. ``attention_resolutions`` are downsampling factors (1 = full res)."""

    in_channels: int = 12
    out_channels: int = 4
    model_channels: int = 224
    channel_mult: tuple[int, ...] = (1, 2, 3, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (2, 4, 8)
    num_head_channels: int = 32
    temporal: bool = False
    context_dim: int | None = None  # set => transformer blocks with a position context (slice model)
    transformer_depth: int = 1
    dropout: float = 0.0
    # multi-level mask injection (Lesion-DDPM): the mask condition, input channels
    # [out_channels, out_channels + mask_injection), is area-pooled to every stage's resolution and
    # added through a zero-initialised 1x1 convolution after each stage; 0 = off (the official models)
    mask_injection: int = 0
    # correlation between neighbouring frames of the noise this network was trained to remove (AR(1) along
    # the frames, training's diffusion.slice_noise_correlation); 0 = independent frames, as in the paper
    noise_correlation: float = 0.0
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "channel_mult", tuple(self.channel_mult))
        object.__setattr__(self, "attention_resolutions", tuple(self.attention_resolutions))
        for mult in self.channel_mult:
            if (self.model_channels * mult) % 32:
                raise ValueError(
                    f"model_channels*mult = {self.model_channels * mult} is not a multiple of 32 "
                    "(GroupNorm uses 32 groups): choose model_channels divisible by 32"
                )
        if self.temporal and self.context_dim is not None:
            raise ValueError("temporal layers belong to the volume model; the slice model has none")
        if self.mask_injection and (self.context_dim is not None or self.mask_injection < 0
                                    or self.out_channels + self.mask_injection > self.in_channels):
            raise ValueError(
                f"mask_injection={self.mask_injection} needs a mask-conditioned UNet with the mask in input channels "
                f"[{self.out_channels}, {self.out_channels + self.mask_injection}) of {self.in_channels} "
                "(volume or baseline model; the slice model has no mask)"
            )

    @property
    def downsampling(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channel_mult"] = list(self.channel_mult)
        d["attention_resolutions"] = list(self.attention_resolutions)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> UNetConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown UNet config keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


class _UNetCore(nn.Module):
    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.config = cfg
        mc, temporal = cfg.model_channels, cfg.temporal
        emb_dim = 4 * mc
        self.time_mlp = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        def attention(ch: int) -> nn.Module:
            if cfg.context_dim is not None:
                return SpatialTransformer(ch, cfg.num_head_channels, cfg.context_dim, cfg.transformer_depth)
            return SelfAttention(ch, cfg.num_head_channels, temporal)

        self.down = nn.ModuleList([Stage(Stem(cfg.in_channels, mc, temporal))])
        skip_channels = [mc]
        ch, ds = mc, 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                blocks = [ResBlock(ch, mc * mult, emb_dim, temporal, cfg.dropout)]
                ch = mc * mult
                if ds in cfg.attention_resolutions:
                    blocks.append(attention(ch))
                self.down.append(Stage(*blocks))
                skip_channels.append(ch)
            if level != len(cfg.channel_mult) - 1:
                self.down.append(Stage(Downsample(ch, temporal)))
                skip_channels.append(ch)
                ds *= 2
        stage_channels = [*skip_channels, ch]  # output channels of every stage in call order: down, middle, up

        self.mid = Stage(
            ResBlock(ch, ch, emb_dim, temporal, cfg.dropout),
            attention(ch),
            ResBlock(ch, ch, emb_dim, temporal, cfg.dropout),
        )

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                blocks = [ResBlock(ch + skip_channels.pop(), mc * mult, emb_dim, temporal, cfg.dropout)]
                ch = mc * mult
                if ds in cfg.attention_resolutions:
                    blocks.append(attention(ch))
                if level and i == cfg.num_res_blocks:
                    blocks.append(Upsample(ch, temporal))
                    ds //= 2
                self.up.append(Stage(*blocks))
                stage_channels.append(ch)

        self.out_norm = unet_norm(ch)
        self.out_conv = zero_(nn.Conv2d(ch, cfg.out_channels, 3, padding=1))
        self.out_tconv = TemporalConv(cfg.out_channels) if temporal else None
        self.inject = None
        if cfg.mask_injection:
            self.inject = nn.ModuleList(zero_(nn.Conv2d(cfg.mask_injection, c, 1)) for c in stage_channels)

    def run(self, x: torch.Tensor, t: torch.Tensor, ctx: BlockContext) -> torch.Tensor:
        """``x`` is a 2-D batch ``(n, c, h, w)``; ``t`` has one timestep per image."""
        factor = self.config.downsampling
        if x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(
                f"latent size {tuple(x.shape[-2:])} must be divisible by {factor} "
                f"(the UNet downsamples {len(self.config.channel_mult) - 1} times)"
            )
        emb = self.time_mlp(timestep_embedding(t, self.config.model_channels, dtype=_embedding_dtype(x)).to(x.dtype))
        inject = self._mask_injector(x)
        skips = []
        h = x
        for stage in self.down:
            h = inject(stage(h, emb, ctx))
            skips.append(h)
        h = inject(self.mid(h, emb, ctx))
        for stage in self.up:
            h = inject(stage(torch.cat([h, skips.pop()], dim=1), emb, ctx))
        h = self.out_conv(F.silu(self.out_norm(h)))
        if self.out_tconv is not None:
            h = self.out_tconv(h, ctx.num_frames)
        return h

    def _mask_injector(self, x: torch.Tensor):
        """``h -> h + conv_k(mask pooled to h's size)`` for the k-th stage output (identity when off)."""
        if self.inject is None:
            return lambda h: h
        lo = self.config.out_channels
        mask = x[:, lo : lo + self.config.mask_injection]
        convs, pooled = iter(self.inject), {}

        def add(h: torch.Tensor) -> torch.Tensor:
            size = tuple(h.shape[-2:])
            if size not in pooled:
                pooled[size] = F.adaptive_avg_pool2d(mask, size)
            return h + next(convs)(pooled[size])

        return add


class VolumeUNet(_UNetCore):
    """Window model: ``forward(x, timesteps)`` with ``x`` ``(windows, frames, channels, H, W)``.

    ``timesteps`` is ``(windows,)`` (one noise level per window, as in sampling and stage-2
    training) or ``(windows, frames)`` (stage-1 training draws one per slice; only valid
    without temporal layers). Returns ``(windows, frames, out_channels, H, W)``.
    """

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(f"expected x of shape (windows, frames, channels, H, W), got {tuple(x.shape)}")
        b, f = x.shape[:2]
        if x.shape[2] != self.config.in_channels:
            raise ValueError(f"model expects {self.config.in_channels} input channels, got {x.shape[2]}")
        timesteps = torch.as_tensor(timesteps, device=x.device)
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(b)
        if timesteps.shape == (b,):
            t = timesteps.repeat_interleave(f)
        elif timesteps.shape == (b, f):
            if self.config.temporal:
                raise ValueError("temporal layers need one timestep per window, got one per frame")
            t = timesteps.reshape(-1)
        else:
            raise ValueError(f"timesteps must be ({b},) or ({b}, {f}), got {tuple(timesteps.shape)}")
        out = self.run(fold_frames(x), t, BlockContext(num_frames=f))
        return unfold_frames(out, f)

    def temporal_parameters(self):
        """The stage-2 trainable set: every parameter of a temporal layer."""
        return [p for n, p in self.named_parameters() if is_temporal_name(n)]


def is_temporal_name(name: str) -> bool:
    """True for parameters of the pseudo-3D layers (temporal convs and temporal attention)."""
    return "tconv" in name or name.split(".")[-2] in ("qkv_t", "proj_t")


class SliceUNet(_UNetCore):
    """Informed-slice model: ``forward(x, timesteps, position)``, position p in [0, 1]."""

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"expected x of shape (batch, channels, H, W), got {tuple(x.shape)}")
        b = x.shape[0]
        timesteps = torch.as_tensor(timesteps, device=x.device).expand(b)
        position = torch.as_tensor(position, device=x.device).expand(b)
        context = position_context(position, self.config.context_dim, dtype=_embedding_dtype(x))
        return self.run(x, timesteps, BlockContext(position=context.to(x.dtype)))


def position_context(position: torch.Tensor, dim: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The slice model's condition: sinusoidal embedding of ``1000 * p`` (``dim`` wide)."""
    return timestep_embedding(1000.0 * position.to(dtype), dim, dtype=dtype)


def _embedding_dtype(x: torch.Tensor) -> torch.dtype:
    """Sinusoids are built in float32, or float64 for a float64 model (reference runs)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def build_unet(cfg: UNetConfig) -> nn.Module:
    return SliceUNet(cfg) if cfg.context_dim is not None else VolumeUNet(cfg)
