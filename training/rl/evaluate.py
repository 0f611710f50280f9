"""Before/after evaluation on held-out conditions (cases the RL never trained on).

For each held-out condition and seed a volume is generated with THE sampler (no recording) and scored:

- every reward component (the raw values PPO optimised, before normalisation);
- ``heldout2d``: the held-out critic (trained on a disjoint split, never a reward);
- fidelity the reward did not train on: 3-D MS-SSIM to the ground truth (the true informed slice is
  the condition's informed slice), and FID-A/C/S between the real held-out sub-volumes and the
  generated ones with the offline random-conv extractor (``napari_gem3d.metrics``; compare only
  within this report: same extractor, same sets).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_gem3d.models import ModelBundle
from napari_gem3d.volume import Volume

from .rewards.components import RewardSet, slice_logits, trajectory_means
from .rollout import Condition, collect

EVAL_SEED = 900_000


def eval_seeds(conditions: int, seeds: int) -> list[list[int]]:
    return [[EVAL_SEED + 1000 * c + s for s in range(seeds)] for c in range(conditions)]


def generate_eval(bundle: ModelBundle, conditions: Sequence[Condition], *, seeds: int, steps: int, eta: float,
                  device: str = "cpu"):
    return collect(bundle, list(conditions), group_size=seeds, seeds=eval_seeds(len(conditions), seeds), steps=steps,
                   eta=eta, device=device, record=False)


def heldout_score(critic, rollouts) -> float:
    return float(np.mean([slice_logits(critic, r.volume).mean() for r in rollouts]))


def fidelity(rollouts, conditions: Sequence[Condition], *, fid: bool = True, affine=None) -> dict[str, float]:
    from napari_gem3d.metrics.similarity import ms_ssim

    out: dict[str, float] = {}
    scores = []
    for r in rollouts:
        truth = conditions[r.group].image
        if truth is None:
            continue
        scores.append(ms_ssim((np.clip(truth, -1, 1) + 1) / 2, (np.clip(r.volume, -1, 1) + 1) / 2, data_range=1.0)[0])
    if scores:
        out["ms_ssim_to_truth"] = float(np.mean(scores))
        out["ms_ssim_to_truth_std"] = float(np.std(scores))
    if fid and all(c.image is not None for c in conditions):
        from napari_gem3d.metrics.features import fallback_extractor
        from napari_gem3d.metrics.fid import fid_between

        aff = np.eye(4) if affine is None else np.asarray(affine)
        size = int(conditions[0].image.shape[-1])
        ext = fallback_extractor(input_size=size)
        real = [Volume(np.transpose(c.image, (2, 1, 0)), aff) for c in conditions]
        gen = [Volume(np.transpose(r.volume, (2, 1, 0)), aff) for r in rollouts]
        for k, v in fid_between(real, gen, ext).items():
            out[k] = float(v)
        out["fid_mean"] = float(np.mean([out[k] for k in ("FID-A", "FID-C", "FID-S")]))
        out["fid_extractor"] = ext.name  # type: ignore[assignment]
    return out


def evaluate_model(bundle: ModelBundle, conditions: Sequence[Condition], rewards: RewardSet, heldout_critic, *,
                   seeds: int, steps: int, eta: float, device: str = "cpu", fid: bool = True) -> dict:
    """All numbers of one model on the held-out conditions."""
    rollouts = generate_eval(bundle, conditions, seeds=seeds, steps=steps, eta=eta, device=device)
    means = trajectory_means(rewards.score(rollouts, conditions))
    out = {"rewards": {k: float(v.mean()) for k, v in means.items()},
           "rewards_std": {k: float(v.std()) for k, v in means.items()},
           "samples": len(rollouts)}
    if heldout_critic is not None:
        out["heldout2d"] = heldout_score(heldout_critic, rollouts)
    out["fidelity"] = fidelity(rollouts, conditions, fid=fid)
    out["saturation_image"] = float(np.mean([np.mean(np.abs(r.volume) >= 0.99) for r in rollouts]))
    return out


LOWER_IS_BETTER = ("FID-A", "FID-C", "FID-S", "fid_mean")


def compare(before: dict, after: dict, weights: dict[str, float]) -> dict:
    """Deltas, a combined reward change in units of the base model's spread, and honest verdicts."""
    d_rewards = {k: after["rewards"][k] - before["rewards"][k] for k in before["rewards"]}
    z = {k: d_rewards[k] / max(before["rewards_std"][k], 1e-8) for k in d_rewards}
    wsum = sum(abs(weights.get(k, 0.0)) for k in z) or 1.0
    combined = sum(weights.get(k, 0.0) * z[k] for k in z) / wsum
    fb, fa = before["fidelity"], after["fidelity"]
    d_fid = {k: fa[k] - fb[k] for k in fb if isinstance(fb[k], float) and k in fa and not k.endswith("_std")}
    worse = {k: v for k, v in d_fid.items() if (v > 0 if k in LOWER_IS_BETTER else v < 0)}
    return {
        "rewards_delta": d_rewards,
        "rewards_delta_in_base_std": z,
        "combined_reward_delta_z": combined,
        "heldout2d_delta": after.get("heldout2d", np.nan) - before.get("heldout2d", np.nan),
        "fidelity_delta": d_fid,
        "reward_raised": bool(combined > 0),
        "fidelity_worse": sorted(worse),
        "fidelity_not_worse": not worse,
    }
