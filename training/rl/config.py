"""RL configuration: YAML -> frozen dataclasses (unknown keys are errors that name the key).

Sections: ``model`` (the bundle to fine-tune), ``data`` (real cases, the training package's data
section: same keys as every stage), ``rollout`` (sampler settings, group size, sub-volumes),
``ppo``, ``params`` (which weights train), ``reward`` (weights, critics), ``critics`` (critic
training), ``eval`` (held-out evaluation, early stopping), ``monitor``, ``train`` (device, threads).
Relative paths are resolved against the config file's folder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigPaths, read_yaml
from .lora import DEFAULT_TARGETS


@dataclass(frozen=True)
class ModelSection:
    bundle: str | None = None  # None: the bundled demo model (napari_gem3d.demo_model_path())
    name_suffix: str = "-rl"


@dataclass(frozen=True)
class RolloutConfig:
    steps: int = 10  # DDIM steps of every rollout (and of the evaluation samples)
    eta: float = 1.0  # > 0: each step is a Gaussian policy
    group_size: int = 4  # G samples per condition
    conditions: int = 4  # conditions per epoch (over all ranks)
    slices: int = 31  # sub-volume length drawn from a training case (0: the whole volume)
    start: str = "middle"  # middle | random: the true informed slice's position in the sub-volume

    def __post_init__(self):
        if self.eta <= 0:
            raise ValueError(
                f"rollout.eta must be > 0 (eta = 0 gives a deterministic step with no density), got {self.eta}"
            )
        if self.group_size < 2:
            raise ValueError(
                f"rollout.group_size must be >= 2 (advantages are normalised per group), got {self.group_size}"
            )
        if self.start not in ("middle", "random"):
            raise ValueError(f"rollout.start must be middle or random, got {self.start!r}")


@dataclass(frozen=True)
class PPOConfig:
    epochs: int = 20  # rollout batches
    clip: float = 1e-4
    adv_clip: float = 5.0
    renormalise: bool = True  # z-score the weighted sum of components again per group
    min_group: int = 2  # smaller groups use batch statistics
    kl_beta: float = 0.0  # Flow-GRPO KL to the frozen model: beta * mean((mu - mu_ref)^2) / (2 std^2)
    lr: float = 3e-4
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    inner_epochs: int = 1
    updates_per_epoch: int = 2  # optimizer steps per rollout batch (gradients accumulated in between)
    minibatch: int = 8  # recorded steps per forward pass
    timestep_fraction: float = 1.0  # fraction of each window's steps trained on
    shuffle_advantages: bool = False  # CONTROL ONLY: permute advantages across the batch

    def __post_init__(self):
        if not 0 < self.timestep_fraction <= 1:
            raise ValueError(f"ppo.timestep_fraction must be in (0, 1], got {self.timestep_fraction}")
        if self.clip <= 0 or self.adv_clip <= 0:
            raise ValueError("ppo.clip and ppo.adv_clip must be > 0")
        if self.updates_per_epoch < 1 or self.minibatch < 1 or self.inner_epochs < 1:
            raise ValueError("ppo.updates_per_epoch, ppo.minibatch and ppo.inner_epochs must be >= 1")


@dataclass(frozen=True)
class ParamsConfig:
    mode: str = "lora"  # lora | temporal | all
    lora_rank: int = 4
    lora_alpha: float = 4.0
    lora_targets: str = DEFAULT_TARGETS  # regex over module names


@dataclass(frozen=True)
class RewardConfig:
    weights: dict = field(default_factory=lambda: {"realism2d": 1.0, "coherence3d": 1.0, "dice": 1.0, "stats": 0.5})
    per_window_2d: bool = False  # the 2-D term per window (our extension) instead of per volume
    critics: str | None = None  # a trained critic folder; None: train them first (OUT/critics)


@dataclass(frozen=True)
class CriticsConfig:
    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    depth: int = 8  # slices per 3-D critic chunk
    width: int = 32
    generated_volumes: int = 8  # base-model volumes for the slice critics (split into halves)
    real_volumes: int = 0  # real sub-volumes used (0: one per training case)


@dataclass(frozen=True)
class EvalConfig:
    every: int = 5  # epochs between held-out evaluations (0: only before and after)
    seeds: int = 2  # samples per held-out condition
    patience: int = 0  # evaluations without held-out improvement before stopping (0: never stop early)
    restore_best: bool = True  # export the weights with the best held-out critic score
    max_conditions: int = 2
    slices: int = 0  # held-out sub-volume length (0: rollout.slices); longer than a window shows seams
    fid: bool = True


@dataclass(frozen=True)
class MonitorConfig:
    latent_bound: float = 4.0  # |latent| above this counts as saturated
    diversity: bool = True  # MS-SSIM between samples of one group


@dataclass(frozen=True)
class TrainSection:
    device: str = "auto"
    threads: int = 0


@dataclass(frozen=True)
class RLConfig(ConfigPaths):
    out: str
    seed: int = 0
    model: ModelSection = field(default_factory=ModelSection)
    data: dict = field(default_factory=dict)  # the training package's `data` section
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    params: ParamsConfig = field(default_factory=ParamsConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    critics: CriticsConfig = field(default_factory=CriticsConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    train: TrainSection = field(default_factory=TrainSection)
    base_dir: str = "."


    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_SECTIONS = {"model": ModelSection, "rollout": RolloutConfig, "ppo": PPOConfig, "params": ParamsConfig,
             "reward": RewardConfig, "critics": CriticsConfig, "eval": EvalConfig, "monitor": MonitorConfig,
             "train": TrainSection}


def _section(cls, values: Any, where: str):
    if not isinstance(values, dict):
        raise ValueError(f"{where} must be a mapping, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown config key(s) {[f'{where}.{k}' for k in unknown]}; known: {sorted(known)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def rl_config_from_dict(raw: dict, base_dir: str | Path = ".") -> RLConfig:
    raw = dict(raw)
    raw.pop("stage", None) if raw.get("stage") == "rl" else None
    if "stage" in raw:
        raise ValueError(f"this is a config for stage {raw['stage']!r}, not for rl")
    if "out" not in raw:
        raise ValueError("the RL config needs an 'out' folder")
    kwargs = {k: _section(cls, raw.pop(k, {}) or {}, k) for k, cls in _SECTIONS.items()}
    data = raw.pop("data", {}) or {}
    out, seed = raw.pop("out"), int(raw.pop("seed", 0))
    if raw:
        raise ValueError(
            f"unknown top-level RL config key(s) {sorted(raw)}; known: out, seed, data, {sorted(_SECTIONS)}"
        )
    return RLConfig(out=str(out), seed=seed, data=dict(data), base_dir=str(base_dir), **kwargs)


def load_rl_config(path: str | Path, overrides: list[str] = ()) -> RLConfig:
    """Read a YAML RL config; ``overrides`` are ``key.sub=value`` strings parsed as YAML values."""
    return rl_config_from_dict(read_yaml(path, overrides), base_dir=Path(path).resolve().parent)
