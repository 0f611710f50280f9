"""DDIM discretisation, per-step coefficient plans and the DDIM step (with an optional Gaussian log-prob).

Conventions follow the official GEM-3D / LDM sampler (``reference-gem3d.md`` section 7):
- "uniform" timesteps {0, c, 2c, ...} + 1 with c = T // S;
- the last step goes to alpha-bar[0] (0.99915), not to 1, so sigma > 0 on every step when eta > 0;
- coefficients are float32 values of the float32 alpha-bar table; sigma is evaluated in float64 on
  those float32 values and then rounded to float32 (bit-identical to the official numbers);
- x0 is not clipped.

The step does no host synchronisation (no ``.item()``, no branching on tensor values), except the
sigma > 0 check made only when a log-prob is requested.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch

from .schedule import PREDICTIONS, NoiseSchedule


def ddim_timesteps(num_steps: int, num_train_timesteps: int = 1000) -> np.ndarray:
    """Ascending DDIM timesteps, official "uniform" rule: c = T // S, {0, c, 2c, ...} + 1.

    When S divides T this is exactly the official array (S = 200: 1, 6, ..., 996). Otherwise the
    official rule would return ceil(T / c) != S steps; we return exactly S steps,
    floor(k * T / S) + 1 for k = 0..S-1, which coincides with the official rule whenever S divides T.
    Requires 1 <= S <= T - 1 (S = T would put the top timestep at T, outside the table).
    """
    for name, value in (("num_steps", num_steps), ("num_train_timesteps", num_train_timesteps)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {value!r}")
    if num_train_timesteps < 2:
        raise ValueError(f"num_train_timesteps must be >= 2, got {num_train_timesteps}")
    if not 1 <= num_steps <= num_train_timesteps - 1:
        raise ValueError(
            f"num_steps must be in [1, {num_train_timesteps - 1}] (the +1 offset of the official "
            f"discretisation leaves no room for {num_train_timesteps} steps), got {num_steps}"
        )
    k = np.arange(num_steps, dtype=np.int64)
    return (k * num_train_timesteps) // num_steps + 1


class StepPlan:
    """What every per-step sampler plan shares: (S,) tensors named in ``STEP_FIELDS`` plus a (S + 1,)
    ``renoise_a``, checked on construction, counted, and moved between devices together."""

    STEP_FIELDS: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        name, n = type(self).__name__, self.t.shape[0]
        for f in self.STEP_FIELDS:
            if tuple(getattr(self, f).shape) != (n,):
                raise ValueError(f"{name}.{f} must have shape ({n},), got {tuple(getattr(self, f).shape)}")
        if tuple(self.renoise_a.shape) != (n + 1,):
            raise ValueError(f"{name}.renoise_a must have shape ({n + 1},), got {tuple(self.renoise_a.shape)}")

    @property
    def num_steps(self) -> int:
        return int(self.t.shape[0])

    def __len__(self) -> int:
        return self.num_steps

    @property
    def device(self) -> torch.device:
        return self.a_t.device

    def to(self, device: torch.device | str):
        """A copy with every tensor on ``device``."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return type(self)(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in values.items()})


@dataclass(frozen=True)
class DDIMPlan(StepPlan):
    """Per-step coefficients in sampling order (step 0 = highest t). All (S,) tensors on one device.

    t:         int64 timestep fed to the model
    t_prev:    int64 next-lower DDIM timestep (0 for the last step)
    a_t:       float32 alpha-bar[t]
    a_prev:    float32 alpha-bar[t_prev] (last step: alpha-bar[0], not 1)
    sigma:     float32 eta * sqrt((1 - a_prev)/(1 - a_t) * (1 - a_t/a_prev))
    renoise_a: (S + 1,) float32 alpha-bar used to re-noise known frames: [0] before the loop,
               [i + 1] after step i. Default: the current level of x (a_t[0], then a_prev[i]).
               ``official_compat``: alpha-bar[T-1] before the loop, alpha-bar[S-1-i] after step i
               (official bugs B1/B2; see :func:`renoise_alpha_cumprod`).
    """

    t: torch.Tensor
    t_prev: torch.Tensor
    a_t: torch.Tensor
    a_prev: torch.Tensor
    sigma: torch.Tensor
    eta: float
    renoise_a: torch.Tensor
    official_compat: bool = False

    STEP_FIELDS = ("t", "t_prev", "a_t", "a_prev", "sigma")

    def coefficients(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(a_t, a_prev, sigma) of step ``i`` as 0-d tensors on the plan's device (no host sync)."""
        return self.a_t[i], self.a_prev[i], self.sigma[i]


def _sigma(a_t: torch.Tensor, a_prev: torch.Tensor, eta: float) -> torch.Tensor:
    """sigma in float64 from the float32 alpha values, rounded to float32 (as the official sampler)."""
    at, ap = a_t.double(), a_prev.double()
    return (eta * torch.sqrt((1.0 - ap) / (1.0 - at) * (1.0 - at / ap))).float()


def renoise_alpha_cumprod(
    schedule: NoiseSchedule, num_steps: int, *, official_compat: bool = False
) -> torch.Tensor:
    """(S + 1,) float32 alpha-bar for re-noising known frames: [0] before the loop, [i + 1] after
    sampling step i (i = 0 is the first, noisiest step; its DDIM index is k = S - 1 - i).

    Corrected (default): the level x is actually at: alpha-bar[t_first] before the loop and
    alpha-bar[t_prev of step i] after step i (= plan.a_prev[i]).
    ``official_compat``: alpha-bar[T - 1] before the loop (B2) and alpha-bar[k] after the step with
    DDIM index k, i.e. the 1000-entry table indexed by the step index (B1).
    """
    ac = schedule.alphas_cumprod_f32
    ts = ddim_timesteps(num_steps, schedule.num_train_timesteps)
    if official_compat:
        idx = np.concatenate([[schedule.num_train_timesteps - 1], np.arange(num_steps - 1, -1, -1)])
    else:
        prev = np.concatenate([[0], ts[:-1]])  # t_prev per ascending DDIM index
        idx = np.concatenate([[ts[-1]], prev[::-1]])
    return ac[torch.from_numpy(idx.astype(np.int64))].clone()


def make_ddim_plan(
    schedule: NoiseSchedule, num_steps: int, eta: float = 1.0, *, official_compat: bool = False
) -> DDIMPlan:
    """The DDIM coefficient table for ``num_steps`` steps (CPU tensors; use ``.to(device)``)."""
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not math.isfinite(eta) or eta < 0:
        raise ValueError(f"eta must be a finite number >= 0, got {eta!r}")
    ts = ddim_timesteps(num_steps, schedule.num_train_timesteps)
    prev = np.concatenate([[0], ts[:-1]])
    t = torch.from_numpy(ts[::-1].copy())
    t_prev = torch.from_numpy(prev[::-1].copy())
    ac = schedule.alphas_cumprod_f32
    a_t, a_prev = ac[t].clone(), ac[t_prev].clone()
    return DDIMPlan(
        t=t,
        t_prev=t_prev,
        a_t=a_t,
        a_prev=a_prev,
        sigma=_sigma(a_t, a_prev, float(eta)),
        eta=float(eta),
        renoise_a=renoise_alpha_cumprod(schedule, num_steps, official_compat=official_compat),
        official_compat=bool(official_compat),
    )


@dataclass
class StepOutput:
    """Result of :func:`ddim_step`.

    x_prev:   the next latent: the sample in x_t.dtype, or ``prev_sample`` itself when scoring
    pred_x0:  float32 predicted x0 (clipped if ``clip_x0``)
    mean:     float32 mean of p(x_prev | x_t)
    std:      float32 sigma, shaped to broadcast against x_t (0-d or (B, 1, ...)); a CPU 0-d tensor when
              sigma was a python float or CPU 0-d tensor (pass plan tensors on x's device to avoid this)
    log_prob: float32 (B,) mean Gaussian log-density of x_prev, or None
    """

    x_prev: torch.Tensor
    pred_x0: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    log_prob: torch.Tensor | None = None


_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _coef(value: float | torch.Tensor, x: torch.Tensor, name: str) -> torch.Tensor:
    """A float32 coefficient broadcastable against x: python float / 0-d -> 0-d, (B,) -> (B, 1, ...)."""
    if not isinstance(value, torch.Tensor):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a float or a tensor, got {type(value).__name__}")
        return torch.tensor(float(value), dtype=torch.float32)  # CPU 0-d: acts as a scalar on any device
    if value.ndim == 0:  # a CPU 0-d tensor works as a scalar with x on any device
        device = value.device if value.device.type == "cpu" else x.device
        return value.to(device=device, dtype=torch.float32)
    if value.ndim == 1 and value.shape[0] == x.shape[0]:
        return value.to(device=x.device, dtype=torch.float32).reshape((-1,) + (1,) * (x.ndim - 1))
    raise ValueError(
        f"{name} must be a float, a 0-d tensor or a (B,) tensor with B = x_t.shape[0] = {x.shape[0]}, "
        f"got shape {tuple(value.shape)}"
    )


def ddim_step(
    model_output: torch.Tensor,
    x_t: torch.Tensor,
    a_t: float | torch.Tensor,
    a_prev: float | torch.Tensor,
    sigma: float | torch.Tensor,
    *,
    prediction: str = "eps",
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    prev_sample: torch.Tensor | None = None,
    frame_mask: torch.Tensor | None = None,
    return_log_prob: bool = False,
    clip_x0: float | None = None,
) -> StepOutput:
    """One DDIM step x_t -> x_prev, all arithmetic in float32.

    x0 = (x_t - sqrt(1-a_t) eps)/sqrt(a_t) (eps), sqrt(a_t) x_t - sqrt(1-a_t) v (v), or the output (x0);
    mean = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps;  x_prev = mean + sigma z.

    x_t: (B, C, H, W) or (B, F, C, H, W). a_t, a_prev, sigma: floats, 0-d or (B,) tensors.
    noise: explicit z; else z ~ N(0, 1) from ``generator`` on x_t's device (float32).
    prev_sample: score this x_prev instead of sampling (RL log-prob recomputation); returned as given.
    frame_mask: (B, F) bool for 5-D x_t, True = frame generated by the policy; the log-prob is the mean
        over those frames only (a sample with no policy frame gets log-prob 0).
    return_log_prob: also return the mean log N(x_prev; mean, sigma^2) over non-batch dims (float32;
        computed on x_prev as returned, i.e. after the cast to x_t.dtype, so sampling and re-scoring
        agree exactly). Raises ValueError if sigma is not > 0 everywhere (this check syncs).
    clip_x0: clamp x0 to [-clip_x0, clip_x0] and re-derive eps from it (off by default, as official).
    """
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; use one of {PREDICTIONS}")
    if model_output.shape != x_t.shape:
        raise ValueError(f"model_output shape {tuple(model_output.shape)} != x_t shape {tuple(x_t.shape)}")
    if x_t.ndim not in (4, 5):
        raise ValueError(f"x_t must be 4-D (B,C,H,W) or 5-D (B,F,C,H,W), got shape {tuple(x_t.shape)}")
    if noise is not None and prev_sample is not None:
        raise ValueError("pass either noise (to sample) or prev_sample (to score), not both")
    for name, tensor in (("noise", noise), ("prev_sample", prev_sample)):
        if tensor is not None and tensor.shape != x_t.shape:
            raise ValueError(f"{name} shape {tuple(tensor.shape)} != x_t shape {tuple(x_t.shape)}")
    if frame_mask is not None:
        if x_t.ndim != 5:
            raise ValueError("frame_mask needs 5-D x_t (B, F, C, H, W)")
        if frame_mask.dtype != torch.bool or tuple(frame_mask.shape) != tuple(x_t.shape[:2]):
            raise ValueError(
                f"frame_mask must be a bool tensor of shape (B, F) = {tuple(x_t.shape[:2])}, "
                f"got {frame_mask.dtype} {tuple(frame_mask.shape)}"
            )

    at = _coef(a_t, x_t, "a_t")
    ap = _coef(a_prev, x_t, "a_prev")
    sg = _coef(sigma, x_t, "sigma")
    if return_log_prob and not bool((sg > 0).all()):
        raise ValueError(
            "log_prob requested on a step with sigma == 0 (eta = 0, or a_prev = 1): the Gaussian density "
            "is degenerate. Use eta > 0 with a_prev = alpha_bar[0] on the last step (make_ddim_plan does), "
            "or leave such steps out of the log-prob."
        )

    x = x_t.float()
    out = model_output.float()
    sqrt_at = at.sqrt()
    sqrt_1m_at = (1.0 - at).sqrt()
    if prediction == "eps":
        eps = out
        x0 = (x - sqrt_1m_at * eps) / sqrt_at
    elif prediction == "v":
        x0 = sqrt_at * x - sqrt_1m_at * out
        eps = sqrt_1m_at * x + sqrt_at * out
    else:
        x0 = out
        eps = (x - sqrt_at * x0) / sqrt_1m_at
    if clip_x0 is not None:
        x0 = x0.clamp(-clip_x0, clip_x0)
        eps = (x - sqrt_at * x0) / sqrt_1m_at

    dir_xt = (1.0 - ap - sg**2).clamp_min(0.0).sqrt() * eps
    mean = ap.sqrt() * x0 + dir_xt

    if prev_sample is not None:
        x_prev = prev_sample
    else:
        if noise is None:
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=torch.float32)
        else:
            z = noise.to(device=x.device, dtype=torch.float32)
        x_prev = (mean + sg * z).to(x_t.dtype)

    log_prob = None
    if return_log_prob:
        var = sg**2
        lp = -((x_prev.float() - mean) ** 2) / (2.0 * var) - sg.log() - _HALF_LOG_2PI
        if frame_mask is None:
            log_prob = lp.mean(dim=tuple(range(1, lp.ndim)))
        else:
            per_frame = lp.mean(dim=(2, 3, 4))  # (B, F): every frame has the same C*H*W elements
            m = frame_mask.to(device=per_frame.device, dtype=per_frame.dtype)
            log_prob = (per_frame * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)

    return StepOutput(x_prev=x_prev, pred_x0=x0, mean=mean, std=sg, log_prob=log_prob)
