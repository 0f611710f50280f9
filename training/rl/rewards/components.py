"""Reward components on decoded volumes (no gradients) and the weighted set used by PPO.

Every component maps one rollout (decoded volume, latents, windows) and its condition to a value:
shape (1,) for the whole trajectory, or (W,) with one value per recorded window (``per_window``).
Values are raw; PPO normalises each component per condition group before weighting (``ppo.py``).

=============== ======================================================================== =========
name            value                                                                    scale
=============== ======================================================================== =========
realism2d       mean over slices of the 2-D realism critic's logit (per window optional)  2-D
stats           -mean |f - f_real| / sd_real over intensity/texture statistics: per-label 2-D/3-D
                mean and std inside the conditioning mask, in-plane gradient energy,
                inter-slice difference (two-sided: no "maximise smoothness" optimum)
coherence3d     mean logit of the 3-D critic over chunks of D slices (stride D/2)         3-D
dice            mean Dice of the segmentation network's labels vs the conditioning mask   3-D
heldout2d       the held-out critic (evaluation / early stopping only, never trained on)  2-D
=============== ======================================================================== =========
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..rollout import Condition, Rollout
from .critics import CriticSet

STAT_EPS = 0.05  # floor of the real spread (intensities in [-1, 1]): a few real volumes can agree exactly


def _device(net: torch.nn.Module) -> torch.device:
    return next(net.parameters()).device


@torch.no_grad()
def slice_logits(net: torch.nn.Module, volume: np.ndarray, batch: int = 64) -> np.ndarray:
    """(Z,) logits of a slice critic for every slice of ``volume`` (Z, h, w)."""
    x = torch.from_numpy(np.array(volume, np.float32))[:, None]
    dev = _device(net)
    return torch.cat([net(x[i : i + batch].to(dev)).float().cpu() for i in range(0, len(x), batch)]).numpy()


def chunk_starts(num_slices: int, depth: int, stride: int | None = None) -> list[int]:
    """Chunk starts covering ``[0, num_slices)`` with stride ``depth // 2`` (last chunk flush with the end)."""
    if num_slices < depth:
        raise ValueError(f"a volume of {num_slices} slices is shorter than the 3-D critic depth {depth}")
    stride = stride or max(1, depth // 2)
    starts = list(range(0, num_slices - depth + 1, stride))
    if starts[-1] != num_slices - depth:
        starts.append(num_slices - depth)
    return starts


@torch.no_grad()
def chunk_logits(net: torch.nn.Module, volume: np.ndarray, depth: int, stride: int | None = None) -> np.ndarray:
    v = np.ascontiguousarray(volume, np.float32)
    chunks = np.stack([v[s : s + depth] for s in chunk_starts(v.shape[0], depth, stride)])
    return net(torch.from_numpy(chunks)[:, None].to(_device(net))).float().cpu().numpy()


@torch.no_grad()
def segment(net: torch.nn.Module, volume: np.ndarray, batch: int = 32) -> np.ndarray:
    """Label volume (Z, h, w) predicted slice by slice."""
    x = torch.from_numpy(np.array(volume, np.float32))[:, None]
    dev = _device(net)
    return torch.cat([net(x[i : i + batch].to(dev)).argmax(dim=1).cpu() for i in range(0, len(x), batch)]).numpy()


def mean_dice(pred: np.ndarray, mask: np.ndarray, background: int = 0) -> float:
    """Mean Dice over the foreground labels present in either volume (1.0 when both are empty)."""
    from napari_gem3d.metrics.segmentation import dice_per_label

    labels = sorted(int(v) for v in np.union1d(np.unique(pred), np.unique(mask)) if v != background)
    if not labels:
        return 1.0
    return float(np.mean(list(dice_per_label(pred, mask, labels).values())))


def volume_stats(volume: np.ndarray, mask: np.ndarray, labels: Sequence[int], min_voxels: int = 20) -> np.ndarray:
    """Feature vector: per label (mean, std) inside the mask (nan if < min_voxels), in-plane gradient
    energy and mean absolute inter-slice difference inside the foreground (mask != 0)."""
    v = np.asarray(volume, np.float64)
    m = np.asarray(mask)
    feats = []
    for lab in labels:
        sel = m == lab
        if sel.sum() >= min_voxels:
            feats += [v[sel].mean(), v[sel].std()]
        else:
            feats += [np.nan, np.nan]
    fg = m != 0
    gy, gx = np.gradient(v, axis=(1, 2))
    grad = np.sqrt(gy**2 + gx**2)
    feats.append(grad[fg].mean() if fg.any() else np.nan)
    dz = np.abs(np.diff(v, axis=0))
    fgz = fg[1:] & fg[:-1]
    feats.append(dz[fgz].mean() if fgz.any() else np.nan)
    return np.asarray(feats, np.float64)


@dataclass
class StatsReference:
    """Mean and spread of :func:`volume_stats` over real volumes."""

    labels: list[int]
    mean: np.ndarray
    sd: np.ndarray

    @classmethod
    def fit(cls, pairs: Sequence[tuple[np.ndarray, np.ndarray]], labels: Sequence[int]) -> StatsReference:
        feats = np.stack([volume_stats(img, msk, labels) for img, msk in pairs])
        with warnings.catch_warnings():  # a label absent from every volume gives an all-nan column
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, sd = np.nanmean(feats, axis=0), np.nanstd(feats, axis=0)
        return cls(list(map(int, labels)), mean, sd)

    def score(self, volume: np.ndarray, mask: np.ndarray) -> float:
        f = volume_stats(volume, mask, self.labels)
        ok = np.isfinite(f) & np.isfinite(self.mean)
        if not ok.any():
            return 0.0
        return float(-np.mean(np.abs(f[ok] - self.mean[ok]) / (self.sd[ok] + STAT_EPS)))

    def to_dict(self) -> dict:
        return {"labels": self.labels, "mean": [None if not np.isfinite(x) else float(x) for x in self.mean],
                "sd": [None if not np.isfinite(x) else float(x) for x in self.sd]}

    @classmethod
    def from_dict(cls, d: dict) -> StatsReference:
        arr = lambda xs: np.array([np.nan if x is None else x for x in xs], np.float64)  # noqa: E731
        return cls(list(d["labels"]), arr(d["mean"]), arr(d["sd"]))


class Component:
    """Base class: ``name``, ``per_window`` and ``score(rollout, condition) -> (1,) or (W,) array``."""

    name = "component"
    per_window = False

    def score(self, rollout: Rollout, condition: Condition) -> np.ndarray:
        raise NotImplementedError


class Realism2D(Component):
    name = "realism2d"

    def __init__(self, critics: CriticSet, per_window: bool = False, kind: str = "realism2d"):
        self.net, self.per_window, self.name = critics[kind], bool(per_window), kind

    def score(self, rollout, condition):
        logits = slice_logits(self.net, rollout.volume)
        if not self.per_window:
            return np.array([logits.mean()])
        return np.array([logits[z0:z1].mean() for z0, z1 in rollout.window_ranges()])


class Coherence3D(Component):
    name = "coherence3d"

    def __init__(self, critics: CriticSet):
        self.net, self.depth = critics["coherence3d"], critics.spec.depth

    def score(self, rollout, condition):
        return np.array([chunk_logits(self.net, rollout.volume, self.depth).mean()])


class MaskDice(Component):
    name = "dice"

    def __init__(self, critics: CriticSet, background: int = 0):
        self.net, self.background = critics["segmentation"], background

    def score(self, rollout, condition):
        return np.array([mean_dice(segment(self.net, rollout.volume), np.asarray(condition.mask), self.background)])


class IntensityStats(Component):
    name = "stats"

    def __init__(self, reference: StatsReference):
        self.reference = reference

    def score(self, rollout, condition):
        return np.array([self.reference.score(rollout.volume, np.asarray(condition.mask))])


class FunctionReward(Component):
    """A reward from a plain function ``fn(rollout, condition) -> float`` (tests, custom rewards)."""

    def __init__(self, name: str, fn: Callable[[Rollout, Condition], float]):
        self.name, self.fn = name, fn

    def score(self, rollout, condition):
        return np.array([float(self.fn(rollout, condition))])


class RewardSet:
    """Weighted reward components (weights apply after per-group normalisation)."""

    def __init__(self, components: Sequence[Component], weights: dict[str, float] | None = None):
        self.components = {c.name: c for c in components}
        if len(self.components) != len(components):
            raise ValueError("reward component names must be unique")
        self.weights = dict.fromkeys(self.components, 1.0) if weights is None else dict(weights)
        unknown = sorted(set(self.weights) - set(self.components))
        if unknown:
            raise ValueError(f"reward weights name unknown components {unknown}; known: {sorted(self.components)}")
        if not any(self.weights.get(n, 0.0) for n in self.components):
            raise ValueError("every reward weight is 0: nothing to optimise")

    def score(self, rollouts: Sequence[Rollout], conditions: Sequence[Condition]) -> dict[str, list[np.ndarray]]:
        """Raw values ``{name: [array per rollout]}`` (rollout.group indexes ``conditions``)."""
        return {name: [np.asarray(c.score(r, conditions[r.group]), np.float64).reshape(-1) for r in rollouts]
                for name, c in self.components.items()}


def trajectory_means(values: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    """One value per rollout and component (per-window values averaged)."""
    return {k: np.array([float(np.mean(v)) for v in vals]) for k, vals in values.items()}
