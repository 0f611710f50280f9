"""Paired volume similarity: MS-SSIM, SSIM and PSNR in 3-D, from MONAI, on an explicit intensity range.

Data range
    MONAI's metrics take ``data_range`` / ``max_val``; the caller must put both volumes on one scale.
    :func:`unit_range_pair` does it the way :func:`compare_volumes` uses: the *real* volume's window
    (percentile 0.5-99.5 by default) maps both volumes to [0, 1], clipped, and ``data_range`` is 1.

MS-SSIM on short volumes
    MONAI raises unless, on every axis, ``size // (len(weights) - 1) ** 2 >= kernel_size``, and the
    coarsest scale (``size / 2 ** (len(weights) - 1)``) must still hold one kernel. :func:`ms_ssim_config`
    keeps as many of the standard five scales as possible (the finest first) and, per axis, the largest
    odd kernel up to 11 that fits (at least 5: a 3-voxel Gaussian window
    estimates local statistics too poorly); when scales are dropped the remaining weights are
    renormalised to sum to 1. The chosen configuration is returned with every value
    (``MSSSIMConfig.describe()``), because MS-SSIM values from different configurations do not compare.
    Examples: 176^3 and larger -> the MONAI default (5 scales, kernel 11); 240x240x155 -> 5 scales,
    kernel 11x11x9; 64^3 -> 4 scales, kernel 7; 64x64x25 -> 3 scales, kernel 11x11x5.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..volume import FittedNorm, IntensityNorm

#: The standard MS-SSIM scale weights (Wang et al. 2003; MONAI's default).
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
DEFAULT_NORM = IntensityNorm("percentile", 0.5, 99.5)


@dataclass(frozen=True)
class MSSSIMConfig:
    """MS-SSIM parameters that fit one volume shape."""

    kernel_size: tuple[int, ...]  # per axis, odd
    weights: tuple[float, ...]  # one per scale, finest first
    kernel_sigma: float = 1.5
    adapted: bool = False  # differs from MONAI's default (5 scales, kernel 11)

    @property
    def scales(self) -> int:
        return len(self.weights)

    def describe(self) -> str:
        kernel = "x".join(str(k) for k in self.kernel_size)
        note = ", adapted to the volume size" if self.adapted else ""
        scales = f"{self.scales} scale" + ("s" if self.scales > 1 else "")
        return f"{scales}, gaussian kernel {kernel} (sigma {self.kernel_sigma}){note}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kernel_size": list(self.kernel_size),
            "weights": list(self.weights),
            "kernel_sigma": self.kernel_sigma,
            "adapted": self.adapted,
        }


def _coarsest_divisor(scales: int) -> int:
    """Both MONAI's size check and the real down-sampling (2 ** (scales - 1)) must leave one kernel."""
    return max(1, (scales - 1) ** 2, 2 ** (scales - 1))


def _largest_odd(limit: int) -> int:
    return limit if limit % 2 else limit - 1


def ms_ssim_config(
    shape: tuple[int, ...],
    *,
    max_kernel: int = 11,
    min_kernel: int = 5,
    weights: tuple[float, ...] = MS_SSIM_WEIGHTS,
) -> MSSSIMConfig:
    """The MS-SSIM configuration for ``shape``: most scales first, then the largest odd kernel per axis."""
    if max_kernel < min_kernel or min_kernel < 1 or max_kernel % 2 == 0:
        raise ValueError(f"need odd max_kernel >= min_kernel >= 1, got max {max_kernel}, min {min_kernel}")
    for scales in range(len(weights), 0, -1):
        div = _coarsest_divisor(scales)
        kernel = tuple(_largest_odd(min(max_kernel, int(n) // div)) for n in shape)
        if all(k >= min_kernel for k in kernel):
            w = np.asarray(weights[:scales], dtype=np.float64)
            w = tuple(float(v) for v in w / w.sum()) if scales < len(weights) else tuple(weights)
            adapted = scales < len(weights) or any(k != max_kernel for k in kernel)
            return MSSSIMConfig(kernel_size=kernel, weights=w, adapted=adapted)
    raise ValueError(
        f"volume of shape {tuple(shape)} is too small for SSIM: every axis needs at least {min_kernel} voxels"
    )


def _as_batch(array: np.ndarray, device: str):
    import torch

    a = np.asarray(array, dtype=np.float32)
    if a.ndim != 3:
        raise ValueError(f"expected a 3-D volume, got shape {a.shape}")
    return torch.from_numpy(np.ascontiguousarray(a))[None, None].to(device)


def _check_pair(real: np.ndarray, generated: np.ndarray) -> None:
    if np.shape(real) != np.shape(generated):
        raise ValueError(
            f"real {np.shape(real)} and generated {np.shape(generated)} volumes differ in shape; paired "
            "metrics "
            "need one geometry (write the generated volume in the real volume's geometry, e.g. gem3d sample)"
        )


def ms_ssim(
    real: np.ndarray,
    generated: np.ndarray,
    *,
    data_range: float,
    config: MSSSIMConfig | None = None,
    device: str = "cpu",
) -> tuple[float, MSSSIMConfig]:
    """3-D MS-SSIM (MONAI ``MultiScaleSSIMMetric``) of two volumes on one scale of width ``data_range``."""
    from monai.metrics import MultiScaleSSIMMetric

    _check_pair(real, generated)
    config = config or ms_ssim_config(np.shape(real))
    metric = MultiScaleSSIMMetric(
        spatial_dims=3,
        data_range=float(data_range),
        kernel_size=config.kernel_size,
        kernel_sigma=config.kernel_sigma,
        weights=config.weights,
    )
    value = metric(_as_batch(generated, device), _as_batch(real, device))
    return float(value.reshape(-1)[0]), config


def ssim(real: np.ndarray, generated: np.ndarray, *, data_range: float, device: str = "cpu") -> float:
    """3-D SSIM (MONAI ``SSIMMetric``), window 11 or the largest odd size that fits each axis."""
    from monai.metrics import SSIMMetric

    _check_pair(real, generated)
    win = tuple(_largest_odd(min(11, int(n))) for n in np.shape(real))
    metric = SSIMMetric(spatial_dims=3, data_range=float(data_range), win_size=win)
    return float(metric(_as_batch(generated, device), _as_batch(real, device)).reshape(-1)[0])


def psnr(real: np.ndarray, generated: np.ndarray, *, data_range: float, device: str = "cpu") -> float:
    """PSNR in dB (MONAI ``PSNRMetric``, ``max_val=data_range``); ``inf`` for identical volumes."""
    from monai.metrics import PSNRMetric

    _check_pair(real, generated)
    value = PSNRMetric(max_val=float(data_range))(_as_batch(generated, device), _as_batch(real, device))
    return float(value.reshape(-1)[0])


def to_unit_range(array: np.ndarray, window: FittedNorm) -> np.ndarray:
    """Map ``window`` [lo, hi] to [0, 1], clipped (float32)."""
    x = (np.asarray(array, dtype=np.float64) - window.lo) / (window.hi - window.lo)
    return np.clip(np.nan_to_num(x, nan=0.0), 0.0, 1.0).astype(np.float32)


def unit_range_pair(
    real: np.ndarray, generated: np.ndarray, norm: IntensityNorm = DEFAULT_NORM
) -> tuple[np.ndarray, np.ndarray, FittedNorm]:
    """Both volumes on [0, 1] through the window fitted on the *real* volume (so data_range = 1)."""
    window = norm.fit(np.asarray(real, dtype=np.float32))
    return to_unit_range(real, window), to_unit_range(generated, window), window


def compare_volumes(
    real: np.ndarray, generated: np.ndarray, *, norm: IntensityNorm = DEFAULT_NORM, device: str = "cpu"
) -> dict[str, Any]:
    """MS-SSIM, SSIM and PSNR of a real/generated pair on the real volume's [0, 1] window."""
    r, g, window = unit_range_pair(real, generated, norm)
    value, config = ms_ssim(r, g, data_range=1.0, device=device)
    return {
        "ms_ssim": value,
        "ssim": ssim(r, g, data_range=1.0, device=device),
        "psnr_db": psnr(r, g, data_range=1.0, device=device),
        "ms_ssim_config": config.describe(),
        "data_range": f"real {norm.kind} window [{window.lo:.4g}, {window.hi:.4g}] -> [0, 1], data_range 1",
    }
