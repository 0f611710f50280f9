"""Official GEM-3D Lightning checkpoints -> a model bundle.

A ``.ckpt`` is a pickle. It is opened here and nowhere else, and only with
``torch.load(weights_only=True)``: a file that would need to run code while unpickling is
refused, and nothing in it runs. Every key of the checkpoint is accounted for:

* ``model.diffusion_model.*``  the UNet (mapped strictly onto ours);
* ``first_stage_model.*``      the KL-f8 VAE (frozen in GEM-3D, so any checkpoint carries it);
* ``cond_stage_model.*``       the same VAE again (volume models); checked to be identical;
* ``model_ema.*``              EMA copies of the UNet (stage 1 and slice models; unused by the
                               official inference, kept out of the bundle unless ``use_ema``);
* the 13 schedule buffers      checked against our schedule (a different schedule is refused).
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch

from ..diffusion.schedule import NoiseSchedule
from ..masks import LabelSpec, official_abdomen_spec, official_brain_spec
from ..volume import IntensityNorm
from .bundle import BundleConfig, ModelBundle, save_bundle
from .official import UNET_PREFIX, VAE_PREFIX, build_from_official, official_to_ours
from .unet import UNetConfig

SCHEDULE_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "logvar",
)
EMA_PREFIX = "model_ema."
COND_PREFIX = "cond_stage_model."

# Published constructor arguments of the official models (reference configs.json; brain and
# abdomen are identical). Used when the user does not pass their own.
_UNET_COMMON = {
    "image_size": 64,
    "out_channels": 4,
    "model_channels": 224,
    "num_res_blocks": 2,
    "num_head_channels": 32,
    "transformer_depth": 1,
}
OFFICIAL_PARAMS: dict[str, dict] = {
    "volume": {**_UNET_COMMON, "in_channels": 12, "attention_resolutions": [8, 4, 2], "channel_mult": [1, 2, 3, 4],
               "use_spatial_transformer": False},
    "base": {**_UNET_COMMON, "in_channels": 8, "attention_resolutions": [8, 4, 2], "channel_mult": [1, 2, 3, 4],
             "use_spatial_transformer": False},
    "slice": {**_UNET_COMMON, "in_channels": 4, "attention_resolutions": [4, 2, 1], "channel_mult": [1, 2, 4, 4],
              "use_spatial_transformer": True, "context_dim": 128},
    "vae": {"embed_dim": 4, "ddconfig": {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3,
                                         "out_ch": 3, "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2,
                                         "attn_resolutions": [], "dropout": 0.0}},
}


class ConversionError(ValueError):
    """The checkpoint cannot be converted (refused, wrong kind, or keys that do not fit)."""


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict of a Lightning ``.ckpt`` (or a bare state dict), loaded without running code."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=_is_zip(path))
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(
            f"{path}: refused: loading it would execute code stored in the file (weights_only load failed: "
            f"{first}). Nothing was run. Only open checkpoints you trust, and extract their state_dict "
            "with torch.save(ckpt['state_dict']) in a separate, trusted environment."
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise ConversionError(f"{path}: not a readable PyTorch checkpoint ({exc})") from None
    state = obj.get("state_dict", obj) if isinstance(obj, Mapping) else None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f"{path}: no tensor state_dict inside (expected a Lightning checkpoint)")
    return dict(state)


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == b"PK\x03\x04"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def split_checkpoint(state: Mapping[str, torch.Tensor], schedule: NoiseSchedule, source: str) -> dict:
    """Sort every key into UNet / VAE / EMA / schedule; anything else is an error listing the keys."""
    unet = {k[len(UNET_PREFIX):]: v for k, v in state.items() if k.startswith(UNET_PREFIX)}
    vae = {k[len(VAE_PREFIX):]: v for k, v in state.items() if k.startswith(VAE_PREFIX)}
    cond = {k[len(COND_PREFIX):]: v for k, v in state.items() if k.startswith(COND_PREFIX)}
    ema = {k[len(EMA_PREFIX):]: v for k, v in state.items() if k.startswith(EMA_PREFIX)}
    buffers = {k: v for k, v in state.items() if k in SCHEDULE_BUFFERS}
    known = len(unet) + len(vae) + len(cond) + len(ema) + len(buffers)
    if known != len(state):
        prefixes = (UNET_PREFIX, VAE_PREFIX, COND_PREFIX, EMA_PREFIX)
        unknown = sorted(k for k in state if not k.startswith(prefixes) and k not in SCHEDULE_BUFFERS)
        raise ConversionError(f"{source}: unexpected key(s) {unknown[:20]}")
    if cond:
        if set(cond) != set(vae):
            raise ConversionError(f"{source}: cond_stage_model keys differ from first_stage_model keys")
        differing = [k for k in cond if not _same_tensor(cond[k], vae[k])]
        if differing:
            raise ConversionError(f"{source}: cond_stage_model differs from first_stage_model at {differing[:5]}")
    if "alphas_cumprod" in buffers and buffers["alphas_cumprod"].device.type != "meta":
        ours = torch.as_tensor(schedule.alphas_cumprod, dtype=torch.float64)
        theirs = buffers["alphas_cumprod"].double()
        if theirs.shape != ours.shape or (theirs - ours).abs().max() > 1e-6:
            raise ConversionError(f"{source}: its noise schedule differs from {schedule.to_dict()}")
    return {"unet": unet, "vae": vae, "ema": ema}


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape:
        return False
    if a.device.type == "meta" or b.device.type == "meta":
        return True
    return bool(torch.equal(a, b))


def ema_weights(ema: Mapping[str, torch.Tensor], unet_keys) -> dict[str, torch.Tensor]:
    """Map ``model_ema`` buffers (dots removed) back onto UNet key names."""
    by_flat = {("diffusion_model" + k).replace(".", ""): k for k in unet_keys}
    out = {}
    for flat, tensor in ema.items():
        if flat in ("decay", "num_updates"):
            continue
        if flat not in by_flat:
            raise ConversionError(f"EMA buffer {flat!r} matches no UNet parameter")
        out[by_flat[flat]] = tensor
    return out


def convert_unet(kind: str, state: Mapping[str, torch.Tensor], params: Mapping, use_ema: bool = False):
    """Our UNet module (eval mode) from an unprefixed-split checkpoint; returns (module, config)."""
    unet = dict(state["unet"])
    if use_ema:
        if not state["ema"]:
            raise ConversionError("use_ema was requested but the checkpoint has no model_ema weights")
        unet.update(ema_weights(state["ema"], unet))
    model = build_from_official(kind, params, unet.keys())
    model.load_state_dict(official_to_ours(kind, model, unet), strict=True, assign=_on_meta(unet))
    return model.eval(), model.config


def convert_vae(vae_state: Mapping[str, torch.Tensor], params: Mapping):
    model = build_from_official("vae", params, vae_state.keys())
    model.load_state_dict(official_to_ours("vae", model, vae_state), strict=True, assign=_on_meta(vae_state))
    return model.eval()


def _on_meta(state: Mapping[str, torch.Tensor]) -> bool:
    return any(v.device.type == "meta" for v in state.values())


def convert_official(
    out: str | os.PathLike,
    *,
    volume: str | os.PathLike | None = None,
    base: str | os.PathLike | None = None,
    slice: str | os.PathLike | None = None,  # noqa: A002 - mirrors the CLI flag
    vae: str | os.PathLike | None = None,
    labels: str = "brain",
    params: Mapping[str, Mapping] | None = None,
    slice_ema: bool = False,
    overwrite: bool = False,
) -> Path:
    """Convert official checkpoints into a bundle folder at ``out`` and return its path."""
    if volume is None and base is None:
        raise ConversionError("give --volume (GEM-3D) and/or --base (mask-only) checkpoints")
    params = {**OFFICIAL_PARAMS, **(params or {})}
    schedule = NoiseSchedule()
    label_spec: LabelSpec = {"brain": official_brain_spec, "abdomen": official_abdomen_spec}[labels]()
    sources = {"volume": volume, "base": base, "slice": slice}
    unets, unet_cfgs, provenance = {}, {}, {"converted_from": {}}
    vae_state = None
    for kind, path in sources.items():
        if path is None:
            continue
        split = split_checkpoint(read_checkpoint(path), schedule, str(path))
        module, cfg = convert_unet(kind, split, params[kind], use_ema=(kind == "slice" and slice_ema))
        name = {"volume": "volume", "base": "baseline", "slice": "slice"}[kind]
        unets[name], unet_cfgs[name] = module, cfg
        provenance["converted_from"][name] = {"file": Path(path).name, "sha256": _sha256(Path(path))}
        if vae_state is None and split["vae"]:
            vae_state = split["vae"]
    if vae is not None:
        raw = read_checkpoint(vae)
        vae_state = {k[len(VAE_PREFIX):] if k.startswith(VAE_PREFIX) else k: v for k, v in raw.items()}
        vae_state = {k: v for k, v in vae_state.items() if not k.startswith("loss.")}
        provenance["converted_from"]["vae"] = {"file": Path(vae).name, "sha256": _sha256(Path(vae))}
    if vae_state is None:
        raise ConversionError("no VAE weights: none of the checkpoints has first_stage_model.* and --vae was not given")
    vae_model = convert_vae(vae_state, params["vae"])
    config = BundleConfig(
        vae=vae_model.config,
        unets=unet_cfgs,
        schedule=schedule,
        labels=label_spec,
        scale_factor=0.18215,
        mask_condition="vae",
        window=16,
        overlap=1,
        image_size=(512, 512),
        slice_axis="S",
        intensity=IntensityNorm("minmax"),
        name=f"gem3d-official-{labels}",
        description="Official GEM-3D weights converted by napari-gem3d (trained on nnU-Net-preprocessed data).",
        provenance=provenance,
    )
    return save_bundle(ModelBundle(config, vae_model, unets), out, overwrite=overwrite)


def unet_config_for(kind: str) -> UNetConfig:
    """Our config of an official-size UNet (handy for tests and benchmarks)."""
    from .official import unet_config_from_official

    return unet_config_from_official(kind, OFFICIAL_PARAMS[kind], temporal=kind != "slice")
