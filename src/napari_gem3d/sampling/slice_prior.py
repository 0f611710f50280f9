"""The noise prior along the slices: AR(1) noise between neighbouring slices (frames), in two spatial bands.

Every slice's noise stays N(0, I). Neighbouring slices are correlated ``rho`` in the fine band and ``coarse``
in the coarse band: the mean of each 2 x 2 latent block (:func:`block_mean`, an orthogonal projection, so
the two bands are independent Gaussians whose covariances add up to I). A coarse band that changes more
slowly than the fine one lets neighbouring slices agree on brightness and large shapes while their detail
still differs (measured: fewer slice-to-slice bands at equal or better fidelity, docs/evidence.md).
``coarse == rho`` is the plain AR(1) field, draw for draw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .request import COARSE_BLOCK as BLOCK  # side of the latent blocks whose mean is the coarse band


def ar1_along_axis0(z: torch.Tensor, rho: float) -> torch.Tensor:
    """Standard-normal ``z`` made AR(1) along axis 0: each entry N(0, 1), neighbours correlated ``rho``."""
    out = torch.empty_like(z)
    out[0] = z[0]
    fresh = float(np.sqrt(1.0 - rho * rho))
    for k in range(1, z.shape[0]):
        out[k] = rho * out[k - 1] + fresh * z[k]
    return out


def ar1_conditional_fill(values: torch.Tensor, fixed: torch.Tensor, rho: float, z: torch.Tensor) -> torch.Tensor:
    """A draw of the free frames of an AR(1) sequence (correlation ``rho``, each frame N(0, I)) given its
    ``fixed`` frames: ``values`` (F, ...) holds the fixed frames' values, ``fixed`` (F,) bool says which,
    ``z`` (free frames, ...) standard normal. Returns the free frames' values in frame order.

    Frames are drawn left to right from the exact Gaussian conditional on the frame before (drawn or fixed)
    and the next fixed frame m steps on (the Markov property makes the others irrelevant):
    mean = rho (1 - rho^(2(m-1))) / (1 - rho^(2m)) left + rho^(m-1) (1 - rho^2) / (1 - rho^(2m)) right,
    variance = (1 - rho^2) (1 - rho^(2(m-1))) / (1 - rho^(2m)); one side missing: N(rho left, 1 - rho^2)
    or N(rho^m right, 1 - rho^(2m)); no fixed frame at all: z made AR(1).
    """
    frames = values.shape[0]
    fixed_at = [f for f in range(frames) if bool(fixed[f])]
    if not fixed_at:
        return ar1_along_axis0(z, rho)
    out = values.float().clone()
    k = 0
    for f in range(frames):
        if bool(fixed[f]):
            continue
        right = next((r for r in fixed_at if r > f), None)
        left = out[f - 1] if f > 0 else None
        if left is None:  # only a fixed frame above: N(rho^m right, 1 - rho^2m)
            m = right - f
            mean, var = rho**m * out[right], 1.0 - rho ** (2 * m)
        elif right is None:
            mean, var = rho * left, 1.0 - rho * rho
        else:
            m = right - (f - 1)
            denom = 1.0 - rho ** (2 * m)
            mean = (rho * (1.0 - rho ** (2 * (m - 1))) * left + rho ** (m - 1) * (1.0 - rho * rho) * out[right]) / denom
            var = (1.0 - rho * rho) * (1.0 - rho ** (2 * (m - 1))) / denom
        out[f] = mean + float(np.sqrt(var)) * z[k].float()
        k += 1
    return out[~fixed.to(torch.bool).cpu()]


def block_mean(z: torch.Tensor, block: int = BLOCK) -> torch.Tensor:
    """The coarse band of ``z`` (..., H, W): each ``block`` x ``block`` block replaced by its mean (an
    orthogonal projection). H and W must be multiples of ``block``."""
    h, w = z.shape[-2:]
    if h % block or w % block:
        raise ValueError(f"the coarse band needs latent slices divisible by {block}, got {h}x{w}")
    flat = z.reshape(-1, 1, h, w)
    means = F.avg_pool2d(flat.float(), block)
    return means.repeat_interleave(block, dim=-2).repeat_interleave(block, dim=-1).reshape(z.shape).to(z.dtype)


@dataclass(frozen=True)
class SliceNoisePrior:
    """Neighbouring-slice correlation ``rho`` of the fine band and ``coarse`` of the 2 x 2 block means."""

    rho: float
    coarse: float

    def __post_init__(self):
        for name in ("rho", "coarse"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"slice-noise {name} correlation must be in [0, 1), got {value!r}")

    @property
    def two_band(self) -> bool:
        return self.coarse != self.rho

    def correlate(self, z: torch.Tensor) -> torch.Tensor:
        """Standard-normal ``z`` (frames first) made correlated along the frames by this prior."""
        if not self.two_band:
            return ar1_along_axis0(z, self.rho)
        low = block_mean(z)
        return ar1_along_axis0(low, self.coarse) + ar1_along_axis0(z - low, self.rho)

    def fill(self, values: torch.Tensor, fixed: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The free frames drawn from this prior's exact conditional given the ``fixed`` frames' ``values``
        (each band conditioned on its own part: the bands are independent)."""
        if not self.two_band:
            return ar1_conditional_fill(values, fixed, self.rho, z)
        low_v, low_z = block_mean(values), block_mean(z)
        return (ar1_conditional_fill(low_v, fixed, self.coarse, low_z)
                + ar1_conditional_fill(values - low_v, fixed, self.rho, z - low_z))
