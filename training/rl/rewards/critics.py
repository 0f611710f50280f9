"""Critic networks (all MONAI, randomly initialised, trained here) and their storage.

========== =============================================== ============================================
kind       network                                         input -> output
========== =============================================== ============================================
realism2d  ``PatchDiscriminator`` (2-D)                    slices (N, 1, h, w) -> mean patch logit (N,)
heldout2d  ``Classifier`` (2-D, strided convs + linear)    slices (N, 1, h, w) -> logit (N,); evaluation
                                                           and early stopping only, never a reward
coherence3d ``Classifier`` (3-D, first stride (1, 2, 2))   chunks (N, 1, D, h, w) -> logit (N,)
segmentation ``UNet`` (2-D)                                slices (N, 1, h, w) -> label logits (N, L, h, w)
========== =============================================== ============================================

A critic folder holds ``critics.json`` (kinds, shapes, training statistics) and one
``<kind>.safetensors`` per network; no pickles.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

KINDS = ("realism2d", "heldout2d", "coherence3d", "segmentation")
CRITICS_JSON = "critics.json"


@dataclass(frozen=True)
class CriticSpec:
    """Shapes every critic needs: slice size, 3-D chunk depth, number of label classes."""

    image_size: tuple[int, int]
    depth: int = 8  # slices per 3-D critic chunk
    num_classes: int = 7  # segmentation classes (label values 0..num_classes-1)
    width: int = 32  # base channel count
    seed: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["image_size"] = list(self.image_size)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CriticSpec:
        return cls(**{**d, "image_size": tuple(d["image_size"])})


class PatchRealism(nn.Module):
    """PatchDiscriminator whose patch logits are averaged to one logit per slice."""

    def __init__(self, spec: CriticSpec):
        super().__init__()
        from monai.networks.nets import PatchDiscriminator

        layers = 3 if min(spec.image_size) >= 48 else 2
        self.net = PatchDiscriminator(spatial_dims=2, num_layers_d=layers, channels=spec.width, in_channels=1,
                                      out_channels=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[-1].mean(dim=(1, 2, 3))


class LogitClassifier(nn.Module):
    """MONAI ``Classifier`` with one output logit, squeezed to (N,)."""

    def __init__(self, in_shape: tuple[int, ...], channels: tuple[int, ...], strides: tuple):
        super().__init__()
        from monai.networks.nets import Classifier

        self.net = Classifier(in_shape=in_shape, classes=1, channels=channels, strides=strides, last_act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[:, 0]


class Segmenter(nn.Module):
    def __init__(self, spec: CriticSpec):
        super().__init__()
        from monai.networks.nets import UNet

        w = max(8, spec.width // 2)
        self.net = UNet(spatial_dims=2, in_channels=1, out_channels=spec.num_classes, channels=(w, 2 * w, 4 * w),
                        strides=(2, 2), num_res_units=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_critic(kind: str, spec: CriticSpec) -> nn.Module:
    if kind not in KINDS:
        raise ValueError(f"unknown critic kind {kind!r}; known: {KINDS}")
    with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the global RNG
        torch.manual_seed(spec.seed * 31 + KINDS.index(kind))
        return _build(kind, spec)


def _build(kind: str, spec: CriticSpec) -> nn.Module:
    h, w = spec.image_size
    if kind == "realism2d":
        return PatchRealism(spec)
    if kind == "heldout2d":
        c = max(8, spec.width // 2)
        return LogitClassifier((1, h, w), (c, 2 * c, 4 * c), (2, 2, 2))
    if kind == "coherence3d":
        c = max(8, spec.width // 4)
        return LogitClassifier((1, spec.depth, h, w), (c, 2 * c, 4 * c), ((1, 2, 2), (2, 2, 2), (1, 2, 2)))
    return Segmenter(spec)


@dataclass
class CriticSet:
    """Trained, frozen critics by kind, with their spec and training notes."""

    spec: CriticSpec
    nets: dict[str, nn.Module]
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        for net in self.nets.values():
            net.eval().requires_grad_(False)

    def __getitem__(self, kind: str) -> nn.Module:
        if kind not in self.nets:
            raise KeyError(f"the critic set has no {kind!r} network (it has {sorted(self.nets)})")
        return self.nets[kind]

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for kind, net in self.nets.items():
            state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
            save_file(state, str(folder / f"{kind}.safetensors"), metadata={"kind": kind})
        doc = {"spec": self.spec.to_dict(), "kinds": sorted(self.nets), "info": self.info}
        tmp = folder / (CRITICS_JSON + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1, default=float))
        tmp.replace(folder / CRITICS_JSON)
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu") -> CriticSet:
        folder = Path(folder)
        meta = folder / CRITICS_JSON
        if not meta.is_file():
            raise OSError(f"{folder} is not a critic folder (no {CRITICS_JSON}); train critics with "
                          "`python -m training.rl critics --config FILE`")
        doc = json.loads(meta.read_text())
        spec = CriticSpec.from_dict(doc["spec"])
        nets = {}
        for kind in doc["kinds"]:
            net = build_critic(kind, spec)
            net.load_state_dict(load_file(str(folder / f"{kind}.safetensors")))
            nets[kind] = net.to(device)
        return cls(spec, nets, doc.get("info", {}))
