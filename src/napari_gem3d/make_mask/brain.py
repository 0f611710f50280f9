"""The brain region: deepbet's TorchScript nets, a network-free fallback, or an already stripped image."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ..masks import fill_holes, largest_component
from ..volume import Volume

BRAIN_METHODS = ("auto", "deepbet", "fallback", "none")


def _erode(mask: np.ndarray, r_mm: float, spacing) -> np.ndarray:
    return ndimage.distance_transform_edt(mask, sampling=spacing) > r_mm


def _dilate(mask: np.ndarray, r_mm: float, spacing) -> np.ndarray:
    return ndimage.distance_transform_edt(~mask, sampling=spacing) <= r_mm


def _largest(mask: np.ndarray) -> np.ndarray:
    """Largest component counting edge and corner neighbours as connected (26-connectivity in 3-D)."""
    return largest_component(mask, connectivity=mask.ndim)


def _pad_edges(mask: np.ndarray, r_mm: float, spacing, op) -> np.ndarray:
    """Morphology with the volume padded by r so the edge does not act as background."""
    pad = [int(np.ceil(r_mm / s)) + 1 for s in spacing]
    padded = np.pad(mask, [(p, p) for p in pad], mode="edge")
    out = op(padded, r_mm, spacing)
    return out[tuple(slice(p, p + n) for p, n in zip(pad, mask.shape, strict=True))]


def deepbet_weights() -> tuple[Path, Path] | None:
    """(model.pt, bbox_model.pt) of the installed deepbet wheel, or None when it is not installed."""
    try:
        files = importlib.metadata.files("deepbet") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    found = {}
    for f in files:
        text = str(f).replace("\\", "/")
        for key in ("data/models/model.pt", "data/models/bbox_model.pt"):
            if text.endswith(key):
                path = Path(f.locate())
                if path.is_file():
                    found[key] = path
    if len(found) != 2:
        return None
    return found["data/models/model.pt"], found["data/models/bbox_model.pt"]


def deepbet_version() -> str:
    try:
        return importlib.metadata.version("deepbet")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        return "?"


_DEEPBET_CACHE: dict[str, Any] = {}


def _deepbet_nets(device: str):
    import torch

    if device not in _DEEPBET_CACHE:
        paths = deepbet_weights()
        if paths is None:
            raise ModuleNotFoundError(
                "deepbet is not installed; install it (pip install --no-deps deepbet==1.0.2) or use "
                "--brain fallback")
        _DEEPBET_CACHE[device] = tuple(torch.jit.load(str(p), map_location=device).eval() for p in paths)
    return _DEEPBET_CACHE[device]


def brain_mask_deepbet(image: Volume, *, device: str = "cpu", threshold: float = 0.5) -> np.ndarray:
    """deepbet's brain mask of ``image`` on its own grid (see the module docstring)."""
    import torch
    import torch.nn.functional as F
    from nibabel import orientations as nio

    model, bbox_model = _deepbet_nets(device)
    ornt = nio.ornt_transform(nio.io_orientation(image.affine), nio.axcodes2ornt(("R", "A", "S")))
    x = np.nan_to_num(np.asarray(nio.apply_orientation(np.asarray(image.array, np.float32), ornt), np.float32))
    xt = torch.from_numpy(np.ascontiguousarray(x)).to(device)

    def normalize(t, low, high):
        t = ((t - low) / (high - low)).clamp(0, 1)
        return 0.226 * (t - t.mean()) / t.std().clamp_min(1e-6) + 0.449

    with torch.inference_mode():
        small = F.interpolate(xt[None, None], (128, 128, 128), mode="nearest-exact")[0, 0]
        low, high = small.quantile(0.005), small.quantile(0.995)
        if not high > low:
            raise ValueError("the image is constant: there is no brain to find")
        p_small = bbox_model(normalize(small, low, high)[None, None])[0, 1].cpu().numpy()
        m_small = _largest(p_small > 0.5)
        if not m_small.any():
            raise ValueError("deepbet found no brain in this image; is it a head MR scan? "
                             "Try --brain fallback, or --brain none for a skull-stripped image")
        box = []
        for axis, n in enumerate(x.shape):  # deepbet's bounding box: planes > 2 % brain, 10 % margin
            prof = m_small.mean(axis=tuple(a for a in range(3) if a != axis))
            idx = np.flatnonzero(prof > 0.02)
            if idx.size == 0:
                idx = np.flatnonzero(prof > 0)
            scale = n / 128.0
            centre = scale * (idx.max() + 1 + idx.min()) / 2
            size = scale * (idx.max() + 1 - idx.min()) * 1.2
            centre, size = float(np.round(centre)), float(np.round(size))
            box.append(slice(max(0, int(centre - size / 2)), min(n, int(centre + size / 2))))
        box = tuple(box)
        crop = xt[box]
        big = F.interpolate(crop[None, None], (256, 256, 256), mode="nearest-exact")
        prob = model(normalize(big, low, high))[:, 1:2]
        prob = F.interpolate(prob, tuple(crop.shape), mode="nearest-exact")[0, 0].cpu().numpy()
    mask = np.zeros(x.shape, bool)
    mask[box] = ndimage.binary_fill_holes(_largest(prob > threshold))
    back = nio.ornt_transform(nio.axcodes2ornt(("R", "A", "S")), nio.io_orientation(image.affine))
    return np.asarray(nio.apply_orientation(mask, back), bool)


def brain_mask_fallback(image: Volume, *, deep_mm: float = 15.0, erode_mm: float = 5.0,
                        close_mm: float = 5.0, dark_fraction: float = 0.8) -> np.ndarray:
    """Brain mask without a network (see the module docstring); every size is in mm of the image grid."""
    from skimage.filters import threshold_multiotsu, threshold_otsu

    img = np.nan_to_num(np.asarray(image.array, np.float32))
    spacing = image.spacing
    img = ndimage.gaussian_filter(img, [0.5 / s for s in spacing])  # ~1 mm FWHM against noise
    if not img.max() > img.min():
        raise ValueError("the image is constant: there is no head to find a brain in")
    head = fill_holes(_largest(img > threshold_otsu(img)))
    deep = _erode(head, deep_mm, spacing)  # well inside the skull: mostly brain, so its classes are CSF/GM/WM
    if np.count_nonzero(deep) < 1000:
        deep = head
    dark = float(threshold_multiotsu(img[deep], classes=3)[0])  # CSF | grey matter
    candidates = head & (img > dark_fraction * dark) & (img <= 1.5 * float(np.percentile(img[deep], 99.5)))
    core = _largest(_erode(candidates, erode_mm, spacing))
    if not core.any():
        core = _largest(candidates)
    brain = _largest(_dilate(core, erode_mm, spacing) & candidates)
    brain = _pad_edges(_pad_edges(brain, close_mm, spacing, _dilate), close_mm, spacing, _erode)
    return fill_holes(brain & head)


def brain_mask_stripped(image: Volume) -> np.ndarray:
    """Brain of an already skull-stripped image: the largest non-background component, holes filled."""
    img = np.nan_to_num(np.asarray(image.array, np.float32))
    lo, hi = float(img.min()), float(np.percentile(img, 99))
    fg = img > lo + 0.02 * max(hi - lo, 1e-12)  # above 2 % of the range: CSF is ~25 % of WM in a T1
    if not fg.any():
        raise ValueError("the image has no foreground: there is no brain in it")
    return fill_holes(_largest(fg))
