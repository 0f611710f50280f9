"""Head-like toy volumes with tissue labels (demo_labels values), varied per seed, in [-1, 1]."""

from __future__ import annotations

import numpy as np


def phantom(seed: int, shape=(12, 16, 16)) -> tuple[np.ndarray, np.ndarray]:
    """An ellipsoid with CSF/GM/WM shells and a lesion; intensities and geometry vary with ``seed``.
    The shells change smoothly from slice to slice, so slice order matters."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    c = rng.uniform(-0.1, 0.1, 3)
    scale = rng.uniform(0.85, 1.1, 3)
    r = np.sqrt(((zz - c[0]) / scale[0]) ** 2 + ((yy - c[1]) / scale[1]) ** 2 + ((xx - c[2]) / scale[2]) ** 2)
    mask = np.zeros(shape, np.int64)
    mask[r < 0.95] = 1
    mask[r < 0.8] = 2
    mask[r < 0.5] = 3
    lc = rng.uniform(-0.3, 0.3, 3)
    rl = np.sqrt((zz - lc[0]) ** 2 + (yy - lc[1]) ** 2 + (xx - lc[2]) ** 2)
    mask[rl < 0.45] = 5
    mask[rl < 0.25] = 6
    means = np.array([-1.0, -0.5, 0.1, 0.6, 0.0, 0.9, -0.3]) + rng.normal(0, 0.05, 7)
    image = means[mask] + rng.normal(0, 0.04, shape)
    image[mask == 0] = -1.0
    return np.clip(image, -1, 1).astype(np.float32), mask
