"""The pretraining as a :class:`~training.engine.loop.Task`: the shared loop gives it checkpoints, resume,
EMA, DDP and logs; ``export`` writes the encoder (EMA weights when ``train.export_ema``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from napari_gem3d.diffusion.schedule import NoiseSchedule

from ..bundles import label_spec
from ..data.datasets import SliceDataset, torch_generator
from ..engine.loop import StepContext, Task
from ..stages.common import split_cases
from .coordinates import slice_coordinates
from .network import save_encoder, segmentation_unet
from .objective import OUTPUT_CHANNELS, pretrain_losses
from .slices import channels, neighbour_index


class PretrainSegTask(Task):
    main = "net"

    def __init__(self, cfg, info):
        super().__init__(cfg, info)
        self.opts = cfg.pretrain
        self.cases, _ = split_cases(cfg, label_spec(self.opts.labels), info)  # data.val_cases stay unseen
        self.slices = torch.tensor([c.num_slices for c in self.cases])
        self.schedule = NoiseSchedule(**self.opts.schedule)
        self.net = segmentation_unet(OUTPUT_CHANNELS, in_channels=channels(self.opts.context))

    def modules(self):
        return {"net": self.net}

    def dataset(self):
        return SliceDataset(self.cases, self.cfg.seed, flip_lr=0.0)  # no flips: they would mirror the coordinates

    def train_step(self, batch: dict, step: int, ctx: StepContext) -> dict[str, torch.Tensor]:
        x0 = batch["image"]
        if self.opts.context:  # 2.5-D: the slice's neighbours from its case, the slice in the middle
            x0 = torch.from_numpy(np.stack([
                np.asarray(self.cases[int(c)].image)[neighbour_index(self.cases[int(c)].num_slices,
                                                                     self.opts.context)[int(z)]]
                for c, z in zip(batch["case"], batch["slice"], strict=True)]))
        x0 = x0.to(ctx.device)
        coords = None
        if self.opts.coordinate_head:
            coords = slice_coordinates(batch["slice"], self.slices[batch["case"]], x0.shape[-2], x0.shape[-1])
        gen = torch_generator(self.cfg.seed, step, self.info.rank, stream=3)
        with ctx.autocast():
            losses = pretrain_losses(ctx.model("net"), x0, coords, self.schedule, gen,
                                     prediction=self.opts.prediction, coord_weight=self.opts.coord_weight,
                                     max_timestep=self.opts.max_timestep)
        ctx.optimize("net", losses["loss/total"])
        return losses

    def export(self, folder: Path, ctx: StepContext) -> Path:
        meta = {"objective": "denoising diffusion" + (" + coordinate regression" if self.opts.coordinate_head else ""),
                "context": self.opts.context, "in_channels": channels(self.opts.context),
                "prediction": self.opts.prediction, "coord_weight": self.opts.coord_weight,
                "schedule": self.schedule.to_dict(), "steps": self.cfg.train.steps, "ema": ctx.exports_ema,
                "cases": [c.name for c in self.cases]}
        with ctx.export_weights() as net:
            save_encoder(net, folder, meta)
        return folder
