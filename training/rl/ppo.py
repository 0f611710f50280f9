"""PPO arithmetic for diffusion (DDPO / trl form): the clipped surrogate and group-normalised advantages.

- One advantage per trajectory, used for every one of its timesteps (no value function). Optionally a
  per-window value (the 2-D slice term computed per window, reference-rl.md section 6.3): every
  advantage is therefore stored per (trajectory, window).
- Each reward component is z-scored within its condition group (G samples of one condition; per
  window index for per-window components), falling back to the statistics of the whole batch when the
  group is too small or has no spread. Components are then combined with their weights, optionally
  z-scored again per group, and clipped to +-adv_clip.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def clipped_surrogate(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantage: torch.Tensor,
                      clip: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """mean(max(-A r, -A clamp(r, 1 - clip, 1 + clip))) with r = exp(log_prob - old_log_prob).

    Returns (loss, ratio, clipped) where ``clipped`` marks rows whose gradient the clip removed.
    """
    ratio = torch.exp(log_prob - old_log_prob)
    unclipped = -advantage * ratio
    clipped = -advantage * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = torch.mean(torch.maximum(unclipped, clipped))
    was_clipped = (clipped > unclipped).detach()
    return loss, ratio, was_clipped


def zscore_by_group(values: np.ndarray, groups: np.ndarray, *, min_count: int = 2, min_std: float = 1e-6
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(values - mean_g) / std_g per group; groups smaller than ``min_count`` or with std < ``min_std``
    use the batch mean and std instead. Returns (z, used_batch_fallback per value)."""
    v = np.asarray(values, np.float64)
    g = np.asarray(groups)
    if v.shape != g.shape:
        raise ValueError(f"values {v.shape} and groups {g.shape} differ in shape")
    batch_mean = v.mean() if v.size else 0.0
    batch_std = v.std() if v.size else 0.0
    out = np.zeros_like(v)
    fallback = np.zeros(v.shape, bool)
    for key in np.unique(g):
        sel = g == key
        mu, sd = v[sel].mean(), v[sel].std()
        if sel.sum() < min_count or sd < min_std:
            mu, sd = batch_mean, batch_std
            fallback[sel] = True
        out[sel] = (v[sel] - mu) / sd if sd >= min_std else 0.0
    return out, fallback


def combine_advantages(components: dict[str, list[np.ndarray]], weights: dict[str, float],
                       groups: Sequence[int], *, adv_clip: float = 5.0, renormalise: bool = True,
                       min_group: int = 2) -> tuple[list[np.ndarray], dict[str, float]]:
    """Per-(trajectory, window) advantages from raw reward components.

    ``components[name][i]`` is trajectory i's reward: shape (1,) (whole trajectory) or (W_i,) (one per
    window). Trajectory-level values are z-scored per group, per-window values per (group, window
    index); the weighted sum is z-scored again per (group, window) when ``renormalise``; the result
    is clipped to +-``adv_clip``. Returns (advantages[i] of shape (W_i,), stats).
    """
    n = len(groups)
    if not components:
        raise ValueError("no reward components to combine")
    widths = [None] * n
    for name, vals in components.items():
        if len(vals) != n:
            raise ValueError(f"reward component {name!r} has {len(vals)} values for {n} trajectories")
        for i, v in enumerate(vals):
            if np.size(v) > 1:
                if widths[i] is not None and widths[i] != np.size(v):
                    raise ValueError(f"trajectory {i}: per-window components disagree on the window count")
                widths[i] = np.size(v)
    widths = [w or 1 for w in widths]
    total = [np.zeros(w) for w in widths]
    stats: dict[str, float] = {}
    for name, vals in components.items():
        weight = float(weights.get(name, 0.0))
        if weight == 0.0:
            continue
        per_window = any(np.size(v) > 1 for v in vals)
        if per_window:
            flat = np.concatenate([np.broadcast_to(np.asarray(v, np.float64).reshape(-1), (w,))
                                   for v, w in zip(vals, widths, strict=False)])
            keys = np.array([f"{groups[i]}:{k}" for i, w in enumerate(widths) for k in range(w)])
            z, fb = zscore_by_group(flat, keys, min_count=min_group)
            parts = np.split(z, np.cumsum(widths)[:-1])
        else:
            flat = np.array([float(np.asarray(v).reshape(-1)[0]) for v in vals])
            z, fb = zscore_by_group(flat, np.asarray(groups), min_count=min_group)
            parts = [np.full(w, zi) for zi, w in zip(z, widths, strict=False)]
        stats[f"fallback/{name}"] = float(fb.mean())
        for i in range(n):
            total[i] = total[i] + weight * parts[i]
    if renormalise:
        flat = np.concatenate(total)
        keys = np.array([f"{groups[i]}:{k}" for i, w in enumerate(widths) for k in range(w)])
        z, fb = zscore_by_group(flat, keys, min_count=min_group)
        total = np.split(z, np.cumsum(widths)[:-1])
        stats["fallback/combined"] = float(fb.mean())
    flat = np.concatenate(total)
    stats["adv/clipped_frac"] = float(np.mean(np.abs(flat) > adv_clip))
    total = [np.clip(t, -adv_clip, adv_clip) for t in total]
    flat = np.concatenate(total)
    stats["adv/mean"], stats["adv/std"] = float(flat.mean()), float(flat.std())
    return total, stats
