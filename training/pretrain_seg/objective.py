"""The pretraining loss: denoise a slice noised at a random timestep, plus the coordinate regression.

MONAI's ``UNet`` takes no timestep, so the network is noise-level blind (the noise level is visible in
its input); predicting x0 (the default) is well posed without it. Output channel 0 is the denoising
prediction, channels 1-3 (when the coordinate head is on) the voxel coordinates. The network has
``OUTPUT_CHANNELS`` outputs either way: MONAI's top up-layer normalises and activates its output width, so a
1-channel output would squeeze the denoiser through one channel; with the same width the two pretraining
variants differ only in the coordinate loss (the unused channels get no loss).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from napari_gem3d.diffusion.schedule import NoiseSchedule

PREDICTIONS = ("x0", "eps")
OUTPUT_CHANNELS = 8


def pretrain_losses(net: torch.nn.Module, x0: torch.Tensor, coords: torch.Tensor | None, schedule: NoiseSchedule,
                    generator: torch.Generator, *, prediction: str = "x0", coord_weight: float = 1.0,
                    max_timestep: int = 0) -> dict[str, torch.Tensor]:
    """``loss/denoise``, ``loss/coord`` (if ``coords`` is given) and their weighted sum ``loss/total``.

    ``x0`` is (B, C, h, w): one slice (C = 1) or a 2.5-D stack (``slices.stack_neighbours``), all of it
    noised to one level per sample; the denoising target is the middle channel, the slice itself.
    """
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
    b, centre = x0.shape[0], x0.shape[1] // 2
    t_max = max_timestep or schedule.num_train_timesteps
    t = torch.randint(0, t_max, (b,), generator=generator)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    xt = schedule.add_noise(x0, noise, t.to(x0.device))
    out = net(xt)
    target = (x0 if prediction == "x0" else noise)[:, centre : centre + 1]
    losses = {"loss/denoise": F.mse_loss(out[:, :1].float(), target.float())}
    total = losses["loss/denoise"]
    if coords is not None:
        losses["loss/coord"] = F.mse_loss(out[:, 1:4].float(), coords.to(out.device).float())
        total = total + coord_weight * losses["loss/coord"]
    losses["loss/total"] = total
    return losses
