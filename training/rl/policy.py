"""The policy side of PPO: which weights train, and the log-probability of recorded steps.

A recorded step is scored again with the library's DDIM step
(``napari_gem3d.diffusion.ddim_step(..., prev_sample=x_prev, frame_mask=generated, return_log_prob=True)``)
on the network output for the recorded ``x_t`` and conditioning, called exactly as the sampler calls
it (``unet(cat([x_t, cond], dim=2), t)`` in float32). With the weights unchanged the ratio is 1.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from napari_gem3d.diffusion import StepOutput, ddim_step

from .lora import DEFAULT_TARGETS, add_lora

TRAINABLE_MODES = ("lora", "temporal", "all")


@dataclass
class StepBatch:
    """A minibatch of recorded steps (all tensors on one device, N rows, F frames each)."""

    x_t: torch.Tensor  # (N, F, C, h, w)
    x_prev: torch.Tensor  # (N, F, C, h, w)
    cond: torch.Tensor  # (N, F, Cc, h, w)
    generated: torch.Tensor  # (N, F) bool
    t: torch.Tensor  # (N,) int64
    a_t: torch.Tensor  # (N,)
    a_prev: torch.Tensor  # (N,)
    sigma: torch.Tensor  # (N,)
    old_log_prob: torch.Tensor  # (N,)
    advantage: torch.Tensor  # (N,)

    def __len__(self) -> int:
        return int(self.t.shape[0])


def network_output(unet: nn.Module, x_t: torch.Tensor, cond: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The sampler's call of the volume UNet (``propagate.generate``'s ``model_fn``), in float32."""
    return unet(torch.cat([x_t, cond.to(x_t.dtype)], dim=2), t).float()


def score_steps(unet: nn.Module, batch: StepBatch, prediction: str = "eps") -> StepOutput:
    """Mean, std and log-probability of the recorded actions under ``unet`` (with gradients)."""
    out = network_output(unet, batch.x_t, batch.cond, batch.t)
    return ddim_step(out, batch.x_t, batch.a_t, batch.a_prev, batch.sigma, prediction=prediction,
                     prev_sample=batch.x_prev, frame_mask=batch.generated, return_log_prob=True)


def gaussian_kl(mean: torch.Tensor, mean_ref: torch.Tensor, std: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
    """Flow-GRPO's per-step KL between N(mean, std^2) and N(mean_ref, std^2): mean((mu - mu_ref)^2) / (2 std^2),
    the mean taken over the generated frames only. (N,)"""
    per_frame = ((mean - mean_ref) ** 2).mean(dim=(2, 3, 4))  # (N, F)
    m = generated.to(per_frame.dtype)
    msq = (per_frame * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
    var = (std.reshape(std.shape[0], -1)[:, 0] ** 2) if std.ndim else std**2
    return msq / (2.0 * var)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A frozen evaluation-mode copy (the KL reference, taken before any adapter is added)."""
    ref = copy.deepcopy(module).eval()
    ref.requires_grad_(False)
    return ref


def set_trainable(unet: nn.Module, mode: str, *, lora_rank: int = 4, lora_alpha: float = 4.0,
                  lora_targets: str = DEFAULT_TARGETS) -> list[nn.Parameter]:
    """Make only the chosen weights trainable and return them.

    ``lora``: adapters on ``lora_targets`` (attention projections + temporal convolutions by default);
    ``temporal``: the stage-2 set ``VolumeUNet.temporal_parameters()``; ``all``: every weight.
    """
    if mode not in TRAINABLE_MODES:
        raise ValueError(f"params.mode must be one of {TRAINABLE_MODES}, got {mode!r}")
    if mode == "lora":
        add_lora(unet, lora_targets, lora_rank, lora_alpha)
        params = [p for n, p in unet.named_parameters() if "lora_" in n]
    elif mode == "temporal":
        if not hasattr(unet, "temporal_parameters"):
            raise ValueError("params.mode 'temporal' needs a VolumeUNet (temporal_parameters())")
        unet.requires_grad_(False)
        params = list(unet.temporal_parameters())
        for p in params:
            p.requires_grad_(True)
    else:
        unet.requires_grad_(True)
        params = list(unet.parameters())
    if not params:
        raise ValueError(f"params.mode {mode!r} selects no parameter of this network")
    return params
