"""One RL run from a config: cases -> critics -> held-out "before" -> PPO -> "after" -> bundle + report.

Writes ``OUT/critics/`` (unless ``reward.critics`` names trained ones), ``OUT/metrics.jsonl`` (+ TensorBoard
when installed), ``OUT/bundle/`` (LoRA merged into the weights) and ``OUT/report.json``.
Under ``torchrun`` every rank rolls out its own conditions and gradients are averaged over ranks;
rank 0 trains the critics, evaluates and writes the outputs.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from napari_gem3d.models import ModelBundle, load_bundle, save_bundle

from ..engine.dist import DistInfo, barrier, init_distributed, shutdown
from ..engine.loop import _Logger as MetricsLogger
from .config import RLConfig
from .data import centre_conditions, random_conditions
from .evaluate import compare, curve_point, evaluate_model, generate_eval, heldout_score, score_eval
from .lora import merge_lora
from .rewards.components import Coherence3D, IntensityStats, MaskDice, Realism2D, RewardSet, StatsReference
from .rewards.critics import CriticSet, CriticSpec
from .rewards.train import CriticTraining, train_critics
from .trainer import DistState, RLTrainer

COMPONENTS = ("realism2d", "coherence3d", "dice", "stats")


def model_path(cfg: RLConfig) -> Path:
    if cfg.model.bundle:
        return cfg.path(cfg.model.bundle)
    from napari_gem3d import demo_model_path

    path = demo_model_path()
    if not (path / "config.json").is_file():
        raise OSError(f"no model.bundle given and the bundled demo model is missing at {path}: train it with "
                      "`python -m training.recipes.demo --out runs/demo --install`, or set model.bundle")
    return path


def load_cases(cfg: RLConfig, bundle: ModelBundle, info: DistInfo):
    """(train, held-out) cached cases via the training package's data section."""
    from ..config import config_from_dict
    from ..data.preprocess import prepare_cases

    if not cfg.data.get("sources"):
        raise ValueError("the RL config needs data.sources (the real cases for critics and conditions)")
    tcfg = config_from_dict({"out": str(cfg.out_dir), "data": dict(cfg.data)}, stage="volume-stage2",
                            base_dir=cfg.base_dir)
    if tuple(bundle.config.image_size) != (tcfg.data.image_size,) * 2:
        raise ValueError(f"data.image_size {tcfg.data.image_size} does not match the model's grid "
                         f"{tuple(bundle.config.image_size)}; use the data settings the model was trained with")
    if info.is_main:
        cases = prepare_cases(tcfg, bundle.config.labels)
    barrier(info)
    if not info.is_main:
        cases = prepare_cases(tcfg, bundle.config.labels)
    val_names = set(tcfg.data.val_cases)
    train = [c for c in cases if c.name not in val_names]
    val = [c for c in cases if c.name in val_names]
    if not train:
        raise ValueError("every case is held out (data.val_cases); nothing to draw RL conditions from")
    if not val:
        raise ValueError("the RL evaluation needs held-out cases: list them in data.val_cases")
    return train, val


def build_critics(cfg: RLConfig, bundle: ModelBundle, train_cases, val_cases, device, log=print) -> CriticSet:
    """Train the critics on real sub-volumes vs base-model samples (rank 0) and save them."""
    c = cfg.critics
    length = cfg.rollout.slices
    rng = np.random.default_rng([cfg.seed, 77])
    n_real = c.real_volumes or len(train_cases)
    real = [(cond.image, cond.mask) for cond in
            (centre_conditions(train_cases, length) if n_real == len(train_cases) and not c.real_volumes
             else random_conditions(train_cases, n_real, length, rng))]
    conds = random_conditions(train_cases, c.generated_volumes, length, rng)
    t0 = time.perf_counter()
    gen = [r.volume for r in generate_eval(bundle, conds, seeds=1, steps=cfg.rollout.steps, eta=cfg.rollout.eta,
                                           device=str(device))]
    log(f"[critics] {len(gen)} base-model volumes in {time.perf_counter() - t0:.0f} s")
    val_conds = centre_conditions(val_cases, length)
    val_gen = [r.volume for r in generate_eval(bundle, val_conds, seeds=1, steps=cfg.rollout.steps,
                                               eta=cfg.rollout.eta, device=str(device))]
    labels = sorted(bundle.config.labels.names)
    spec = CriticSpec(image_size=tuple(bundle.config.image_size), depth=c.depth, num_classes=max(labels) + 1,
                      width=c.width, seed=cfg.seed)
    critics = train_critics(real, gen, spec, CriticTraining(c.steps, c.batch_size, c.lr, cfg.seed), labels=labels,
                            device=device, val_pairs=[(v.image, v.mask) for v in val_conds], val_generated=val_gen,
                            log=log)
    critics.info["base_model_volumes_s"] = time.perf_counter() - t0
    return critics


def reward_set(cfg: RLConfig, critics: CriticSet, *, all_components: bool = False) -> RewardSet:
    weights = {k: float(v) for k, v in cfg.reward.weights.items()}
    unknown = sorted(set(weights) - set(COMPONENTS))
    if unknown:
        raise ValueError(f"reward.weights names unknown components {unknown}; known: {list(COMPONENTS)}")
    makers = {
        "realism2d": lambda: Realism2D(critics, per_window=cfg.reward.per_window_2d),
        "coherence3d": lambda: Coherence3D(critics),
        "dice": lambda: MaskDice(critics),
        "stats": lambda: IntensityStats(StatsReference.from_dict(critics.info["stats_reference"])),
    }
    names = COMPONENTS if all_components else [k for k in COMPONENTS if weights.get(k, 0.0)]
    return RewardSet([makers[k]() for k in names], {k: weights.get(k, 0.0) for k in names})


def export(bundle: ModelBundle, cfg: RLConfig, folder: Path, provenance: dict) -> Path:
    merge_lora(bundle.volume)
    prov = dict(bundle.config.provenance)
    training = dict(prov.get("training", {}))
    training["rl"] = provenance
    prov["training"] = training
    config = dataclasses.replace(bundle.config, name=bundle.config.name + cfg.model.name_suffix, provenance=prov)
    out = ModelBundle(config, bundle.vae, dict(bundle.unets))
    return save_bundle(out, folder, overwrite=True)


def run_rl(cfg: RLConfig, *, log=print) -> dict:
    """The whole run; returns the report (also written to OUT/report.json on rank 0)."""
    t_start = time.perf_counter()
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    info = init_distributed(cfg.train.device)
    out = cfg.out_dir
    try:
        torch.manual_seed(cfg.seed + info.rank)
        path = model_path(cfg)
        bundle = load_bundle(path, device=info.device)
        train_cases, val_cases = load_cases(cfg, bundle, info)
        timing = {}
        critics_dir = cfg.path(cfg.reward.critics) if cfg.reward.critics else out / "critics"
        if not cfg.reward.critics and info.is_main:
            t0 = time.perf_counter()
            build_critics(cfg, bundle, train_cases, val_cases, info.device, log).save(critics_dir)
            timing["critics_s"] = time.perf_counter() - t0
        barrier(info)
        critics = CriticSet.load(critics_dir, device=info.device)
        rewards = reward_set(cfg, critics)
        report_rewards = reward_set(cfg, critics, all_components=True)
        heldout_conds = centre_conditions(val_cases[: cfg.eval.max_conditions], cfg.eval.slices or cfg.rollout.slices)
        ev = dict(seeds=cfg.eval.seeds, steps=cfg.rollout.steps, eta=cfg.rollout.eta, device=str(info.device))

        before = None
        if info.is_main:
            t0 = time.perf_counter()
            before = evaluate_model(bundle, heldout_conds, report_rewards, critics["heldout2d"], fid=cfg.eval.fid, **ev)
            timing["eval_before_s"] = time.perf_counter() - t0
            log(f"[rl] before: {json.dumps(before, default=str)}")

        logger = MetricsLogger(out, info.is_main)
        trainer = RLTrainer(bundle, rewards, rollout=cfg.rollout, ppo=cfg.ppo, params=cfg.params,
                            monitor=cfg.monitor, seed=cfg.seed, device=str(info.device),
                            dist=DistState(info.rank, info.world), log=log if info.is_main else (lambda s: None))
        per_rank = max(1, cfg.rollout.conditions // info.world)

        def conditions(epoch: int, rank: int, world: int):
            rng = np.random.default_rng([cfg.seed, epoch, rank, 0xC0])
            return random_conditions(train_cases, per_rank, cfg.rollout.slices, rng, cfg.rollout.start)

        heldout_rollout_conds = heldout_conds

        curve: list[dict] = []  # the held-out reward at each evaluation, against the rollouts trained on
        per_epoch = per_rank * info.world * cfg.rollout.group_size

        def heldout(b: ModelBundle) -> float:  # every rank computes it (same seeds), so they agree on stopping
            rollouts = generate_eval(b, heldout_rollout_conds, **ev)
            if info.is_main:
                now = score_eval(rollouts, heldout_conds, report_rewards, critics["heldout2d"], fid=False)
                epoch = sum(1 for h in trainer.history if "loss" in h)
                curve.append(curve_point(before, now, dict(report_rewards.weights), epoch=epoch,
                                         rollouts=epoch * per_epoch))
                log(f"[rl] held-out curve: {json.dumps(curve[-1])}")
            return heldout_score(critics["heldout2d"], rollouts)

        step = {"n": 0}

        def on_epoch(values: dict) -> None:
            step["n"] += 1
            logger.log(step["n"], {k: float(v) for k, v in values.items() if isinstance(v, (int, float))})

        t0 = time.perf_counter()
        history = trainer.fit(conditions, heldout=heldout, eval_every=cfg.eval.every, patience=cfg.eval.patience,
                              restore_best=cfg.eval.restore_best, on_epoch=on_epoch)
        timing["rl_s"] = time.perf_counter() - t0
        logger.close()
        report: dict = {}
        if info.is_main:
            t0 = time.perf_counter()
            after = evaluate_model(bundle, heldout_conds, report_rewards, critics["heldout2d"], fid=cfg.eval.fid, **ev)
            timing["eval_after_s"] = time.perf_counter() - t0
            epochs_run = sum(1 for h in history if "reward/" + next(iter(rewards.components)) in h)
            prov = {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "base_model": str(path),
                    "base_model_hash": bundle.model_hash, "epochs": epochs_run, "seed": cfg.seed,
                    "params": dataclasses.asdict(cfg.params), "ppo": dataclasses.asdict(cfg.ppo),
                    "reward_weights": dict(rewards.weights), "note": "reward design is ours (training/rl/README.md)"}
            bundle_dir = export(bundle, cfg, out / "bundle", prov)
            timing["total_s"] = time.perf_counter() - t_start
            report = {
                "model": {"base": str(path), "fine_tuned": str(bundle_dir)},
                "heldout_conditions": [c.name for c in heldout_conds],
                "samples_per_condition": cfg.eval.seeds,
                "before": before, "after": after,
                "comparison": compare(before, after, dict(report_rewards.weights)),
                "critics": critics.info,
                "training": {"epochs_run": epochs_run, "world_size": info.world,
                             "last_epoch": next((h for h in reversed(history) if "epoch" in h and "loss" in h), {}),
                             "heldout_curve": [h for h in history if "heldout" in h or "restored_best_heldout" in h],
                             "heldout_reward_curve": curve},
                "timing_s": timing,
                "config": cfg.to_dict(),
            }
            tmp = out / "report.json.tmp"
            tmp.write_text(json.dumps(report, indent=1, default=_json_default))
            tmp.replace(out / "report.json")
            log(f"[rl] wrote {out / 'report.json'} and {bundle_dir} in {timing['total_s']:.0f} s")
        barrier(info)
        return report
    finally:
        shutdown(info)


def _json_default(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)
