"""2.5-D input: each slice with its neighbours as channels, the same for pretraining and the segmenter.

``context`` k gives 2k + 1 channels (slices z - k .. z + k); at the volume's ends the end slice is repeated,
so every slice has a full stack. k = 0 is the plain 2-D input.
"""

from __future__ import annotations

import numpy as np


def neighbour_index(num_slices: int, context: int) -> np.ndarray:
    """(Z, 2k + 1) slice indices: row z is z - k .. z + k clipped to the volume."""
    offsets = np.arange(-context, context + 1)
    return np.clip(np.arange(num_slices)[:, None] + offsets[None, :], 0, num_slices - 1)


def stack_neighbours(volume: np.ndarray, context: int) -> np.ndarray:
    """(Z, h, w) -> (Z, 2k + 1, h, w): each slice's stack, the slice itself in the middle channel."""
    volume = np.asarray(volume)
    return volume[neighbour_index(volume.shape[0], context)]


def channels(context: int) -> int:
    if context < 0:
        raise ValueError(f"context must be >= 0 slices on each side, got {context}")
    return 2 * context + 1
