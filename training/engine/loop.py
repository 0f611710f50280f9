"""The step loop every stage shares.

A stage is a :class:`Task`: it names its trainable modules, builds its dataset, computes its losses in
``train_step`` (calling ``ctx.optimize(name, loss)``), validates and exports. The loop owns the rest:
DDP wrapping, AdamW with warm-up, gradient clipping, bf16 autocast on GPU, EMA of the main module,
checkpoints that resume bit-exactly (models, EMA, optimisers, RNG states, step; the data order is a
function of the step), TensorBoard + JSONL logs, tqdm, periodic validation.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ..config import Config
from ..data.datasets import StepBatchSampler, collate
from .checkpoint import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .dist import DistInfo, barrier, mean_across
from .ema import EMA


class Task:
    """Base class of a training stage (see the module docstring)."""

    main = "model"  # the module that gets EMA and is exported

    def __init__(self, cfg: Config, info: DistInfo):
        self.cfg, self.info = cfg, info

    def modules(self) -> dict[str, nn.Module]:
        """Trainable modules by name; each gets an optimiser over its ``requires_grad`` parameters."""
        raise NotImplementedError

    def learning_rates(self) -> dict[str, float]:
        return {}

    def dataset(self):
        raise NotImplementedError

    def train_step(self, batch: dict, step: int, ctx: StepContext) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def validate(self, step: int, folder: Path, ctx: StepContext) -> dict[str, float]:
        return {}

    def export(self, folder: Path, ctx: StepContext) -> Path | None:
        return None


@dataclass
class StepContext:
    cfg: Config
    info: DistInfo
    wrapped: dict[str, nn.Module]
    raw: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    ema: EMA | None
    main: str
    step: int = 0
    grad_norms: dict[str, float] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.info.device

    def model(self, name: str) -> nn.Module:
        """The module to call in training (DDP-wrapped when distributed)."""
        return self.wrapped[name]

    def autocast(self):
        prec = self.cfg.train.precision
        if self.device.type != "cuda" or prec == "fp32":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=torch.bfloat16 if prec == "bf16" else torch.float16)

    def lr(self, base: float) -> float:
        w = self.cfg.train.warmup_steps
        return base * min(1.0, (self.step + 1) / w) if w > 0 else base

    def optimize(self, name: str, loss: torch.Tensor) -> None:
        """zero_grad, backward, clip, step for the optimiser of module ``name``."""
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.raw[name].parameters() if p.requires_grad]
        if self.cfg.train.grad_clip > 0:
            self.grad_norms[name] = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.train.grad_clip))
        for group in opt.param_groups:
            group["lr"] = self.lr(group["initial_lr"])
        opt.step()

    @property
    def exports_ema(self) -> bool:
        return self.ema is not None and self.cfg.train.export_ema

    def export_weights(self):
        """The weights to export: EMA when ``train.export_ema`` (and EMA is on), else the raw ones."""
        return self.ema_weights() if self.exports_ema else contextlib.nullcontext(self.raw[self.main])

    @contextlib.contextmanager
    def ema_weights(self):
        """Temporarily put the EMA weights into the main module (validation, export)."""
        module = self.raw[self.main]
        if self.ema is None:
            yield module
            return
        backup = {n: p.detach().clone() for n, p in module.named_parameters()}
        self.ema.copy_to(module)
        try:
            yield module
        finally:
            with torch.no_grad():
                for n, p in module.named_parameters():
                    p.copy_(backup[n])


def _optimizer(module: nn.Module, lr: float, cfg: Config) -> torch.optim.Optimizer:
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(module).__name__} has no trainable parameters")
    opt = torch.optim.AdamW(params, lr=lr, betas=tuple(cfg.train.betas), weight_decay=cfg.train.weight_decay)
    for g in opt.param_groups:
        g["initial_lr"] = lr
    return opt


class _Logger:
    def __init__(self, folder: Path, enabled: bool):
        self.enabled, self.tb = enabled, None
        if not enabled:
            return
        folder.mkdir(parents=True, exist_ok=True)
        self.jsonl = open(folder / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(folder / "tb"))
        except ImportError:  # tensorboard is in the `train` extra; JSONL logs are always written
            self.tb = None

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self.jsonl.flush()
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            if self.tb is not None:
                self.tb.close()


def run_loop(task: Task, *, progress: bool = True) -> dict[str, Any]:
    """Train ``task`` for ``cfg.train.steps`` steps (resuming if a checkpoint exists); export on rank 0."""
    cfg, info = task.cfg, task.info
    out = cfg.out_dir
    ckpt_dir = out / "checkpoints"
    raw = task.modules()
    for m in raw.values():
        m.to(info.device).train()
    lrs = {name: task.learning_rates().get(name, cfg.train.lr) for name in raw}
    optimizers = {name: _optimizer(m, lrs[name], cfg) for name, m in raw.items()}
    ema = EMA(raw[task.main], cfg.train.ema_decay) if cfg.train.ema_decay > 0 else None
    if info.distributed:
        ids = [info.device.index] if info.device.type == "cuda" else None
        wrapped = {n: DistributedDataParallel(m, device_ids=ids) for n, m in raw.items()}
    else:
        wrapped = dict(raw)
    ctx = StepContext(cfg, info, wrapped, raw, optimizers, ema, task.main)

    start = 0
    latest = latest_checkpoint(ckpt_dir) if cfg.train.resume else None
    if latest is not None:
        state = load_checkpoint(latest)
        for n, m in raw.items():
            m.load_state_dict(state["models"][n])
        for n, o in optimizers.items():
            o.load_state_dict(state["optimizers"][n])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        set_rng_state(state["rng"])
        start = int(state["step"])

    dataset = task.dataset()
    sampler = StepBatchSampler(cfg.train.batch_size, cfg.train.steps, start, info.rank, info.world)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=cfg.data.num_workers,
                        persistent_workers=False)
    logger = _Logger(out, info.is_main)
    bar = None
    if progress and info.is_main:
        from tqdm import tqdm

        bar = tqdm(total=cfg.train.steps, initial=start, desc=cfg.stage, unit="step", dynamic_ncols=True)
    t0, last = time.perf_counter(), {}
    step, done, stopped = start, start, False
    budget = 60.0 * cfg.train.max_minutes
    try:
        for step, batch in enumerate(loader, start=start):
            ctx.step = step
            logs = task.train_step(batch, step, ctx)
            if ema is not None:
                ema.update(raw[task.main])
            done = step + 1
            if done % cfg.train.log_every == 0 or done == cfg.train.steps:
                values = {k: float(mean_across(v.detach().float(), info)) for k, v in logs.items()}
                values.update({f"grad_norm/{k}": v for k, v in ctx.grad_norms.items()})
                values["lr"] = ctx.lr(cfg.train.lr)
                logger.log(done, values)
                last = values
                if bar is not None:
                    bar.set_postfix({k: f"{v:.4g}" for k, v in values.items() if not k.startswith("grad")})
            if bar is not None:
                bar.update(1)
            if cfg.train.ckpt_every and done % cfg.train.ckpt_every == 0 and done < cfg.train.steps:
                _checkpoint(ctx, done, ckpt_dir)
            if (cfg.train.val_every and cfg.val.steps and done % cfg.train.val_every == 0 and done < cfg.train.steps
                    and info.is_main):
                logger.log(done, task.validate(done, out / "val", ctx))
            if budget and done < cfg.train.steps and _out_of_time(t0, budget, info):
                stopped = True
                break
        wall = time.perf_counter() - t0
        end = done if stopped else cfg.train.steps
        _checkpoint(ctx, end, ckpt_dir)
        result: dict[str, Any] = {"steps": end, "resumed_from": start, "wall_s": wall, "last": last}
        if stopped:
            result.update(configured_steps=cfg.train.steps, stopped_by_budget_min=cfg.train.max_minutes)
        if info.is_main:
            result["val"] = task.validate(end, out / "val", ctx) if cfg.val.steps else {}
            logger.log(end, result["val"])
            bundle = task.export(out / "bundle", ctx)
            result["bundle"] = str(bundle) if bundle else None
            (out / "result.json").write_text(json.dumps(result, indent=1, default=str))
        barrier(info)
        return result
    finally:
        if bar is not None:
            bar.close()
        logger.close()


def _out_of_time(t0: float, budget_s: float, info) -> bool:
    """Whether the time budget is spent, agreed by every rank (one small all-reduce; ranks stop together)."""
    over = torch.tensor(float(time.perf_counter() - t0 >= budget_s), device=info.device)
    return bool(mean_across(over, info) > 0)


def _checkpoint(ctx: StepContext, step: int, folder: Path) -> None:
    if ctx.info.is_main:
        state = {
            "models": {n: m.state_dict() for n, m in ctx.raw.items()},
            "optimizers": {n: o.state_dict() for n, o in ctx.optimizers.items()},
            "ema": ctx.ema.state_dict() if ctx.ema is not None else None,
            "rng": rng_state(),
        }
        save_checkpoint(folder, step, state, keep=ctx.cfg.train.keep_checkpoints)
    barrier(ctx.info)
