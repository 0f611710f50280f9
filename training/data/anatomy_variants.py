"""New anatomy from few subjects: a random smooth deformation in millimetres, and a contrast change.

A model trained on three brains learns those three brains: on an unseen one it follows the mask only
coarsely (held-out Colin27's in-plane detail is half the real one's, training subjects keep 0.8 of it).
Each variant here is one subject warped by a random similarity transform (rotation about every axis,
isotropic scale, shift) plus a smooth displacement field, all in physical millimetres (so the 6.5 mm
slices of brain1 and the 2 x 3 mm pixels of the ITK T1 are warped like the 1 mm ones), sampled once with
linear interpolation for the image and nearest neighbour for the labels. The image then gets a random
monotone intensity curve (piecewise linear over its own 1st-99th percentile window, knot heights from a
Dirichlet draw: tissue contrasts are compressed or stretched, the T1 order kept) and a smooth
multiplicative bias field. With three subjects the mask nearly names the subject and with it the
appearance; with their contrasts randomised, the appearance has to be read from the informed slice,
which is what GEM-3D's informed slice is for (a post-contrast scan with little grey/white contrast is
the case it must not paint as a bright template brain). Measured (docs/evidence.md, "Unseen anatomy"): the
warps lower held-out Colin27's stripe index from 1.70 to 1.42; the contrast curve did not make brain1's
generated slices take the informed slice's darker tone.

Variants are pure functions of their generator: the same seed gives the same volume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation


@dataclass(frozen=True)
class VariantRanges:
    rotate_deg: float = 8.0  # about each axis, uniform in [-r, r]
    scale: float = 0.08  # isotropic, uniform in [1 - s, 1 + s]
    shift_mm: float = 4.0
    elastic_mm: float = 3.0  # standard deviation of the displacement, per axis
    elastic_scale_mm: float = 24.0  # its smoothness (Gaussian sigma)
    contrast_knots: int = 5  # pieces of the random monotone intensity curve (0: none)
    contrast_concentration: float = 3.0  # Dirichlet concentration of their heights (large: near identity)
    bias: float = 0.10  # multiplicative field, standard deviation
    bias_scale_mm: float = 50.0


def _smooth_field(shape: tuple[int, ...], spacing: np.ndarray, sigma_mm: float, rng: np.random.Generator,
                  coarse: int = 4) -> np.ndarray:
    """Smooth noise of unit variance at every point: white noise on a coarse grid, Gaussian-smoothed
    (periodically), upsampled. The variance is the filter's (its impulse response's sum of squares), not
    the sample's, so a field smoother than the volume is a near-constant draw, not a blown-up one."""
    small = tuple(max(2, int(np.ceil(n / coarse))) for n in shape)
    sigma = sigma_mm / (np.asarray(spacing, float) * coarse)
    field = ndimage.gaussian_filter(rng.standard_normal(small), sigma=sigma, mode="wrap")
    impulse = np.zeros(small)
    impulse[(0,) * len(small)] = 1.0
    std = float(np.sqrt((ndimage.gaussian_filter(impulse, sigma=sigma, mode="wrap") ** 2).sum()))
    field = ndimage.zoom(field, [n / m for n, m in zip(shape, small, strict=True)], order=1)
    return field / std


@dataclass(frozen=True)
class Warp:
    """One drawn warp: rotation (degrees about x, y, z of the world frame, applied about the volume centre),
    isotropic scale, shift (mm) and the displacement's amplitude (mm; its field comes from ``field_seed``)."""

    rotate_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0
    shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    elastic_mm: float = 0.0
    elastic_scale_mm: float = 24.0
    field_seed: int = 0


def draw_warp(rng: np.random.Generator, ranges: VariantRanges) -> Warp:
    return Warp(rotate_deg=tuple(rng.uniform(-ranges.rotate_deg, ranges.rotate_deg, 3)),
                scale=float(rng.uniform(1 - ranges.scale, 1 + ranges.scale)),
                shift_mm=tuple(rng.uniform(-ranges.shift_mm, ranges.shift_mm, 3)),
                elastic_mm=ranges.elastic_mm, elastic_scale_mm=ranges.elastic_scale_mm,
                field_seed=int(rng.integers(2**31)))


def _spacing(affine: np.ndarray) -> np.ndarray:
    return np.sqrt((affine[:3, :3] ** 2).sum(axis=0))


def warp_coordinates(shape: tuple[int, int, int], affine: np.ndarray, warp: Warp) -> np.ndarray:
    """(3, *shape) voxel coordinates in the source volume of every voxel of the (same-grid) output: the
    output voxel at world point p shows the source at R (p - c) / scale + c - shift + displacement(p)."""
    affine = np.asarray(affine, float)
    idx = np.indices(shape, dtype=np.float64).reshape(3, -1)
    world = affine[:3, :3] @ idx + affine[:3, 3:4]
    centre = affine[:3, :3] @ ((np.asarray(shape, float)[:, None] - 1) / 2) + affine[:3, 3:4]
    rot = Rotation.from_euler("xyz", warp.rotate_deg, degrees=True).as_matrix()
    source = rot @ (world - centre) / warp.scale + centre - np.asarray(warp.shift_mm, float)[:, None]
    if warp.elastic_mm > 0:
        rng = np.random.default_rng(warp.field_seed)
        disp = np.stack([_smooth_field(shape, _spacing(affine), warp.elastic_scale_mm, rng).reshape(-1)
                         for _ in range(3)])
        source = source + warp.elastic_mm * disp
    vox = np.linalg.solve(affine[:3, :3], source - affine[:3, 3:4])
    return vox.reshape(3, *shape)


def random_contrast(image: np.ndarray, low: float, high: float, rng: np.random.Generator, knots: int,
                    concentration: float) -> np.ndarray:
    """A random monotone piecewise-linear curve on [low, high] (end points fixed); below ``low`` unchanged,
    above ``high`` continued with the last piece's slope."""
    xs = np.linspace(0.0, 1.0, knots + 1)
    ys = np.concatenate([[0.0], np.cumsum(rng.dirichlet(np.full(knots, concentration)))])
    unit = (image - low) / (high - low)
    mapped = np.interp(unit, xs, ys)
    last_slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
    mapped = np.where(unit > 1, 1 + (unit - 1) * last_slope, mapped)
    return np.where(unit > 0, low + (high - low) * mapped, image).astype(image.dtype)


def anatomy_variant(image: np.ndarray, labels: np.ndarray, affine: np.ndarray, rng: np.random.Generator,
                    ranges: VariantRanges = VariantRanges()) -> tuple[np.ndarray, np.ndarray]:
    """A warped, re-contrasted copy of (image, labels) on the same grid; the inputs are not modified.

    Outside the source volume the image takes its own minimum and the labels 0 (background)."""
    if image.shape != labels.shape or image.ndim != 3:
        raise ValueError(f"image {image.shape} and labels {labels.shape} must be one 3-D grid")
    coords = warp_coordinates(image.shape, affine, draw_warp(rng, ranges))
    low = float(image.min())
    warped = ndimage.map_coordinates(image.astype(np.float32), coords, order=1, mode="constant", cval=low)
    warped_labels = ndimage.map_coordinates(labels, coords, order=0, mode="constant", cval=0).astype(labels.dtype)
    p1, p99 = np.percentile(warped, (1, 99))
    if p99 > p1 and ranges.contrast_knots > 0:
        warped = random_contrast(warped, p1, p99, rng, ranges.contrast_knots, ranges.contrast_concentration)
    if ranges.bias > 0:
        field = _smooth_field(image.shape, _spacing(np.asarray(affine, float)), ranges.bias_scale_mm, rng)
        warped = low + (warped - low) * np.exp(ranges.bias * field)
    return warped.astype(np.float32), warped_labels
