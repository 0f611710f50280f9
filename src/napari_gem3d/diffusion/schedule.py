"""Noise schedules: the beta / alpha-bar tables and the forward process q(x_t | x_0).

The official GEM-3D schedule (``NoiseSchedule()``, the default) is what LDM code calls ``"linear"`` and
other libraries call "scaled linear": betas = linspace(sqrt(0.00085), sqrt(0.012), 1000) ** 2, built in
float64. At run time the official code uses float32 copies of the float64 tables; the ``*_f32``
properties reproduce those buffers bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from typing import Any, Literal, get_args

import numpy as np
import torch

ScheduleKind = Literal["scaled_linear", "linear", "cosine"]
Prediction = Literal["eps", "v", "x0"]
SCHEDULE_KINDS: tuple[str, ...] = get_args(ScheduleKind)
PREDICTIONS: tuple[str, ...] = get_args(Prediction)


@dataclass(frozen=True)
class NoiseSchedule:
    """A discrete diffusion noise schedule and the model's prediction target.

    kind:
        ``"scaled_linear"`` (official GEM-3D / LDM "linear"): betas = linspace(sqrt(b0), sqrt(b1), T)**2;
        ``"linear"``: betas = linspace(b0, b1, T);
        ``"cosine"``: Nichol & Dhariwal (2021), alpha_bar(t) = cos(((t/T + s)/(1 + s)) * pi/2)**2
        normalised by alpha_bar(0), betas clipped at 0.999 (``beta_start``/``beta_end`` unused).
    prediction: what the network outputs: ``"eps"`` (official), ``"v"`` or ``"x0"``.

    Tables are cached on first use; do not modify them in place.
    """

    kind: ScheduleKind = "scaled_linear"
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    prediction: Prediction = "eps"
    cosine_s: float = 0.008

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(f"unknown schedule kind {self.kind!r}; use one of {SCHEDULE_KINDS}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {self.prediction!r}; use one of {PREDICTIONS}")
        t = self.num_train_timesteps
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 2:
            raise ValueError(f"num_train_timesteps must be an integer >= 2, got {t!r}")
        for name in ("beta_start", "beta_end", "cosine_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.kind != "cosine" and not 0.0 < self.beta_start <= self.beta_end < 1.0:
            raise ValueError(
                f"need 0 < beta_start <= beta_end < 1, got beta_start={self.beta_start}, "
                f"beta_end={self.beta_end}"
            )
        if self.kind == "cosine" and self.cosine_s <= 0.0:
            raise ValueError(f"cosine_s must be > 0, got {self.cosine_s}")

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of the fields (inverse of :meth:`from_dict`)."""
        d = asdict(self)
        d["num_train_timesteps"] = int(d["num_train_timesteps"])
        for name in ("beta_start", "beta_end", "cosine_s"):
            d[name] = float(d[name])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NoiseSchedule:
        """Build from :meth:`to_dict` output; unknown keys raise ``ValueError``."""
        if not isinstance(d, dict):
            raise TypeError(f"NoiseSchedule.from_dict expects a dict, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown NoiseSchedule keys {unknown}; allowed keys are {sorted(known)}")
        return cls(**d)

    # ------------------------------------------------------------------ tables (float64 numpy)
    @cached_property
    def betas(self) -> np.ndarray:
        """(T,) float64 betas (read-only)."""
        T = self.num_train_timesteps
        if self.kind == "scaled_linear":
            # torch.linspace in float64 reproduces the official table bit for bit.
            b = torch.linspace(self.beta_start**0.5, self.beta_end**0.5, T, dtype=torch.float64) ** 2
            betas = b.numpy()
        elif self.kind == "linear":
            betas = torch.linspace(self.beta_start, self.beta_end, T, dtype=torch.float64).numpy()
        else:
            s = self.cosine_s
            steps = np.arange(T + 1, dtype=np.float64) / T
            f = np.cos((steps + s) / (1.0 + s) * (math.pi / 2.0)) ** 2
            alpha_bar = f / f[0]
            betas = np.clip(1.0 - alpha_bar[1:] / alpha_bar[:-1], 0.0, 0.999)
        betas = np.ascontiguousarray(betas, dtype=np.float64)
        betas.setflags(write=False)
        return betas

    @cached_property
    def alphas_cumprod(self) -> np.ndarray:
        """(T,) float64 alpha-bar = cumprod(1 - betas) (read-only)."""
        ac = np.cumprod(1.0 - self.betas)
        ac.setflags(write=False)
        return ac

    # ------------------------------------------------------------------ run-time tables (float32 torch)
    @cached_property
    def alphas_cumprod_f32(self) -> torch.Tensor:
        """(T,) float32 alpha-bar, exactly the official ``alphas_cumprod`` buffer (CPU)."""
        return torch.tensor(self.alphas_cumprod, dtype=torch.float32)

    @cached_property
    def sqrt_alphas_cumprod_f32(self) -> torch.Tensor:
        """(T,) float32 sqrt(alpha-bar) taken in float64, as the official ``sqrt_alphas_cumprod`` buffer."""
        return torch.tensor(np.sqrt(self.alphas_cumprod), dtype=torch.float32)

    @cached_property
    def sqrt_one_minus_alphas_cumprod_f32(self) -> torch.Tensor:
        """(T,) float32 sqrt(1 - alpha-bar) taken in float64, as the official buffer of that name."""
        return torch.tensor(np.sqrt(1.0 - self.alphas_cumprod), dtype=torch.float32)

    @cached_property
    def _device_tables(self) -> dict[tuple[str, str], torch.Tensor]:
        return {}

    def _table(self, name: str, device: torch.device) -> torch.Tensor:
        key = (name, str(device))
        table = self._device_tables.get(key)
        if table is None:
            table = getattr(self, name).to(device)
            self._device_tables[key] = table
        return table

    # ------------------------------------------------------------------ forward process
    def _coefficients(self, t: torch.Tensor | int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sqrt(abar_t), sqrt(1 - abar_t) as float32, shaped to broadcast against x."""
        t = torch.as_tensor(t, device=x.device)
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            raise TypeError(f"timesteps t must be an integer tensor, got dtype {t.dtype}")
        if t.ndim > 1 or (t.ndim == 1 and t.shape[0] != x.shape[0]):
            raise ValueError(
                f"timesteps t must be a scalar or of shape (B,) with B = x.shape[0] = {x.shape[0]}, "
                f"got shape {tuple(t.shape)}"
            )
        in_range = t.device.type != "cpu" or t.numel() == 0  # range-checked on CPU only (no device sync)
        if not in_range and (int(t.min()) < 0 or int(t.max()) >= self.num_train_timesteps):
            raise ValueError(f"timesteps must lie in [0, {self.num_train_timesteps - 1}], got {t.tolist()}")
        t = t.long()
        shape = (-1,) + (1,) * (x.ndim - 1) if t.ndim == 1 else ()
        sa = self._table("sqrt_alphas_cumprod_f32", x.device)[t].reshape(shape)
        s1a = self._table("sqrt_one_minus_alphas_cumprod_f32", x.device)[t].reshape(shape)
        return sa, s1a

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, computed in float32, returned in x0.dtype.

        ``t``: integer tensor of shape (B,) (broadcast over the remaining dims) or a scalar.
        """
        if noise.shape != x0.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} != x0 shape {tuple(x0.shape)}")
        sa, s1a = self._coefficients(t, x0)
        return (sa * x0.float() + s1a * noise.float()).to(x0.dtype)

    def training_target(
        self,
        x0: torch.Tensor,
        noise: torch.Tensor,
        t: torch.Tensor | int,
        *,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """The regression target for ``prediction``: eps -> noise, x0 -> x0,
        v -> sqrt(abar_t) noise - sqrt(1 - abar_t) x0. Float32 arithmetic; returned in ``dtype``
        (default x0.dtype; pass ``torch.float32`` for a full-precision loss)."""
        if noise.shape != x0.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} != x0 shape {tuple(x0.shape)}")
        dtype = x0.dtype if dtype is None else dtype
        if self.prediction == "eps":
            return noise.to(dtype)
        if self.prediction == "x0":
            return x0.to(dtype)
        sa, s1a = self._coefficients(t, x0)
        return (sa * noise.float() - s1a * x0.float()).to(dtype)


OFFICIAL_SCHEDULE = NoiseSchedule()
"""The GEM-3D / LDM schedule: scaled-linear 0.00085..0.012, 1000 steps, eps-prediction."""
