"""The ``pretrain-seg`` YAML config: ``out``, ``seed``, ``data`` and ``train`` as in the stage configs
(``training/config.py``, parsed by its helpers), plus a ``pretrain`` section (:class:`PretrainOptions`).

The object duck-types what the shared loop (``training/engine/loop.py``) reads from a stage config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigPaths, DataConfig, TrainConfig, ValConfig, _build, read_yaml
from .objective import PREDICTIONS

STAGE = "pretrain-seg"


@dataclass(frozen=True)
class PretrainOptions:
    prediction: str = "x0"  # x0 | eps: what the denoising channel predicts
    coord_weight: float = 1.0  # weight of the coordinate loss; 0 = no coordinate head (denoising only)
    schedule: dict = field(default_factory=lambda: {"kind": "cosine"})  # NoiseSchedule fields
    max_timestep: int = 0  # sample t in [0, max_timestep); 0: the whole schedule
    labels: Any = "demo"  # the label spec the case cache was made with (masks are not used)
    context: int = 0  # 2.5-D: neighbouring slices on each side as input channels (slices.py); 0: 2-D

    def __post_init__(self):
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"pretrain.prediction must be one of {PREDICTIONS}, got {self.prediction!r}")
        if self.coord_weight < 0 or self.max_timestep < 0 or self.context < 0:
            raise ValueError("pretrain.coord_weight, pretrain.max_timestep and pretrain.context must be >= 0")

    @property
    def coordinate_head(self) -> bool:
        return self.coord_weight > 0


@dataclass(frozen=True)
class PretrainSegConfig(ConfigPaths):
    out: str
    seed: int = 23
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pretrain: PretrainOptions = field(default_factory=PretrainOptions)
    base_dir: str = "."
    stage: str = STAGE
    val: ValConfig = field(default_factory=lambda: ValConfig(steps=0))  # the loop's validation: off



def config_from_dict(raw: dict, base_dir: str | Path = ".") -> PretrainSegConfig:
    raw = dict(raw)
    if raw.pop("stage", STAGE) != STAGE:
        raise ValueError(f"this config is not for the {STAGE} command")
    if "out" not in raw:
        raise ValueError("the config needs an 'out' folder")
    sections = {"data": DataConfig, "train": TrainConfig, "pretrain": PretrainOptions}
    kwargs = {k: _build(cls, raw.pop(k, {}) or {}, k) for k, cls in sections.items()}
    unknown = sorted(set(raw) - {"out", "seed"})
    if unknown:
        raise ValueError(f"unknown top-level config key(s) {unknown}; known: out, seed, {sorted(sections)}")
    return PretrainSegConfig(out=str(raw["out"]), seed=int(raw.get("seed", 23)), base_dir=str(base_dir), **kwargs)


def load_config(path: str | Path, overrides: list[str] = ()) -> PretrainSegConfig:
    return config_from_dict(read_yaml(path, overrides), base_dir=Path(path).resolve().parent)
