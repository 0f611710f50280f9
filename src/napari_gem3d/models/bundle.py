"""Model bundles: a folder of safetensors weights plus one JSON config.

Layout::

    my_model/
      config.json          format, version, latent space, schedule, window, labels, grid, provenance
      vae.safetensors      required: the first stage, KL (default) or VQ autoencoder (``components.vae.kind``)
      volume.safetensors   GEM-3D volume UNet (mask + informed slice)      } at least one
      baseline.safetensors mask-only volume UNet (Make-A-Volume baseline) }
      slice.safetensors    optional position-conditioned informed-slice generator

``load_bundle`` validates everything and names the file and the problem on any failure.
``save_bundle`` writes to a temporary folder and renames it into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ..diffusion.schedule import NoiseSchedule
from ..masks import LabelSpec
from ..volume import IntensityNorm
from .card import ModelCard
from .first_stage import FirstStage, build_first_stage, first_stage_config
from .latent import MASK_CONDITIONS, LatentCodec, mask_condition_channels, unet_input_channels
from .unet import SliceUNet, UNetConfig, VolumeUNet, build_unet
from .vae import VAEConfig

FORMAT = "gem3d-bundle"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
UNET_COMPONENTS = ("volume", "baseline", "slice")
COMPONENTS = ("vae", *UNET_COMPONENTS)


class BundleError(ValueError):
    """A model bundle is missing, malformed or inconsistent (the message names file and problem)."""


@dataclass(frozen=True)
class BundleConfig:
    """Everything the sampler needs to know besides the weights."""

    vae: VAEConfig  # or its subclass VQConfig (the VQ first stage)
    unets: dict[str, UNetConfig]  # subset of UNET_COMPONENTS
    schedule: NoiseSchedule
    labels: LabelSpec
    scale_factor: float = 0.18215
    mask_condition: str = "vae"
    window: int = 16
    overlap: int = 1
    image_size: tuple[int, int] = (512, 512)
    slice_axis: str = "S"
    intensity: IntensityNorm = field(default_factory=lambda: IntensityNorm("percentile"))
    name: str = "unnamed"
    description: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    card: ModelCard = field(default_factory=ModelCard.unknown)  # the model's domain (models/card.py)

    def __post_init__(self):
        object.__setattr__(self, "image_size", tuple(int(s) for s in self.image_size))
        declared = set(self.labels.labels)
        listed = {*self.card.tissue_labels, *self.card.lesion_labels, *self.card.background_labels}
        if self.card.known and not listed <= declared:
            raise BundleError(f"the model card names labels {sorted(listed - declared)} that the label spec "
                              f"does not declare ({sorted(declared)})")
        unknown = set(self.unets) - set(UNET_COMPONENTS)
        if unknown:
            raise BundleError(f"unknown model component(s) {sorted(unknown)}; known: {UNET_COMPONENTS}")
        if not ({"volume", "baseline"} & set(self.unets)):
            raise BundleError("a bundle needs a 'volume' or a 'baseline' UNet")
        if self.mask_condition not in MASK_CONDITIONS:
            raise BundleError(f"mask_condition must be one of {MASK_CONDITIONS}, got {self.mask_condition!r}")
        if not 0 <= self.overlap < self.window:
            raise BundleError(f"overlap {self.overlap} must be in [0, window={self.window})")
        f = self.vae.downsampling * max(u.downsampling for u in self.unets.values())
        if any(s % f for s in self.image_size):
            raise BundleError(f"image_size {self.image_size} must be divisible by {f} (VAE x UNet downsampling)")
        self._check_channels()

    def _check_channels(self) -> None:
        lat = self.vae.embed_dim
        mask_ch = mask_condition_channels(self.mask_condition, lat, self.labels.num_channels, self.vae.downsampling)
        expected = unet_input_channels(lat, mask_ch)
        for name, cfg in self.unets.items():
            if cfg.in_channels != expected[name]:
                raise BundleError(
                    f"{name} UNet takes {cfg.in_channels} input channels but this latent space and mask "
                    f"encoding need {expected[name]} (noisy {lat} + mask {mask_ch}"
                    f"{f' + informed {lat}' if name == 'volume' else ''})"
                )
            if cfg.out_channels != lat:
                raise BundleError(f"{name} UNet outputs {cfg.out_channels} channels, latent space has {lat}")
            if (name == "slice") != (cfg.context_dim is not None):
                raise BundleError(f"component {name!r} has the wrong UNet kind (position context mismatch)")

    @property
    def latent_size(self) -> tuple[int, int]:
        f = self.vae.downsampling
        return (self.image_size[0] // f, self.image_size[1] // f)

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "description": self.description,
            "latent": {"scale_factor": self.scale_factor, "channels": self.vae.embed_dim},
            "mask_condition": self.mask_condition,
            "window": {"length": self.window, "overlap": self.overlap},
            "grid": {"image_size": list(self.image_size), "slice_axis": self.slice_axis},
            "intensity": self.intensity.to_dict(),
            "schedule": self.schedule.to_dict(),
            "labels": self.labels.to_dict(),
            "components": {
                "vae": {"kind": self.vae.kind, "config": self.vae.to_dict(), "weights": "vae.safetensors"},
                **{k: {"config": v.to_dict(), "weights": f"{k}.safetensors"} for k, v in self.unets.items()},
            },
            "card": self.card.to_dict(),
            "provenance": self.provenance,
        }

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> BundleConfig:
        if not isinstance(d, dict):
            raise BundleError(f"{source}: expected a JSON object at the top level, got {type(d).__name__}")
        if d.get("format") != FORMAT:
            raise BundleError(f"{source}: not a {FORMAT} config (format={d.get('format')!r})")
        version = d.get("format_version")
        if version != FORMAT_VERSION:
            raise BundleError(
                f"{source}: format_version {version!r} is not supported by this napari-gem3d "
                f"(supports {FORMAT_VERSION}); upgrade napari-gem3d or re-export the bundle"
            )
        try:
            comps = d["components"]
            return cls(
                vae=first_stage_config(comps["vae"]["config"], comps["vae"].get("kind", "kl")),
                unets={k: UNetConfig.from_dict(comps[k]["config"]) for k in UNET_COMPONENTS if k in comps},
                schedule=NoiseSchedule.from_dict(d["schedule"]),
                labels=LabelSpec.from_dict(d["labels"]),
                scale_factor=float(d["latent"]["scale_factor"]),
                mask_condition=d.get("mask_condition", "vae"),
                window=int(d["window"]["length"]),
                overlap=int(d["window"]["overlap"]),
                image_size=tuple(d["grid"]["image_size"]),
                slice_axis=d["grid"].get("slice_axis", "S"),
                intensity=IntensityNorm.from_dict(d["intensity"]),
                name=d.get("name", "unnamed"),
                description=d.get("description", ""),
                provenance=d.get("provenance", {}),
                card=ModelCard.from_dict(d.get("card")),
            )
        except KeyError as exc:
            raise BundleError(f"{source}: missing entry {exc}") from None
        except (TypeError, ValueError, AttributeError) as exc:  # incl. BundleError: name the file
            raise BundleError(f"{source}: {exc}") from None


@dataclass
class ModelBundle:
    config: BundleConfig
    vae: FirstStage
    unets: dict[str, nn.Module]
    path: Path | None = None
    model_hash: str = ""

    @property
    def volume(self) -> VolumeUNet | None:
        return self.unets.get("volume")

    @property
    def baseline(self) -> VolumeUNet | None:
        return self.unets.get("baseline")

    @property
    def slice(self) -> SliceUNet | None:
        return self.unets.get("slice")

    @property
    def codec(self) -> LatentCodec:
        return LatentCodec(self.vae, self.config.scale_factor, self.config.mask_condition)

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    def modules(self) -> dict[str, nn.Module]:
        return {"vae": self.vae, **self.unets}

    def to(self, device) -> ModelBundle:
        for m in self.modules().values():
            m.to(device)
        return self


def build_bundle(config: BundleConfig) -> ModelBundle:
    """Fresh modules (random / identity initialisation) for ``config``."""
    unets = {k: build_unet(v) for k, v in config.unets.items()}
    return ModelBundle(config, build_first_stage(config.vae), unets)


def _shapes_only_bundle(config: BundleConfig) -> ModelBundle:
    """Modules of ``config``'s shapes on the meta device (no memory, no initialisation), for weights that a
    strict ``load_state_dict(assign=True)`` puts in right after: the random initialisation that
    :func:`build_bundle` runs would be overwritten anyway, and its torch init ops held the GIL long enough to
    freeze napari's GUI thread while a worker loaded the demo model. (``to_empty`` would import sympy.)"""
    with torch.device("meta"):
        return build_bundle(config)


def _file_sha256(path: Path) -> str:
    """sha256 of a file; a safetensors header is hashed in canonical JSON form.

    safetensors writes its ``__metadata__`` map in no fixed order, so two writes of the same
    weights can differ in bytes; the canonical header keeps the hash a function of the content.
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        if path.suffix == ".safetensors":
            size = int.from_bytes(fh.read(8), "little")
            try:
                if size > path.stat().st_size - 8:
                    raise ValueError("header size beyond the end of the file")
                header = json.loads(fh.read(size))
            except (ValueError, UnicodeDecodeError):  # not safetensors: hash the raw bytes (load reports it)
                fh.seek(0)
            else:
                h.update(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def bundle_hash(folder: Path) -> str:
    """sha256 over the config and every weights file (order-independent of the file system)."""
    h = hashlib.sha256()
    for name in sorted(p.name for p in folder.iterdir() if p.suffix in (".json", ".safetensors")):
        h.update(name.encode())
        h.update(_file_sha256(folder / name).encode())
    return h.hexdigest()


def _read_config(folder: Path) -> BundleConfig:
    cfg_path = folder / CONFIG_NAME
    if not cfg_path.is_file():
        raise BundleError(f"{folder}: no {CONFIG_NAME} (a bundle is a folder with {CONFIG_NAME} + *.safetensors)")
    try:
        data = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{cfg_path}: not valid JSON ({exc})") from None
    return BundleConfig.from_dict(data, source=str(cfg_path))


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, read one at a time: ``load_file`` holds the GIL for the whole
    file, which froze napari's GUI thread for a quarter of a second while a worker loaded the demo model."""
    with safe_open(str(path), framework="pt") as fh:
        return {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118 - safe_open has no __iter__


def _load_weights(module: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise BundleError(f"{path}: weights file is missing")
    try:
        state = _read_tensors(path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"{path}: not a readable safetensors file ({exc})") from None
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k} is {tuple(state[k].shape)}, config needs {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(state))
        if state[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing tensors {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        if unexpected:
            parts.append(f"unexpected tensors {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")
        if wrong:
            parts.append("shape mismatch: " + "; ".join(wrong[:10]))
        raise BundleError(f"{path}: does not match its config: " + "; ".join(parts))
    # meta modules take the loaded tensors, in the dtype the module declares (a file may store fp16)
    state = {k: v.to(expected[k].dtype) for k, v in state.items()}
    module.load_state_dict(state, strict=True, assign=True)
    stray = [name for sub_name, sub in module.named_modules() for name, value in vars(sub).items()
             if isinstance(value, torch.Tensor) and value.is_meta]
    if stray or any(t.is_meta for t in (*module.parameters(), *module.buffers())):
        raise BundleError(f"{path}: the module keeps tensors that are not in its weights file ({stray[:3]})")


def _refuse_non_bundle(path: Path) -> None:
    if not path.exists():
        raise BundleError(f"{path}: no such model bundle")
    if path.is_file():
        hint = ""
        if path.suffix in (".ckpt", ".pt", ".pth", ".bin"):
            hint = " It looks like a PyTorch checkpoint: convert it with `gem3d convert-official`."
        elif path.suffix == ".safetensors":
            hint = f" Point to the folder that holds it and its {CONFIG_NAME}."
        raise BundleError(f"{path}: a model bundle is a folder with {CONFIG_NAME} and *.safetensors files.{hint}")


def load_bundle(path: str | os.PathLike, device: str | torch.device = "cpu") -> ModelBundle:
    """Load and validate a bundle; modules are in eval mode on ``device``."""
    folder = Path(path)
    _refuse_non_bundle(folder)
    config = _read_config(folder)
    bundle = _shapes_only_bundle(config)
    for name, module in bundle.modules().items():
        _load_weights(module, folder / f"{name}.safetensors")
        module.eval().requires_grad_(False)
    bundle.path = folder
    bundle.model_hash = bundle_hash(folder)
    return bundle.to(device)


#: Storage dtypes of a bundle's weights: fp16 halves the files (loading casts back to the modules' fp32).
STORAGE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def save_bundle(bundle: ModelBundle, path: str | os.PathLike, *, overwrite: bool = False,
                storage: str = "fp32") -> Path:
    """Write ``bundle`` to the folder ``path`` atomically (temporary folder, then rename); floating-point
    weights stored as ``storage`` (fp32 or fp16)."""
    if storage not in STORAGE_DTYPES:
        raise BundleError(f"storage must be one of {sorted(STORAGE_DTYPES)}, got {storage!r}")
    dtype = STORAGE_DTYPES[storage]
    folder = Path(path)
    if folder.exists() and not overwrite:
        raise BundleError(f"{folder} exists; pass overwrite=True to replace it")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        (tmp / CONFIG_NAME).write_text(json.dumps(bundle.config.to_dict(), indent=1, sort_keys=False))
        for name, module in bundle.modules().items():
            state = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
                     for k, v in module.state_dict().items()}
            save_file(state, str(tmp / f"{name}.safetensors"), metadata={"format": "pt", "component": name})
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        try:
            os.replace(tmp, folder)
        except BaseException:
            if old is not None:  # put the previous bundle back
                os.replace(old, folder)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    bundle.path = folder
    bundle.model_hash = bundle_hash(folder)
    return folder
