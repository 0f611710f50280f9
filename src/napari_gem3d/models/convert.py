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

import contextlib
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from ..diffusion.schedule import NoiseSchedule
from ..files import file_sha256
from ..masks import LabelSpec, official_abdomen_spec, official_brain_spec
from ..volume import IntensityNorm
from .bundle import BundleConfig, ModelBundle, save_bundle
from .card import ModelCard
from .official import UNET_PREFIX, VAE_PREFIX, KeyMismatchError, build_from_official, official_to_ours
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
    kind = _file_kind(path)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=kind == "zip")
    except Exception as exc:  # noqa: BLE001 - every failure becomes one clear refusal
        raise ConversionError(_load_failure(path, kind, exc)) from None
    state = obj.get("state_dict", obj) if isinstance(obj, Mapping) else None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f"{path}: no tensor state_dict inside (expected a Lightning checkpoint)")
    return dict(state)


def _file_kind(path: Path) -> str:
    """``"zip"`` (torch.save), ``"pickle"`` (legacy torch.save / pickle) or ``"other"``, from the header."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head == b"PK\x03\x04":
        return "zip"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle PROTO opcode
        return "pickle"
    return "other"


def _load_failure(path: Path, kind: str, exc: Exception) -> str:
    """One line saying why ``torch.load(weights_only=True)`` refused ``path`` (nothing was run)."""
    text = str(exc)
    forbidden = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) (\S+)", text)
    if forbidden:
        return (
            f"{path}: refused: unpickling it would import and call {forbidden.group(1)}, i.e. run code "
            "stored in the file; nothing was run (weights_only=True). Only convert checkpoints you trust: "
            "extract their state_dict with torch.save(ckpt['state_dict'], ...) in a separate, trusted "
            "environment."
        )
    if kind == "other":
        return (
            f"{path}: refused: not a PyTorch checkpoint (neither a torch.save zip archive nor a pickle "
            "with a protocol header); nothing was run"
        )
    detail = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    reason = detail.group(1).strip() if detail else (text.strip().splitlines() or [type(exc).__name__])[0]
    reason = reason.split(". ")[0].rstrip(".")  # torch appends paragraphs of advice
    return (
        f"{path}: refused: not loadable with weights_only=True ({reason}); nothing was run. It may be "
        "corrupt, or need code to unpickle; re-save its state_dict with torch.save in a trusted environment."
    )



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
            only = sorted(set(cond) ^ set(vae))
            raise ConversionError(
                f"{source}: cond_stage_model and first_stage_model must hold the same VAE; "
            "keys in only one: "
                f"{', '.join(only[:20])}"
            )
        differing = [k for k in cond if not _same_tensor(cond[k], vae[k])]
        if differing:
            raise ConversionError(f"{source}: cond_stage_model differs from first_stage_model at {differing[:5]}")
    if "alphas_cumprod" in buffers and buffers["alphas_cumprod"].device.type != "meta":
        ours = torch.tensor(schedule.alphas_cumprod, dtype=torch.float64)  # copies the read-only array
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


def ema_weights(ema: Mapping[str, torch.Tensor], unet: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map ``model_ema`` buffers (dots removed) back onto UNet key names; strict in both directions."""
    by_flat = {("diffusion_model" + k).replace(".", ""): k for k in unet}
    out, unknown = {}, []
    for flat, tensor in ema.items():
        if flat in ("decay", "num_updates"):
            continue
        if flat not in by_flat:
            unknown.append(flat)
            continue
        out[by_flat[flat]] = tensor
    if unknown:
        names = ", ".join(sorted(unknown)[:20])
        raise ConversionError(f"{len(unknown)} EMA buffer(s) match no UNet parameter: {names}")
    missing = sorted(set(unet) - set(out))
    if missing:
        names = ", ".join(missing[:20])
        raise ConversionError(f"model_ema has no copy of {len(missing)} UNet parameter(s): {names}")
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(unet[k].shape)}" for k, v in out.items()
             if v.shape != unet[k].shape]
    if wrong:
        raise ConversionError(f"EMA shapes differ from the UNet's: {'; '.join(wrong[:20])}")
    return out


def convert_unet(kind: str, state: Mapping[str, torch.Tensor], params: Mapping, use_ema: bool = False):
    """Our UNet module (eval mode) from an unprefixed-split checkpoint; returns (module, config).

    EMA weights, when present, are always checked to map onto the UNet; they are used only with
    ``use_ema``. A state on the meta device builds the module on meta too (shape checks only).
    """
    unet = dict(state["unet"])
    ema = ema_weights(state["ema"], unet) if state["ema"] else {}
    if use_ema:
        if not ema:
            raise ConversionError("use_ema was requested but the checkpoint has no model_ema weights")
        unet.update(ema)
    meta = _on_meta(unet)
    with _device_if(meta):
        model = build_from_official(kind, params, unet.keys())
    model.load_state_dict(official_to_ours(kind, model, unet), strict=True, assign=meta)
    return model.eval(), model.config


def convert_vae(vae_state: Mapping[str, torch.Tensor], params: Mapping):
    meta = _on_meta(vae_state)
    with _device_if(meta):
        model = build_from_official("vae", params, vae_state.keys())
    model.load_state_dict(official_to_ours("vae", model, vae_state), strict=True, assign=meta)
    return model.eval()


def _device_if(meta: bool):
    """Build on the meta device for meta states: no memory, no random initialisation."""
    return torch.device("meta") if meta else contextlib.nullcontext()


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
    """Convert official checkpoints into a bundle folder at ``out`` and return its path.

    ``params`` overrides the published constructor params per kind ("volume", "base", "slice",
    "vae"). The in-plane size is the UNets' latent ``image_size`` times the VAE downsampling
    (64 x 8 = 512 for the published models). Nothing is written at ``out`` unless all succeeds.
    """
    if volume is None and base is None:
        raise ConversionError("give --volume (GEM-3D) and/or --base (mask-only) checkpoints")
    from ..outputs import check_output_folder

    # the bundle folder replaces ``out`` whole: it must hold none of the checkpoints it is made from
    check_output_folder(out, inputs=[("--volume", volume), ("--base", base), ("--slice", slice), ("--vae", vae)])
    if Path(out).exists() and not overwrite:
        raise ConversionError(f"{out} exists; pass --overwrite (overwrite=True) to replace it")
    if params is not None and (
        not isinstance(params, Mapping) or set(params) - set(OFFICIAL_PARAMS)
        or not all(isinstance(v, Mapping) for v in params.values())
    ):
        raise ConversionError(
            f"params must map some of {sorted(OFFICIAL_PARAMS)} to the official constructor params (a dict "
            f"each), got {sorted(params) if isinstance(params, Mapping) else type(params).__name__}"
        )
    params = {**OFFICIAL_PARAMS, **(params or {})}
    schedule = NoiseSchedule()
    label_spec: LabelSpec = {"brain": official_brain_spec, "abdomen": official_abdomen_spec}[labels]()
    sources = {"volume": volume, "base": base, "slice": slice}
    unets, unet_cfgs, provenance = {}, {}, {"converted_from": {}}
    vae_state, vae_from, latent_sizes = None, None, {}
    for kind, path in sources.items():
        if path is None:
            continue
        split = split_checkpoint(read_checkpoint(path), schedule, str(path))
        with _naming(path):
            module, cfg = convert_unet(kind, split, params[kind], use_ema=(kind == "slice" and slice_ema))
        name = {"volume": "volume", "base": "baseline", "slice": "slice"}[kind]
        unets[name], unet_cfgs[name] = module, cfg
        latent_sizes[name] = int(params[kind].get("image_size", OFFICIAL_PARAMS[kind]["image_size"]))
        provenance["converted_from"][name] = {"file": Path(path).name, "sha256": file_sha256(Path(path))}
        if split["vae"] and vae is None:
            if vae_state is None:
                vae_state, vae_from = split["vae"], path
            else:
                _check_same_vae(vae_state, vae_from, split["vae"], path)
    if vae is not None:
        raw = read_checkpoint(vae)
        vae_state = {k[len(VAE_PREFIX):] if k.startswith(VAE_PREFIX) else k: v for k, v in raw.items()}
        vae_state = {k: v for k, v in vae_state.items() if not k.startswith("loss.")}
        vae_from = vae
        provenance["converted_from"]["vae"] = {"file": Path(vae).name, "sha256": file_sha256(Path(vae))}
    if vae_state is None:
        raise ConversionError("no VAE weights: none of the checkpoints has first_stage_model.* and --vae was not given")
    with _naming(vae_from):
        vae_model = convert_vae(vae_state, params["vae"])
    if len(set(latent_sizes.values())) != 1:
        raise ConversionError(f"the UNets were trained on different latent sizes {latent_sizes} (image_size)")
    size = next(iter(latent_sizes.values())) * vae_model.config.downsampling
    config = BundleConfig(
        vae=vae_model.config,
        unets=unet_cfgs,
        schedule=schedule,
        labels=label_spec,
        scale_factor=0.18215,
        mask_condition="vae",
        window=16,
        overlap=1,
        image_size=(size, size),
        slice_axis="S",
        intensity=IntensityNorm("minmax"),
        name=f"gem3d-official-{labels}",
        description="Official GEM-3D weights converted by napari-gem3d (trained on nnU-Net-preprocessed data).",
        provenance=provenance,
        card=official_card(labels),
    )
    return save_bundle(ModelBundle(config, vae_model, unets), out, overwrite=overwrite)


def official_card(labels: str) -> ModelCard:
    """What is published about the official models' training data (reference-gem3d.md §2); geometry left
    unknown where the paper and repository do not state it."""
    common = {
        "intended_use": "research on generative enhancement of 3-D medical images (GEM-3D, arXiv 2403.12852)",
        "limits": ["trained on nnU-Net-preprocessed arrays: per-volume min-max intensities, the original "
                   "intensity scale is not restored by the official code",
                   "converted weights: generation quality is that of the published checkpoints"],
    }
    if labels == "brain":
        return ModelCard(
            modality="MR", contrast="FLAIR", body_region="brain", tissue_labels=(1,), lesion_labels=(2, 3, 4),
            background_labels=(0,), intensity_units="arbitrary (MR, z-scored by nnU-Net)",
            spacing_mm={"in_plane": (1.0, 1.0), "slice": (1.0, 1.0)}, skull_stripped=True,
            training_data="MSD Task01 BrainTumour (BraTS), FLAIR only, 1 mm isotropic, skull-stripped", **common)
    return ModelCard(
        modality="CT", contrast="abdominal CT", body_region="abdomen", tissue_labels=(1, 2, 3, 4),
        background_labels=(0,), intensity_units="HU",
        training_data="AbdomenCT-1K (liver, kidney, spleen, pancreas), cropped to drop empty slices", **common)


@contextlib.contextmanager
def _naming(path):
    """Prefix key-mapping errors with the checkpoint they come from."""
    try:
        yield
    except (KeyMismatchError, ConversionError, ValueError) as exc:
        raise ConversionError(f"{path}: {exc}") from exc


def _check_same_vae(a: Mapping[str, torch.Tensor], a_from, b: Mapping[str, torch.Tensor], b_from) -> None:
    differing = sorted(k for k in set(a) | set(b) if k not in a or k not in b or not _same_tensor(a[k], b[k]))
    if differing:
        raise ConversionError(
            f"{a_from} and {b_from} carry different first_stage_model (VAE) weights "
            f"({', '.join(differing[:5])}{' ...' if len(differing) > 5 else ''}); a bundle has one VAE: "
            "pass --vae to choose it"
        )


def unet_config_for(kind: str) -> UNetConfig:
    """Our config of an official-size UNet (handy for tests and benchmarks)."""
    from .official import unet_config_from_official

    return unet_config_from_official(kind, OFFICIAL_PARAMS[kind], temporal=kind != "slice")
