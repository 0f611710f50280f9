"""Synthetic (image, mask) cases with awkward geometry for the study, CLI and napari tests."""

from __future__ import annotations

import numpy as np

from napari_gem3d.volume import Volume

# stored axes: 0 -> posterior (1.3 mm), 1 -> superior (2.2 mm), 2 -> left (0.9 mm): anisotropic, not RAS,
# and the model's slice axis (S) is the middle stored axis
AFFINE = np.array(
    [
        [0.0, 0.0, -0.9, 40.0],
        [-1.3, 0.0, 0.0, 30.0],
        [0.0, 2.2, 0.0, -20.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
SHAPE = (22, 26, 30)
TUMOUR = (4, 5, 6)
INTENSITY = {0: 0.0, 1: 300.0, 2: 600.0, 3: 800.0, 4: 700.0, 5: 1000.0, 6: 200.0}


def synthetic_mask(shape=SHAPE, tumour_at=(0.55, 0.5, 0.4), seed: int = 0) -> np.ndarray:
    """demo_labels() values: outside 0, CSF 1, GM 2, WM 3, oedema 4, rim 5, core 6 (uint8)."""
    idx = np.indices(shape).astype(float)
    c = (np.asarray(shape, float) - 1) / 2
    r = np.sqrt(sum(((idx[a] - c[a]) / (shape[a] * 0.45)) ** 2 for a in range(3)))
    mask = np.zeros(shape, np.uint8)
    mask[r < 1.0] = 2
    mask[r < 0.75] = 3
    mask[r < 0.2] = 1
    t = np.asarray(tumour_at) * (np.asarray(shape) - 1)
    rt = np.sqrt(sum(((idx[a] - t[a]) / (shape[a] * 0.16)) ** 2 for a in range(3)))
    mask[(rt < 1.0) & (r < 1.0)] = 4
    mask[(rt < 0.6) & (r < 1.0)] = 5
    mask[(rt < 0.35) & (r < 1.0)] = 6
    return mask


def synthetic_image(mask: np.ndarray, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lut = np.array([INTENSITY[k] for k in range(7)], np.float32) * scale
    return (lut[mask] + rng.normal(0, 20, mask.shape)).astype(np.float32)


def synthetic_case(
    shape=SHAPE, affine=AFFINE, seed: int = 0, tumour_at=(0.55, 0.5, 0.4), scale: float = 1.0
) -> tuple[Volume, Volume]:
    """(image, mask) Volumes sharing one anisotropic, non-RAS geometry."""
    mask = synthetic_mask(shape, tumour_at, seed)
    return Volume(synthetic_image(mask, seed, scale), affine), Volume(mask, affine)
