"""Synthetic brain tumours: irregular shape, necrotic core, enhancing rim, surrounding oedema.

Shape: a ball of radius R (mm) whose surface is displaced by smooth random noise (irregular, lobulated);
the core is an inner, separately perturbed ball; oedema reaches 1.5-2.2 R into grey and white matter
only (not CSF, not outside the brain). Appearance is set relative to the subject's own tissue means,
so it follows each volume's contrast: necrotic core ~ CSF, enhancing rim brighter than white matter
(post-contrast T1 look), oedema darker than grey matter. Edges are blended over about one voxel and
the tumour tissue carries multiplicative texture noise, so the insert is not a flat paste.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

OEDEMA, RIM, CORE = 4, 5, 6


def _smooth_noise(shape, spacing, rng, scale_mm: float) -> np.ndarray:
    sigma = [scale_mm / s for s in spacing]
    n = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return n / (n.std() + 1e-8)


def _tissue_means(image: np.ndarray, tissue: np.ndarray) -> dict[int, float]:
    return {k: float(image[tissue == k].mean()) if np.any(tissue == k) else float(image[tissue > 0].mean())
            for k in (1, 2, 3)}


def insert_tumour(image: np.ndarray, tissue: np.ndarray, spacing, rng: np.random.Generator,
                  radius_mm: float | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """One tumour at a random place inside grey/white matter; None if there is no room for it.

    Returns new (image, labels); the inputs are not modified.
    """
    spacing = np.asarray(spacing, float)
    brain = tissue > 0
    parenchyma = np.isin(tissue, (2, 3))
    depth = ndimage.distance_transform_edt(brain, sampling=spacing)
    R = float(radius_mm if radius_mm is not None else rng.uniform(10.0, 20.0))
    candidates = np.argwhere(parenchyma & (depth > 0.9 * R))
    if len(candidates) == 0:
        return None
    centre = candidates[int(rng.integers(len(candidates)))]
    # local box around the centre (oedema reaches 2.2 R)
    reach = np.ceil(3.2 * R / spacing).astype(int) + 2
    lo = np.maximum(centre - reach, 0)
    hi = np.minimum(centre + reach + 1, image.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=False))
    axes = [(np.arange(a, b) - c) * s for a, b, c, s in zip(lo, hi, centre, spacing, strict=False)]
    grids = np.meshgrid(*axes, indexing="ij")
    dist = np.sqrt(sum(g**2 for g in grids))
    shape = dist.shape
    outer = dist + 0.28 * R * _smooth_noise(shape, spacing, rng, 0.5 * R)
    inner = dist + 0.22 * R * _smooth_noise(shape, spacing, rng, 0.4 * R)
    oed = dist + 0.45 * R * _smooth_noise(shape, spacing, rng, 0.8 * R)
    core_frac = rng.uniform(0.35, 0.65)
    b_tissue = tissue[box]
    in_brain = b_tissue > 0
    tumour = (outer < R) & in_brain
    core = tumour & (inner < core_frac * R)
    oedema = (oed < rng.uniform(1.5, 2.2) * R) & np.isin(b_tissue, (2, 3)) & ~tumour

    labels = tissue.copy()
    lb = labels[box]
    lb[oedema] = OEDEMA
    lb[tumour] = RIM
    lb[core] = CORE

    means = _tissue_means(image, tissue)
    target = {
        OEDEMA: means[2] - rng.uniform(0.4, 0.7) * (means[2] - means[1]),
        RIM: means[3] + rng.uniform(0.3, 0.6) * (means[3] - means[1]),
        CORE: means[1] + rng.uniform(0.0, 0.25) * (means[2] - means[1]),
    }
    out = image.astype(np.float32, copy=True)
    ob = out[box]
    texture = 1.0 + 0.06 * _smooth_noise(shape, spacing, rng, 1.5)
    for label in (OEDEMA, RIM, CORE):
        region = (lb == label) if label != RIM else (lb >= RIM)  # core is painted over the rim
        alpha = np.clip(ndimage.gaussian_filter(region.astype(np.float32), 0.7),
                        0.0, 1.0)
        alpha *= in_brain
        if label == OEDEMA:  # oedema is a partial change: the tissue pattern stays faintly visible
            ob[:] = ob + alpha * 0.85 * (target[label] * texture - ob)
        else:
            ob[:] = ob + alpha * (target[label] * texture - ob)
    return out, labels


def add_tumours(image: np.ndarray, tissue: np.ndarray, spacing, rng: np.random.Generator,
                count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` tumours (fewer if the brain has no room left), placed one after another."""
    for _ in range(count):
        free = np.where(np.isin(tissue, (4, 5, 6)), 0, tissue)  # never on top of an earlier tumour
        result = insert_tumour(image, free, spacing, rng)
        if result is None:
            break
        new_image, new_labels = result
        keep = np.isin(tissue, (4, 5, 6))
        new_labels[keep] = tissue[keep]
        new_image[keep] = image[keep]
        image, tissue = new_image, new_labels
    return image, tissue
