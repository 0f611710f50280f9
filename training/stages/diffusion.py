"""Latent diffusion stages: ``slice``, ``volume-stage1``, ``volume-stage2`` and ``baseline``.

All four regress the schedule's training target (epsilon for the official schedule) of noised VAE
latents (posterior mean x scale_factor; the VAE is frozen). Conditions are concatenated on channels:
``[x_t | mask condition | informed-slice latent]`` for the volume model, ``[x_t | mask condition]`` for
the baseline; the slice model gets only ``x_t`` and its position p = k / Z.

==================  ===========================  ======================  ==================================
stage               network                      timesteps               trainable
==================  ===========================  ======================  ==================================
volume-stage1       volume UNet, temporal=False  one per slice           everything
volume-stage2       volume UNet, temporal=True,  one per window, weight  only temporal layers
                    initialised from stage 1     2000 - t (official)     (``requires_grad`` False elsewhere)
baseline            baseline UNet (temporal)     one per window          everything (or ``trainable:
                                                                          temporal`` after a 2-D stage)
slice               slice UNet                   one per slice           everything
==================  ===========================  ======================  ==================================
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from napari_gem3d.models import build_unet, load_bundle, save_bundle
from napari_gem3d.models.unet import is_temporal_name
from napari_gem3d.sampling.slice_prior import ar1_along_axis0

from ..bundles import record_stage, start_bundle, with_component
from ..data.datasets import SliceDataset, WindowDataset, torch_generator
from ..engine.loop import StepContext, Task
from .common import LatentStore, sample_case, save_val_montage, split_cases, val_case

STAGE_DEFAULTS = {
    # stage: (bundle component, temporal, t sampling, trainable)
    "volume-stage1": ("volume", False, "per_slice", "all"),
    "volume-stage2": ("volume", True, "small_t_bias", "temporal"),
    "baseline": ("baseline", True, "per_window", "all"),
    "slice": ("slice", False, "per_slice", "all"),
}


def small_t_weights(num_timesteps: int) -> torch.Tensor:
    """Official stage-2 timestep distribution: P(t) proportional to 2000 - t (t = 0 .. T-1)."""
    w = 2000.0 - torch.arange(num_timesteps, dtype=torch.float64)
    return w / w.sum()


def draw_timesteps(mode: str, keys: torch.Tensor, frames: int, seed: int, num_timesteps: int) -> torch.Tensor:
    """(B,) or (B, F) int64 timesteps, each sample from its own (seed, step, index) generator."""
    gens = [torch_generator(seed, *k.tolist(), stream=2) for k in keys]
    if mode == "per_slice":
        return torch.stack([torch.randint(0, num_timesteps, (frames,), generator=g) for g in gens])
    if mode == "per_window":
        return torch.stack([torch.randint(0, num_timesteps, (), generator=g) for g in gens])
    if mode == "small_t_bias":
        w = small_t_weights(num_timesteps)
        return torch.stack([torch.multinomial(w, 1, generator=g)[0] for g in gens])
    raise ValueError(f"diffusion.t_sampling must be per_slice, per_window or small_t_bias, got {mode!r}")


def draw_noise(keys: torch.Tensor, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.stack([torch.randn(shape, generator=torch_generator(seed, *k.tolist(), stream=1)) for k in keys])


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    err = (pred.float() - target.float()).pow(2)
    if weight is None:
        return err.mean()
    return (err * weight).sum() / (weight.expand_as(err).sum())


def component_config(current, cfg, component: str, temporal: bool):
    """The UNet config a stage trains: the bundle's, with this stage's ``model.unet`` (volume, baseline) or
    ``model.slice_unet`` (slice) architecture entries applied; channels and kind stay the bundle's."""
    overrides = dict(cfg.model.slice_unet if component == "slice" else cfg.model.unet)
    for fixed in ("in_channels", "out_channels", "temporal", "noise_correlation"):
        overrides.pop(fixed, None)
    if component != "slice":
        overrides["temporal"] = temporal
        overrides["noise_correlation"] = float(cfg.diffusion.slice_noise_correlation)
        if cfg.model.mask_injection:  # the mask channels follow the noisy latent (volume: then the informed latent)
            informed = current.out_channels if component == "volume" else 0
            overrides["mask_injection"] = current.in_channels - current.out_channels - informed
    return dataclasses.replace(current, **overrides)


class DiffusionTask(Task):
    main = "unet"

    def __init__(self, cfg, info):
        super().__init__(cfg, info)
        component, temporal, t_mode, trainable = STAGE_DEFAULTS[cfg.stage]
        d = cfg.diffusion
        self.component = component
        self.t_mode = d.t_sampling or t_mode
        self.trainable = d.trainable or trainable
        if self.trainable not in ("all", "temporal"):
            raise ValueError(f"diffusion.trainable must be all or temporal, got {self.trainable!r}")
        self.bundle = start_bundle(cfg, required=True)
        self.bundle.vae.eval().requires_grad_(False).to(info.device)
        bcfg = self.bundle.config
        self.unet_cfg = component_config(bcfg.unets[component], cfg, component, temporal)
        if temporal and self.t_mode == "per_slice":
            raise ValueError("a temporal UNet needs one timestep per window: t_sampling per_window or small_t_bias")
        if d.slice_noise_correlation and not temporal:
            raise ValueError(f"diffusion.slice_noise_correlation needs a network that sees its frames together; "
                             f"{cfg.stage} trains each slice on its own: set it in volume-stage2 or baseline")
        self.unet = build_unet(self.unet_cfg)
        self._initialise()
        self.train_cases, self.val_cases = split_cases(cfg, bcfg.labels, info)
        self.store = LatentStore(self.bundle, self.train_cases, info.device)
        self.schedule = bcfg.schedule
        self.frames = d.frames or bcfg.window

    def _initialise(self) -> None:
        """Stage 2 (or ``trainable: temporal``): 2-D weights from the earlier bundle, temporal layers at
        their identity/zero init, only the temporal parameters trainable."""
        d = self.cfg.diffusion
        source = None
        if d.init_from is not None:
            source = load_bundle(self.cfg.path(d.init_from)).unets.get(self.component)
        elif self.trainable == "temporal":
            source = self.bundle.unets.get(self.component)
        if source is not None:
            state = source.state_dict()
            own = self.unet.state_dict()
            missing = sorted(set(own) - set(state))
            unexpected = sorted(set(state) - set(own))
            bad = [k for k in missing if not is_temporal_name(k)]
            if unexpected or bad:
                raise ValueError(f"cannot initialise the {self.component} UNet from the earlier bundle: "
                                 f"missing non-temporal {bad[:5]}, unexpected {unexpected[:5]}")
            self.unet.load_state_dict(state, strict=False)
            self.init_report = {"loaded": len(state), "new_temporal": len(missing)}
        else:
            self.init_report = {"loaded": 0}
        if self.trainable == "temporal":
            if not self.unet_cfg.temporal:
                raise ValueError("trainable: temporal needs a temporal UNet")
            for name, p in self.unet.named_parameters():
                p.requires_grad_(is_temporal_name(name))

    def modules(self):
        return {"unet": self.unet}

    def dataset(self):
        d = self.cfg.data
        if self.component == "slice":
            return SliceDataset(self.train_cases, self.cfg.seed, d.flip_lr)
        return WindowDataset(self.train_cases, self.bundle.config.labels, self.frames, self.cfg.seed,
                             global_batch=self.cfg.train.batch_size * self.info.world, informed=d.informed,
                             cross_volume_prob=d.cross_volume_prob, flip_lr=d.flip_lr)

    # ----------------------------------------------------------------------------------- losses
    def _lesion_weight(self, labels: torch.Tensor) -> torch.Tensor | None:
        d = self.cfg.diffusion
        if d.lesion_weight <= 0 or not d.lesion_labels:
            return None
        lesion = torch.isin(labels, torch.tensor(d.lesion_labels, device=labels.device)).float()
        f = self.bundle.codec.downsampling
        frac = F.avg_pool2d(lesion.flatten(0, -3)[:, None], f, f).reshape(*labels.shape[:-2], 1,
                                                                         labels.shape[-2] // f, labels.shape[-1] // f)
        return 1.0 + d.lesion_weight * frac

    def train_step(self, batch, step, ctx: StepContext):
        return self._slice_step(batch, ctx) if self.component == "slice" else self._window_step(batch, ctx)

    def _slice_step(self, batch, ctx):
        x0 = self.store.slices(batch["case"], batch["slice"], batch["flip"])
        noise = draw_noise(batch["key"], tuple(x0.shape[1:]), self.cfg.seed).to(ctx.device)
        t = draw_timesteps("per_window", batch["key"], 1, self.cfg.seed, self.schedule.num_train_timesteps)
        t = t.to(ctx.device)
        xt = self.schedule.add_noise(x0, noise, t)
        with ctx.autocast():
            pred = ctx.model("unet")(xt, t, batch["position"].to(ctx.device))
        loss = weighted_mse(pred, self.schedule.training_target(x0, noise, t, dtype=torch.float32), None)
        ctx.optimize("unet", loss)
        return {"loss/diffusion": loss.detach()}

    def window_inputs(self, batch, ctx) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x0, condition, noise, t) of a window batch: x0 (B, F, C, h, w), condition (B, F, Cc, h, w)."""
        frames = batch["image"].shape[1]
        x0 = self.store.window(batch["case"], batch["z0"], frames, batch["flip"])
        b = x0.shape[0]
        codec = self.bundle.codec
        with torch.no_grad():
            em = batch["encoded_mask"].to(ctx.device).flatten(0, 1)
            mask_lat = codec.mask_condition_latents(em).float().unflatten(0, (b, frames))
            cond = mask_lat
            if self.component == "volume":
                ref = torch.stack([self.store.case(int(c), bool(f))[int(k)] for c, k, f in
                                   zip(batch["informed_case"], batch["informed_slice"], batch["flip"], strict=False)])
                cond = torch.cat([mask_lat, ref[:, None].expand(-1, frames, -1, -1, -1)], dim=2)
        noise = draw_noise(batch["key"], tuple(x0.shape[1:]), self.cfg.seed)
        rho = self.cfg.diffusion.slice_noise_correlation
        if rho:  # the sampler's correlated prior: every frame N(0, I), neighbours correlated rho
            noise = torch.stack([ar1_along_axis0(n, rho) for n in noise])
        noise = noise.to(ctx.device)
        t = draw_timesteps(self.t_mode, batch["key"], frames, self.cfg.seed, self.schedule.num_train_timesteps)
        return x0, cond, noise, t.to(ctx.device)

    def _window_step(self, batch, ctx):
        x0, cond, noise, t = self.window_inputs(batch, ctx)
        b, f = x0.shape[:2]
        t_flat = t.reshape(-1) if t.ndim == 2 else t.repeat_interleave(f)
        xt = self.schedule.add_noise(x0.flatten(0, 1), noise.flatten(0, 1), t_flat).unflatten(0, (b, f))
        target = self.schedule.training_target(x0.flatten(0, 1), noise.flatten(0, 1), t_flat,
                                               dtype=torch.float32).unflatten(0, (b, f))
        with ctx.autocast():
            pred = ctx.model("unet")(torch.cat([xt, cond.to(xt.dtype)], dim=2), t)
        weight = self._lesion_weight(batch["mask"].to(ctx.device))
        loss = weighted_mse(pred, target, weight)
        ctx.optimize("unet", loss)
        return {"loss/diffusion": loss.detach()}

    # ------------------------------------------------------------------------------ validate / export
    def current_bundle(self):
        return with_component(self.bundle, self.component, self.unet, self.unet_cfg)

    def validate(self, step: int, folder: Path, ctx):
        folder.mkdir(parents=True, exist_ok=True)
        case = val_case(self.cfg, self.train_cases, self.val_cases)
        v = self.cfg.val
        with ctx.ema_weights():
            self.unet.eval()
            try:
                bundle = self.current_bundle()
                if self.component == "slice":
                    return self._validate_slices(bundle, case, step, folder)
                mode = "gem3d" if self.component == "volume" else "baseline"
                gen, ref = sample_case(bundle, case, mode=mode, steps=v.steps, eta=v.eta, seed=self.cfg.seed,
                                       device=self.info.device, max_slices=v.max_slices)
            finally:
                self.unet.train()
                self.bundle.vae.eval()
        from napari_gem3d.metrics.similarity import ms_ssim

        real = ref["image"]
        score, _ = ms_ssim((real + 1) / 2, (np.clip(gen, -1, 1) + 1) / 2, data_range=1.0)
        save_val_montage(folder / f"{self.cfg.stage}-{step:07d}.png", case,
                         [("real", real, "image"), ("mask", ref["mask"], "labels"), (mode, gen, "image")],
                         title=f"{self.cfg.stage} step {step}: {case.name}, MS-SSIM {score:.3f}, {v.steps} steps")
        return {"val/ms_ssim": score}

    def _validate_slices(self, bundle, case, step: int, folder: Path) -> dict:
        from napari_gem3d.sampling.informed import generate_informed

        z = case.num_slices
        picks = [int(z * q) for q in (0.2, 0.35, 0.5, 0.65, 0.8)]
        gen = np.stack([generate_informed(bundle, k / z, seed=self.cfg.seed, steps=self.cfg.val.steps,
                                          device=str(self.info.device)).image for k in picks])
        real = np.asarray(case.image)[picks]
        _save_slice_grid(folder / f"slice-{step:07d}.png", real, gen, picks, z, case.name)
        return {}

    def export(self, folder: Path, ctx):
        with ctx.export_weights():
            bundle = record_stage(self.current_bundle(), self.cfg, {
                "component": self.component, "temporal": self.unet_cfg.temporal, "t_sampling": self.t_mode,
                "trainable": self.trainable, "ema": ctx.exports_ema, "init": self.init_report,
                "trainable_parameters": sum(p.numel() for p in self.unet.parameters() if p.requires_grad),
            }, self.train_cases)
            return save_bundle(bundle, folder, overwrite=True, storage=self.cfg.train.storage)


def _save_slice_grid(path: Path, real: np.ndarray, gen: np.ndarray, picks: list[int], z: int, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from napari_gem3d.io import atomic_path

    fig, axes = plt.subplots(2, len(picks), figsize=(2 * len(picks), 4.2), squeeze=False)
    for j, k in enumerate(picks):
        for r, (row, label) in enumerate(((real, "real"), (gen, "generated"))):
            ax = axes[r][j]
            ax.imshow(row[j], cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"p = {k / z:.2f}")
            if j == 0:
                ax.set_ylabel(label)
    fig.suptitle(f"slice model vs {name}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
