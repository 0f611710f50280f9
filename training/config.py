"""YAML training configs -> frozen dataclasses (unknown keys are errors that name the key).

One file per stage run. Sections: ``data`` (sources, grid, cache, windows), ``model`` (the bundle to
create or the earlier stage's bundle to extend), ``train`` (optimiser, steps, EMA, checkpoints, logs),
``diffusion`` (volume/slice/baseline loss options), ``vae`` (VAE losses), ``val`` (validation montages).
Relative paths are resolved against the config file's folder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from napari_gem3d.models.first_stage import FIRST_STAGE_KINDS

from . import STAGES


@dataclass(frozen=True)
class SourceConfig:
    """One raw data source.

    kind ``msd``: ``root`` holds ``imagesTr``/``labelsTr`` (MSD/BraTS; 4-D images: ``modality`` picks the
    channel, e.g. 0 = FLAIR in MSD Task01). kind ``pairs``: ``images`` and ``masks`` folders paired by file
    name. kind ``csv``: ``path`` to a CSV with the header ``case,image,mask``.
    """

    kind: str
    root: str | None = None
    images: str | None = None
    masks: str | None = None
    path: str | None = None
    modality: int | None = None
    label_map: dict[int, int] | None = None  # source label -> model label (unmapped labels are kept)

    def __post_init__(self):
        need = {"msd": ("root",), "pairs": ("images", "masks"), "csv": ("path",)}
        if self.kind not in need:
            raise ValueError(f"data source kind must be one of {sorted(need)}, got {self.kind!r}")
        missing = [k for k in need[self.kind] if getattr(self, k) is None]
        if missing:
            raise ValueError(f"data source of kind {self.kind!r} needs {missing}")


@dataclass(frozen=True)
class DataConfig:
    sources: tuple[SourceConfig, ...] = ()
    cache_dir: str = "cache"
    image_size: int = 64
    slice_axis: str = "S"
    crop: str = "nonzero"  # nonzero | body | labels | none: crop the source volume to this region (+ margin)
    crop_margin: int = 2  # voxels
    intensity: dict = field(default_factory=lambda: {"kind": "percentile", "low": 0.5, "high": 99.5})
    outside: str = "none"  # none | from_image: add the outside-body label (masks.outside_from_image)
    outside_label: int = 0
    body_label: int = 1
    val_cases: tuple[str, ...] = ()  # case names held out for validation (not trained on)
    informed: str = "window"  # window (official: inside the training window) | cross_volume
    cross_volume_prob: float = 1.0  # with informed=cross_volume: probability of another volume's slice
    flip_lr: float = 0.0  # probability of a left-right flip (model frame columns)
    num_workers: int = 0

    def __post_init__(self):
        if self.crop not in ("nonzero", "body", "labels", "none"):
            raise ValueError(f"data.crop must be nonzero, body, labels or none, got {self.crop!r}")
        if self.outside not in ("none", "from_image"):
            raise ValueError(f"data.outside must be none or from_image, got {self.outside!r}")
        if self.informed not in ("window", "cross_volume"):
            raise ValueError(f"data.informed must be window or cross_volume, got {self.informed!r}")


@dataclass(frozen=True)
class ModelConfig:
    """The bundle a stage starts from: ``init_bundle`` (an earlier stage's output) or a new one."""

    init_bundle: str | None = None
    labels: Any = "demo"  # demo | official_brain | {names: {...}, encoding: onehot}
    mask_condition: str | None = None  # vae | pool | unshuffle; None: the init bundle's (pool for a new one)
    vae: dict = field(default_factory=dict)  # VAEConfig fields; kind: kl (default) | vq (+ VQConfig's codebook fields)
    unet: dict = field(default_factory=dict)  # UNetConfig fields shared by the volume/baseline UNets
    slice_unet: dict = field(default_factory=dict)  # overrides for the slice UNet (context_dim, ...)
    schedule: dict = field(default_factory=dict)  # NoiseSchedule fields (kind: cosine, ...)
    mask_injection: bool = False  # Lesion-DDPM multi-level mask injection in the volume/baseline UNet a stage trains
    window: int = 16
    overlap: int = 1
    name: str = "gem3d-trained"
    description: str = ""
    card: dict = field(default_factory=dict)  # the model card's told fields (training/card.py measures the rest)

    def __post_init__(self):
        kind = self.vae.get("kind", "kl")
        if kind not in FIRST_STAGE_KINDS:
            raise ValueError(f"model.vae.kind must be one of {sorted(FIRST_STAGE_KINDS)}, got {kind!r}")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    batch_size: int = 4  # per process: slices (vae, slice) or windows (volume stages, baseline)
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    grad_clip: float = 1.0
    ema_decay: float = 0.999  # 0 disables EMA
    export_ema: bool = True
    precision: str = "bf16"  # autocast dtype on GPU; CPU always runs fp32
    device: str = "auto"
    threads: int = 0  # torch CPU threads per process (0: leave torch's default)
    log_every: int = 10
    ckpt_every: int = 500
    keep_checkpoints: int = 2
    val_every: int = 0  # 0: validate only at the end
    resume: bool = True  # continue from the newest checkpoint in out/checkpoints
    max_minutes: float = 0.0  # > 0: stop (checkpoint, validate, export) once this much training time has passed
    storage: str = "fp32"  # the exported bundle's weights: fp32, or fp16 (half the files; loaded back as fp32)

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("train.steps and train.batch_size must be >= 1")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"train.precision must be fp32, bf16 or fp16, got {self.precision!r}")
        if self.storage not in ("fp32", "fp16"):
            raise ValueError(f"train.storage must be fp32 or fp16, got {self.storage!r}")
        if self.max_minutes < 0:
            raise ValueError(f"train.max_minutes must be >= 0 (0: no limit), got {self.max_minutes}")


@dataclass(frozen=True)
class DiffusionConfig:
    t_sampling: str = ""  # per_slice | per_window | small_t_bias ('' = the stage's default)
    lesion_weight: float = 0.0  # loss weight = 1 + lesion_weight * lesion fraction (per latent pixel)
    lesion_labels: tuple[int, ...] = ()
    trainable: str = ""  # all | temporal ('' = the stage's default)
    init_from: str | None = None  # bundle whose UNet of the same role initialises this one (stage 2)
    frames: int = 0  # 0: the bundle's window length
    # correlation of the training noise between neighbouring frames of a window (AR(1), each frame N(0, I)):
    # the prior the sampler's slice-noise correlation draws from; 0 = independent frames (the paper)
    slice_noise_correlation: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.slice_noise_correlation < 1.0:
            raise ValueError("diffusion.slice_noise_correlation must be in [0, 1), "
                             f"got {self.slice_noise_correlation!r}")


@dataclass(frozen=True)
class VAELossConfig:
    """Losses of the ``vae`` stage; a VQ first stage (model.vae.kind: vq) has its commitment cost in model.vae."""

    kl_weight: float = 1e-6  # KL first stage only
    adv_weight: float = 0.0  # > 0 enables MONAI PatchDiscriminator + PatchAdversarialLoss
    adv_start: int = 0
    disc_channels: int = 32
    disc_layers: int = 3
    disc_lr: float = 0.0  # 0: train.lr
    perceptual_weights: str | None = None  # a user-supplied ResNet-50 state file (MONAI PerceptualLoss)
    perceptual_weight: float = 0.0
    latent_std_slices: int = 512  # slices used to measure the latent std (scale_factor = 1/std)


@dataclass(frozen=True)
class ValConfig:
    steps: int = 25  # DDIM steps of the validation samples; 0 disables validation
    eta: float = 1.0
    max_slices: int = 0  # 0: the whole validation volume
    case: str | None = None  # default: the first of data.val_cases, else the first case


class ConfigPaths:
    """``path()`` and ``out_dir`` for a config with ``out`` and ``base_dir`` fields: paths in a config file are
    relative to the file's folder (shared by the stage, RL and pretrain-seg configs)."""

    def path(self, p: str | None) -> Path | None:
        """A config path resolved against the config file's folder."""
        if p is None:
            return None
        q = Path(p).expanduser()
        return q if q.is_absolute() else Path(self.base_dir) / q

    @property
    def out_dir(self) -> Path:
        return self.path(self.out)  # type: ignore[return-value]


@dataclass(frozen=True)
class Config(ConfigPaths):
    stage: str
    out: str
    seed: int = 23
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    vae: VAELossConfig = field(default_factory=VAELossConfig)
    val: ValConfig = field(default_factory=ValConfig)
    base_dir: str = "."

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")


    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_SECTIONS = {
    "data": DataConfig, "model": ModelConfig, "train": TrainConfig, "diffusion": DiffusionConfig,
    "vae": VAELossConfig, "val": ValConfig,
}


def _build(cls, values: dict, where: str):
    if not isinstance(values, dict):
        raise ValueError(f"{where} must be a mapping, got {type(values).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown config key(s) {[f'{where}.{k}' for k in unknown]}; known: {sorted(known)}")
    kwargs = {}
    for k, v in values.items():
        if cls is DataConfig and k == "sources":
            v = tuple(_build(SourceConfig, s, f"{where}.sources[{i}]") for i, s in enumerate(v or []))
        elif isinstance(v, list) and k != "labels":
            v = tuple(v)
        kwargs[k] = v
    return cls(**kwargs)


def _set(d: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    d[keys[-1]] = value


def config_from_dict(raw: dict, *, stage: str | None = None, base_dir: str | Path = ".") -> Config:
    raw = dict(raw)
    file_stage = raw.pop("stage", None)
    stage = stage or file_stage
    if file_stage is not None and stage != file_stage:
        raise ValueError(f"the config is for stage {file_stage!r} but stage {stage!r} was requested")
    if "out" not in raw:
        raise ValueError("the config needs an 'out' folder")
    kwargs = {k: _build(cls, raw.pop(k, {}) or {}, k) for k, cls in _SECTIONS.items()}
    unknown = sorted(set(raw) - {"out", "seed"})
    if unknown:
        raise ValueError(f"unknown top-level config key(s) {unknown}")
    return Config(stage=stage, out=str(raw["out"]), seed=int(raw.get("seed", 23)), base_dir=str(base_dir), **kwargs)


def read_yaml(path: str | Path, overrides: list[str] = ()) -> dict:
    """A YAML config file as a mapping, with ``overrides`` (``key.sub=value`` strings, values parsed as YAML)
    applied (shared by the stage, RL and pretrain-seg configs)."""
    path = Path(path)
    if not path.is_file():
        raise OSError(f"config file not found: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a config must be a YAML mapping")
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set needs KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        _set(raw, key.strip(), yaml.safe_load(value))
    return raw


def load_config(path: str | Path, *, stage: str | None = None, overrides: list[str] = ()) -> Config:
    """Read a YAML config; ``overrides`` are ``key.sub=value`` strings parsed as YAML values."""
    return config_from_dict(read_yaml(path, overrides), stage=stage, base_dir=Path(path).resolve().parent)
