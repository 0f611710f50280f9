"""Load weights stored under the official GEM-3D key names into our modules.

The mapping is derived from *our* module tree: for every parameter we know which official
tensor(s) hold it and how to reshape them. That gives a strict, complete check in both
directions: a missing official key or an official key we do not account for is an error
that lists the keys. Key names and shapes come from the published key listings
(``tests/data/gem3d_official/keys_full_*.json``); no official code is used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from .unet import SliceUNet, UNetConfig, VolumeUNet, build_unet
from .unet_blocks import Downsample, ResBlock, SelfAttention, SpatialTransformer, Stem, Upsample
from .vae import AutoencoderKL, VAEConfig

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
KINDS = ("volume", "base", "slice", "vae")


class KeyMismatchError(KeyError):
    """Official state dict does not match the architecture: lists the missing/unexpected keys."""

    def __init__(self, missing: list[str], unexpected: list[str], shape_errors: list[str] | None = None):
        self.missing, self.unexpected, self.shape_errors = missing, unexpected, shape_errors or []
        parts = []
        if missing:
            more = " ..." if len(missing) > 20 else ""
            parts.append(f"{len(missing)} missing key(s): {', '.join(missing[:20])}{more}")
        if unexpected:
            parts.append(
                f"{len(unexpected)} unexpected key(s): {', '.join(unexpected[:20])}"
                f"{' ...' if len(unexpected) > 20 else ''}"
            )
        if self.shape_errors:
            parts.append("shape mismatch: " + "; ".join(self.shape_errors[:20]))
        super().__init__("; ".join(parts))

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


@dataclass(frozen=True)
class Source:
    """Where one of our parameters comes from: official key(s) and how to combine them."""

    keys: tuple[str, ...]
    combine: Callable[[list[torch.Tensor]], torch.Tensor]


def _same(ts: list[torch.Tensor]) -> torch.Tensor:
    return ts[0]


def _squeeze_conv1x1(ts: list[torch.Tensor]) -> torch.Tensor:
    t = ts[0]
    return t.reshape(t.shape[0], t.shape[1]) if t.ndim == 3 else t


def _fuse_heads(num_heads: int) -> Callable[[list[torch.Tensor]], torch.Tensor]:
    """Concatenate separate q, k, v projections into our per-head ``[q k v]`` interleaved layout."""

    def fuse(ts: list[torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack(ts)  # (3, c_out, c_in)
        return rearrange(stacked, "three (h d) c -> (h three d) c", h=num_heads)

    return fuse


# --- UNet -----------------------------------------------------------------------------------------

_RES_LEAVES = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "tconv1.conv": "in_layers_tem.temporal_conv",
    "emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "tconv2.conv": "out_layers_tem.temporal_conv",
    "skip": "skip_connection",
}
_ATTN_LEAVES = {"norm": "norm", "qkv": "qkv", "proj": "proj_out", "qkv_t": "qkv_tem", "proj_t": "proj_out_tem"}
_TRANSFORMER_BLOCK_LEAVES = {
    "norm1": "norm1",
    "attn_out": "attn1.to_out.0",
    "pos_value": "attn2.to_v",
    "pos_out": "attn2.to_out.0",
    "norm3": "norm3",
    "ff_in": "ff.net.0.proj",
    "ff_out": "ff.net.2",
}
# Official tensors with provably no effect on the output (the cross-attention's scores are
# uniform because all keys are one context vector): accounted for, not loaded.
_TRANSFORMER_DEAD = ("attn2.to_q.weight", "attn2.to_k.weight", "norm2.weight", "norm2.bias")


def _leaf_sources(
    module: nn.Module, ours: str, official: str, leaves: Mapping[str, str], combine=_same
) -> Iterator[tuple[str, Source]]:
    for name, _ in module.named_parameters():
        sub, param = name.rsplit(".", 1)
        if sub in leaves:
            yield f"{ours}.{name}", Source((f"{official}.{leaves[sub]}.{param}",), combine)


def _block_sources(block: nn.Module, ours: str, official: str, side: str) -> Iterator[tuple[str, Source]]:
    if isinstance(block, ResBlock):
        yield from _leaf_sources(block, ours, official, _RES_LEAVES)
    elif isinstance(block, SelfAttention):
        yield from _leaf_sources(block, ours, official, _ATTN_LEAVES, _squeeze_conv1x1)
    elif isinstance(block, SpatialTransformer):
        yield from _leaf_sources(block, ours, official, {"norm": "norm", "proj_in": "proj_in", "proj_out": "proj_out"})
        for k, tb in enumerate(block.blocks):
            o = f"{official}.transformer_blocks.{k}"
            yield from _leaf_sources(tb, f"{ours}.blocks.{k}", o, _TRANSFORMER_BLOCK_LEAVES)
            keys = tuple(f"{o}.attn1.{p}.weight" for p in ("to_q", "to_k", "to_v"))
            yield f"{ours}.blocks.{k}.qkv.weight", Source(keys, _fuse_heads(tb.num_heads))
    elif isinstance(block, Downsample):
        yield from _leaf_sources(block, ours, official, {"conv": "op", "tconv.conv": "op_tem.temporal_conv"})
    elif isinstance(block, Upsample):
        yield from _leaf_sources(block, ours, official, {"conv": "conv", "tconv.conv": "conv_tem.temporal_conv"})
    else:  # pragma: no cover - every block type is listed above
        raise TypeError(f"no official mapping for {type(block).__name__} at {ours} ({side})")


def unet_sources(model: VolumeUNet | SliceUNet) -> dict[str, Source]:
    """Our parameter name -> official UNet key(s) (without the checkpoint prefix)."""
    out: dict[str, Source] = {}
    top = {"time_mlp.0": "time_embed.0", "time_mlp.2": "time_embed.2", "out_norm": "out.0", "out_conv": "out.2"}
    top["out_tconv.conv"] = "out_tem.temporal_conv"
    for name, _ in model.named_parameters():
        sub, param = name.rsplit(".", 1)
        if sub in top:
            out[name] = Source((f"{top[sub]}.{param}",), _same)
    for i, stage in enumerate(model.down):
        for j, block in enumerate(stage):
            if isinstance(block, Stem):
                leaves = {"conv": f"input_blocks.{i}.0", "tconv.conv": f"input_blocks.{i}.1.temporal_conv"}
                for name, _ in block.named_parameters():
                    sub, param = name.rsplit(".", 1)
                    out[f"down.{i}.{j}.{name}"] = Source((f"{leaves[sub]}.{param}",), _same)
            else:
                out.update(_block_sources(block, f"down.{i}.{j}", f"input_blocks.{i}.{j}", "down"))
    for j, block in enumerate(model.mid):
        out.update(_block_sources(block, f"mid.{j}", f"middle_block.{j}", "mid"))
    for i, stage in enumerate(model.up):
        for j, block in enumerate(stage):
            out.update(_block_sources(block, f"up.{i}.{j}", f"output_blocks.{i}.{j}", "up"))
    return out


def unet_dead_keys(model: nn.Module) -> set[str]:
    """Official UNet keys that exist in checkpoints but cannot influence the output."""
    dead = set()
    for stage_name, stages in (("input_blocks", model.down), ("output_blocks", model.up)):
        for i, stage in enumerate(stages):
            for j, block in enumerate(stage):
                if isinstance(block, SpatialTransformer):
                    for k in range(len(block.blocks)):
                        dead.update(f"{stage_name}.{i}.{j}.transformer_blocks.{k}.{d}" for d in _TRANSFORMER_DEAD)
    for j, block in enumerate(model.mid):
        if isinstance(block, SpatialTransformer):
            for k in range(len(block.blocks)):
                dead.update(f"middle_block.{j}.transformer_blocks.{k}.{d}" for d in _TRANSFORMER_DEAD)
    return dead


# --- VAE ------------------------------------------------------------------------------------------

_VAE_RES = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "shortcut": "nin_shortcut"}
_VAE_ATTN = {"norm": "norm", "q": "q", "k": "k", "v": "v", "out": "proj_out"}


def vae_sources(model: AutoencoderKL) -> dict[str, Source]:
    """Our VAE parameter name -> official KL autoencoder key (without prefix)."""
    rules = {"quant": "quant_conv", "post_quant": "post_quant_conv"}
    for part, level_name, resample in (("encoder", "down", "downsample"), ("decoder", "up", "upsample")):
        rules[f"{part}.stem"] = f"{part}.conv_in"
        rules[f"{part}.head_norm"] = f"{part}.norm_out"
        rules[f"{part}.head_conv"] = f"{part}.conv_out"
        for mid_ours, mid_off in (("res1", "block_1"), ("res2", "block_2")):
            for a, b in _VAE_RES.items():
                rules[f"{part}.mid.{mid_ours}.{a}"] = f"{part}.mid.{mid_off}.{b}"
        for a, b in _VAE_ATTN.items():
            rules[f"{part}.mid.attn.{a}"] = f"{part}.mid.attn_1.{b}"
        for i, level in enumerate(getattr(model, part).levels):
            for j in range(len(level.res)):
                for a, b in _VAE_RES.items():
                    rules[f"{part}.levels.{i}.res.{j}.{a}"] = f"{part}.{level_name}.{i}.block.{j}.{b}"
            rules[f"{part}.levels.{i}.resample.conv"] = f"{part}.{level_name}.{i}.{resample}.conv"
    out = {}
    for name, _ in model.named_parameters():
        sub, param = name.rsplit(".", 1)
        out[name] = Source((f"{rules[sub]}.{param}",), _same)
    return out


# --- configs from the official constructor arguments --------------------------------------------


def unet_config_from_official(kind: str, params: Mapping, temporal: bool) -> UNetConfig:
    p = dict(params)
    unsupported = {
        "use_scale_shift_norm": False,
        "resblock_updown": False,
        "use_new_attention_order": False,
        "num_classes": None,
    }
    for key, ok in unsupported.items():
        if p.get(key, ok) != ok:
            raise ValueError(f"official parameter {key}={p[key]!r} is not supported (only {ok!r})")
    if p.get("num_head_channels", -1) in (-1, None):
        raise ValueError("official configs with num_heads instead of num_head_channels are not supported")
    spatial_transformer = bool(p.get("use_spatial_transformer", False))
    if kind == "slice" and not spatial_transformer:
        raise ValueError("kind 'slice' needs use_spatial_transformer=True in the official params")
    if kind != "slice" and spatial_transformer:
        raise ValueError(f"kind {kind!r} is a concat model; these params describe a cross-attention UNet")
    return UNetConfig(
        in_channels=int(p["in_channels"]),
        out_channels=int(p["out_channels"]),
        model_channels=int(p["model_channels"]),
        channel_mult=tuple(p["channel_mult"]),
        num_res_blocks=int(p["num_res_blocks"]),
        attention_resolutions=tuple(p["attention_resolutions"]),
        num_head_channels=int(p["num_head_channels"]),
        temporal=temporal,
        context_dim=int(p["context_dim"]) if spatial_transformer else None,
        transformer_depth=int(p.get("transformer_depth", 1)),
        dropout=float(p.get("dropout", 0.0)),
    )


def vae_config_from_official(params: Mapping) -> VAEConfig:
    dd = params.get("ddconfig", params)
    if not dd.get("double_z", True):
        raise ValueError("only double_z=True KL autoencoders are supported")
    if list(dd.get("attn_resolutions", [])):
        raise ValueError("KL autoencoders with attention outside the mid block are not supported")
    embed_dim = int(params.get("embed_dim", dd["z_channels"]))
    return VAEConfig(
        in_channels=int(dd["in_channels"]),
        out_channels=int(dd["out_ch"]),
        ch=int(dd["ch"]),
        ch_mult=tuple(dd["ch_mult"]),
        num_res_blocks=int(dd["num_res_blocks"]),
        z_channels=int(dd["z_channels"]),
        embed_dim=embed_dim,
    )


# --- loading --------------------------------------------------------------------------------------


def assemble(
    sources: Mapping[str, Source],
    official: Mapping[str, torch.Tensor],
    expected_shapes: Mapping[str, torch.Size],
    ignorable: set[str] = frozenset(),
) -> dict[str, torch.Tensor]:
    """Build our state dict from official tensors; strict in both directions."""
    used: set[str] = set()
    missing, shape_errors = [], []
    ours: dict[str, torch.Tensor] = {}
    for name, src in sources.items():
        absent = [k for k in src.keys if k not in official]
        if absent:
            missing.extend(absent)
            continue
        used.update(src.keys)
        tensor = src.combine([official[k] for k in src.keys])
        if tuple(tensor.shape) != tuple(expected_shapes[name]):
            shape_errors.append(
                f"{'+'.join(src.keys)} has shape {tuple(tensor.shape)}, expected {tuple(expected_shapes[name])}"
            )
            continue
        ours[name] = tensor
    unexpected = sorted(set(official) - used - set(ignorable))
    if missing or unexpected or shape_errors:
        raise KeyMismatchError(sorted(missing), unexpected, shape_errors)
    return ours


def _strip(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    stripped = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not stripped:
        raise KeyMismatchError([f"{prefix}*"], sorted(state_dict)[:20])
    foreign = [k for k in state_dict if not k.startswith(prefix)]
    if foreign:
        raise KeyMismatchError([], foreign)
    return stripped


def has_temporal_keys(keys) -> bool:
    return any("temporal_conv" in k or "qkv_tem" in k for k in keys)


def build_from_official(kind: str, params: Mapping, keys) -> nn.Module:
    """Instantiate our (uninitialised) module for an official ``kind`` + constructor params."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    if kind == "vae":
        return AutoencoderKL(vae_config_from_official(params))
    temporal = kind != "slice" and has_temporal_keys(keys)
    return build_unet(unet_config_from_official(kind, params, temporal))


def official_to_ours(kind: str, model: nn.Module, official: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an unprefixed official state dict onto ``model``'s parameter names."""
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    if kind == "vae":
        return assemble(vae_sources(model), official, shapes)
    return assemble(unet_sources(model), official, shapes, unet_dead_keys(model))


def from_official(kind: str, state_dict: Mapping[str, torch.Tensor], params: Mapping) -> nn.Module:
    """Our module for an official ``kind`` in {"volume", "base", "slice", "vae"}, in eval mode.

    ``state_dict`` carries the checkpoint prefixes (``model.diffusion_model.`` for UNets,
    ``first_stage_model.`` for the VAE); ``params`` is the official constructor's params dict.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    prefix = VAE_PREFIX if kind == "vae" else UNET_PREFIX
    official = _strip(state_dict, prefix)
    model = build_from_official(kind, params, official.keys())
    model.load_state_dict(official_to_ours(kind, model, official), strict=True)
    return model.eval()
