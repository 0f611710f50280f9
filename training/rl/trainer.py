"""The PPO loop: rollouts through THE sampler, frozen rewards, group advantages, clipped updates.

One epoch:
1. each rank draws its conditions and ``G`` seeds per condition and rolls them out
   (:func:`rollout.collect`: the sampler generator with a recorder, eval mode, no gradients);
2. the frozen reward components score the decoded volumes; each component is normalised per
   condition group and the weighted sum is clipped to +-adv_clip (:func:`ppo.combine_advantages`);
3. every recorded (window, step) becomes a training row with its trajectory's (or window's)
   advantage; rows are shuffled and split into ``updates_per_epoch`` chunks; a chunk's gradient is
   accumulated over minibatches, averaged over ranks (all-reduce, as DDP does), clipped, and applied
   with AdamW. The first chunk runs on the rollout policy, so its ratio must be exactly 1: the
   largest |ratio - 1| there is logged as ``ratio_dev_first``;
4. logs: every reward component (raw mean/std), advantage stats, policy loss, KL to the frozen
   reference, approx_kl, clip fraction, grad norm, latent saturation, sample diversity.
Every ``eval.every`` epochs a held-out scorer (a critic trained separately from the reward critics)
decides early stopping and which weights are exported.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn

from napari_gem3d.diffusion import ddim_step
from napari_gem3d.models import ModelBundle

from .config import MonitorConfig, ParamsConfig, PPOConfig, RolloutConfig
from .policy import StepBatch, frozen_copy, gaussian_kl, network_output, score_steps, set_trainable
from .ppo import clipped_surrogate, combine_advantages
from .rewards.components import RewardSet, trajectory_means
from .rollout import Condition, Rollout, collect

ConditionSource = Callable[[int, int, int], list[Condition]]  # (epoch, rank, world) -> this rank's conditions
HeldOut = Callable[[ModelBundle], float]  # higher is better


@dataclass
class DistState:
    rank: int = 0
    world: int = 1

    @property
    def distributed(self) -> bool:
        return self.world > 1 and torch_dist.is_available() and torch_dist.is_initialized()


def rollout_seeds(seed: int, epoch: int, rank: int, conditions: int, group: int) -> list[list[int]]:
    ss = np.random.SeedSequence([int(seed), int(epoch), int(rank), 0x5EED])
    flat = ss.generate_state(conditions * group, np.uint32)
    return [[int(v) for v in flat[c * group : (c + 1) * group]] for c in range(conditions)]


@dataclass
class EpochLog:
    epoch: int
    values: dict[str, float] = field(default_factory=dict)


class RLTrainer:
    """PPO fine-tuning of ``bundle.volume`` (in place) with ``rewards``.

    ``bundle``: the model; its volume UNet is the policy (adapters are added in place, so the sampler
    rolls out the current policy). ``rewards``: frozen components + weights.
    """

    def __init__(self, bundle: ModelBundle, rewards: RewardSet, *, rollout: RolloutConfig, ppo: PPOConfig,
                 params: ParamsConfig, monitor: MonitorConfig | None = None, seed: int = 0, device: str = "cpu",
                 dist: DistState | None = None, log: Callable[[str], None] = print):
        self.bundle, self.rewards = bundle, rewards
        self.rollout_cfg, self.ppo, self.params_cfg = rollout, ppo, params
        self.monitor = monitor or MonitorConfig()
        self.seed, self.device, self.dist, self.log = int(seed), torch.device(device), dist or DistState(), log
        bundle.to(self.device)
        for m in bundle.modules().values():
            m.eval().requires_grad_(False)
        self.unet: nn.Module = bundle.volume
        if self.unet is None:
            raise ValueError("the bundle has no GEM-3D volume network to fine-tune")
        self.reference = frozen_copy(self.unet) if ppo.kl_beta > 0 else None
        self.trainable = set_trainable(self.unet, params.mode, lora_rank=params.lora_rank,
                                       lora_alpha=params.lora_alpha, lora_targets=params.lora_targets)
        self.unet.to(self.device).eval()  # eval mode throughout: rollouts and updates see the same network
        self.optimizer = torch.optim.AdamW(self.trainable, lr=ppo.lr, betas=tuple(ppo.betas),
                                           weight_decay=ppo.weight_decay)
        self.prediction = bundle.config.schedule.prediction
        self.rng = np.random.default_rng([self.seed, 0xAD, self.dist.rank])
        self.history: list[dict] = []

    # ------------------------------------------------------------------ rollouts and rewards
    def rollouts(self, conditions: Sequence[Condition], epoch: int, *, record: bool = True) -> list[Rollout]:
        g = self.rollout_cfg.group_size
        seeds = rollout_seeds(self.seed, epoch, self.dist.rank, len(conditions), g)
        return collect(self.bundle, list(conditions), group_size=g, seeds=seeds, steps=self.rollout_cfg.steps,
                       eta=self.rollout_cfg.eta, device=str(self.device), record=record)

    def advantages(self, rollouts: Sequence[Rollout], values: dict[str, list[np.ndarray]]
                   ) -> tuple[list[np.ndarray], dict[str, float]]:
        groups = [r.group for r in rollouts]
        adv, stats = combine_advantages(values, self.rewards.weights, groups, adv_clip=self.ppo.adv_clip,
                                        renormalise=self.ppo.renormalise, min_group=self.ppo.min_group)
        for r, a in zip(rollouts, adv, strict=False):
            if a.shape[0] not in (1, len(r.windows)):
                raise ValueError(f"advantage has {a.shape[0]} windows, the rollout recorded {len(r.windows)}")
        if self.ppo.shuffle_advantages:  # the control run: same magnitudes, no relation to the samples
            perm = self.rng.permutation(len(adv))
            adv = [np.full(len(r.windows), float(np.mean(adv[p]))) for r, p in zip(rollouts, perm, strict=False)]
        return adv, stats

    # ------------------------------------------------------------------ update
    def _rows(self, rollouts: Sequence[Rollout]) -> list[tuple[int, int, int]]:
        rows = []
        for i, r in enumerate(rollouts):
            for j, ws in enumerate(r.windows):
                k_all = ws.num_steps
                keep = max(1, int(round(k_all * self.ppo.timestep_fraction)))
                steps = self.rng.permutation(k_all)[:keep] if keep < k_all else np.arange(k_all)
                rows += [(i, j, int(k)) for k in steps]
        return rows

    def _batch(self, rollouts: Sequence[Rollout], adv: Sequence[np.ndarray], rows) -> StepBatch:
        dev = self.device
        ws = [rollouts[i].windows[j] for i, j, _ in rows]
        ks = [k for _, _, k in rows]
        a = [float(adv[i][j] if adv[i].shape[0] > 1 else adv[i][0]) for i, j, _ in rows]
        return StepBatch(
            x_t=torch.stack([w.x_t[k] for w, k in zip(ws, ks, strict=False)]).to(dev),
            x_prev=torch.stack([w.x_prev[k] for w, k in zip(ws, ks, strict=False)]).to(dev),
            cond=torch.stack([w.cond for w in ws]).to(dev),
            generated=torch.stack([w.generated for w in ws]).to(dev),
            t=torch.stack([w.t[k] for w, k in zip(ws, ks, strict=False)]).to(dev),
            a_t=torch.stack([w.a_t[k] for w, k in zip(ws, ks, strict=False)]).to(dev),
            a_prev=torch.stack([w.a_prev[k] for w, k in zip(ws, ks, strict=False)]).to(dev),
            sigma=torch.stack([w.sigma[k] for w, k in zip(ws, ks, strict=False)]).to(dev),
            old_log_prob=torch.stack([w.log_prob[k] for w, k in zip(ws, ks, strict=False)]).to(dev),
            advantage=torch.tensor(a, dtype=torch.float32, device=dev),
        )

    def _minibatches(self, rollouts, rows: Sequence[tuple[int, int, int]]) -> list[list[tuple[int, int, int]]]:
        """Split rows into minibatches of at most ``ppo.minibatch`` rows sharing one window shape."""
        by_shape: dict[tuple, list] = {}
        for row in rows:
            by_shape.setdefault(tuple(rollouts[row[0]].windows[row[1]].x_t.shape[1:]), []).append(row)
        out = []
        for group in by_shape.values():
            out += [group[i : i + self.ppo.minibatch] for i in range(0, len(group), self.ppo.minibatch)]
        return out

    def _allreduce_grads(self) -> None:
        if not self.dist.distributed:
            return
        for p in self.trainable:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            torch_dist.all_reduce(p.grad)
            p.grad /= self.dist.world

    def update(self, rollouts: Sequence[Rollout], adv: Sequence[np.ndarray]) -> dict[str, float]:
        """One PPO update on the recorded steps of ``rollouts``."""
        rows = self._rows(rollouts)
        stats = {k: [] for k in ("loss", "policy_loss", "kl_ref", "approx_kl", "clipfrac", "ratio_dev", "grad_norm")}
        first_dev = 0.0
        n_rows = torch.tensor([len(rows)], dtype=torch.float64)
        if self.dist.distributed:  # a chunk's loss is a mean over every rank's rows
            torch_dist.all_reduce(n_rows)
        for inner in range(self.ppo.inner_epochs):
            order = self.rng.permutation(len(rows))
            chunks = list(np.array_split(order, self.ppo.updates_per_epoch))
            for ci, chunk in enumerate(chunks):
                self.optimizer.zero_grad(set_to_none=True)
                chunk_rows = [rows[x] for x in chunk]
                denom = float(n_rows) / self.ppo.updates_per_epoch
                for mb in self._minibatches(rollouts, chunk_rows):
                    batch = self._batch(rollouts, adv, mb)
                    out = score_steps(self.unet, batch, self.prediction)
                    pg, ratio, clipped = clipped_surrogate(out.log_prob, batch.old_log_prob, batch.advantage,
                                                           self.ppo.clip)
                    loss = pg
                    kl = torch.zeros(())
                    if self.reference is not None:
                        with torch.no_grad():
                            ref_out = network_output(self.reference, batch.x_t, batch.cond, batch.t)
                            ref_mean = ddim_step(ref_out, batch.x_t, batch.a_t, batch.a_prev, batch.sigma,
                                                 prediction=self.prediction, prev_sample=batch.x_prev).mean
                        kl = gaussian_kl(out.mean, ref_mean, out.std, batch.generated).mean()
                        loss = loss + self.ppo.kl_beta * kl
                    (loss * len(mb) / denom * (self.dist.world if self.dist.distributed else 1)).backward()
                    dev = float((ratio.detach() - 1).abs().max())
                    if inner == 0 and ci == 0:
                        first_dev = max(first_dev, dev)
                    lp_diff = (out.log_prob.detach() - batch.old_log_prob)
                    stats["loss"].append(float(loss.detach()))
                    stats["policy_loss"].append(float(pg.detach()))
                    stats["kl_ref"].append(float(kl.detach()))
                    stats["approx_kl"].append(float(0.5 * (lp_diff**2).mean()))
                    stats["clipfrac"].append(float(clipped.float().mean()))
                    stats["ratio_dev"].append(dev)
                self._allreduce_grads()
                if self.ppo.grad_clip > 0:
                    norm = torch.nn.utils.clip_grad_norm_(self.trainable, self.ppo.grad_clip)
                else:
                    norm = torch.sqrt(sum((p.grad.float() ** 2).sum() for p in self.trainable if p.grad is not None))
                stats["grad_norm"].append(float(norm))
                self.optimizer.step()
        out = {k: float(np.mean(v)) if v else 0.0 for k, v in stats.items()}
        out["ratio_dev_max"] = float(np.max(stats["ratio_dev"])) if stats["ratio_dev"] else 0.0
        out["ratio_dev_first"] = first_dev
        out["rows"] = float(len(rows))
        return out

    # ------------------------------------------------------------------ monitoring
    def monitor_stats(self, rollouts: Sequence[Rollout]) -> dict[str, float]:
        lat = np.concatenate([r.latents.reshape(-1) for r in rollouts])
        out = {"saturation/latent": float(np.mean(np.abs(lat) > self.monitor.latent_bound)),
               "saturation/image": float(np.mean(np.concatenate([np.abs(r.volume.reshape(-1)) >= 0.99
                                                                 for r in rollouts])))}
        groups: dict[int, list[np.ndarray]] = {}
        for r in rollouts:
            groups.setdefault(r.group, []).append(r.volume)
        out["diversity/voxel_std"] = float(np.mean([np.std(np.stack(v), axis=0).mean() for v in groups.values()]))
        if self.monitor.diversity:
            out["diversity/ms_ssim"] = group_ms_ssim(list(groups.values()))
        return out

    # ------------------------------------------------------------------ the loop
    def epoch(self, conditions: Sequence[Condition], epoch: int) -> dict[str, float]:
        t0 = time.perf_counter()
        rollouts = self.rollouts(conditions, epoch)
        t_roll = time.perf_counter() - t0
        values = self.rewards.score(rollouts, conditions)
        adv, adv_stats = self.advantages(rollouts, values)
        t1 = time.perf_counter()
        upd = self.update(rollouts, adv)
        log = {"epoch": epoch}
        for name, arr in trajectory_means(values).items():
            log[f"reward/{name}"] = float(arr.mean())
            log[f"reward_std/{name}"] = float(arr.std())
        log.update(adv_stats)
        log.update(upd)
        log.update(self.monitor_stats(rollouts))
        log.update({"time/rollout_s": t_roll, "time/update_s": time.perf_counter() - t1,
                    "time/epoch_s": time.perf_counter() - t0})
        return self._reduce(log)

    def _reduce(self, log: dict[str, float]) -> dict[str, float]:
        """Average the scalar logs over ranks (max for the ratio deviations)."""
        if not self.dist.distributed:
            return log
        keys = sorted(k for k, v in log.items() if isinstance(v, float))
        t = torch.tensor([log[k] for k in keys], dtype=torch.float64)
        mx = t.clone()
        torch_dist.all_reduce(t)
        torch_dist.all_reduce(mx, op=torch_dist.ReduceOp.MAX)
        for i, k in enumerate(keys):
            log[k] = float(mx[i]) if k.startswith("ratio_dev") else float(t[i]) / self.dist.world
        return log

    def trainable_state(self) -> dict[str, torch.Tensor]:
        names = {id(p): n for n, p in self.unet.named_parameters()}
        return {names[id(p)]: p.detach().clone() for p in self.trainable}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        params = dict(self.unet.named_parameters())
        with torch.no_grad():
            for n, v in state.items():
                params[n].copy_(v)

    def fit(self, condition_source: ConditionSource, *, epochs: int | None = None, heldout: HeldOut | None = None,
            eval_every: int = 0, patience: int = 0, restore_best: bool = True,
            on_epoch: Callable[[dict], None] | None = None) -> list[dict]:
        """Train for ``epochs`` (default ``ppo.epochs``); returns the per-epoch logs.

        With ``heldout`` the policy is scored before training, every ``eval_every`` epochs and at the
        end; with ``patience`` > 0 training stops after that many evaluations without improvement;
        with ``restore_best`` the best-scoring weights (possibly the untouched start) are kept.
        """
        epochs = self.ppo.epochs if epochs is None else epochs
        best = best_state = None
        since_best = 0

        def evaluate(epoch: int) -> bool:
            nonlocal best, best_state, since_best
            score = float(heldout(self.bundle))
            improved = best is None or score > best
            if improved:
                best, best_state, since_best = score, self.trainable_state(), 0
            else:
                since_best += 1
            self.history.append({"epoch": epoch, "heldout": score, "best_heldout": best})
            if on_epoch:
                on_epoch(self.history[-1])
            self.log(f"[rl] epoch {epoch}: held-out score {score:.4f} (best {best:.4f})")
            return patience > 0 and since_best >= patience

        if heldout is not None:
            evaluate(0)
        for epoch in range(epochs):
            conds = condition_source(epoch, self.dist.rank, self.dist.world)
            log = self.epoch(conds, epoch)
            self.history.append(log)
            if on_epoch:
                on_epoch(log)
            shown = ("reward/", "kl_ref", "clipfrac", "ratio_dev_first")
            self.log(f"[rl] epoch {epoch + 1}: " + ", ".join(
                f"{k} {v:.4g}" for k, v in log.items() if k.startswith(shown)))
            last = epoch + 1 == epochs
            due = heldout is not None and ((eval_every and (epoch + 1) % eval_every == 0) or last)
            if due and evaluate(epoch + 1) and not last:
                self.log(f"[rl] early stop after epoch {epoch + 1}: no held-out improvement in {patience} evaluations")
                break
        if heldout is not None and restore_best and best_state is not None:
            self.load_trainable_state(best_state)
            self.history.append({"restored_best_heldout": best})
        return self.history


def group_ms_ssim(groups: Sequence[Sequence[np.ndarray]]) -> float:
    """Mean pairwise 3-D MS-SSIM between samples of one condition (lower = more diverse); nan when the
    volumes are too small for MS-SSIM."""
    from napari_gem3d.metrics.similarity import ms_ssim

    vals = []
    for vols in groups:
        unit = [(np.clip(v, -1, 1) + 1) / 2 for v in vols]
        for a in range(len(unit)):
            for b in range(a + 1, len(unit)):
                try:
                    vals.append(ms_ssim(unit[a], unit[b], data_range=1.0)[0])
                except ValueError:
                    return float("nan")
    return float(np.mean(vals)) if vals else float("nan")
