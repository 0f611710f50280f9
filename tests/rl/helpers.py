"""Small shared pieces of the RL tests: a random tiny bundle whose network output is not zero."""

from __future__ import annotations

import numpy as np
import torch
from training.rl.rollout import Condition

from napari_gem3d.models import build_bundle
from napari_gem3d.models.presets import small_config
from napari_gem3d.sampling import InformedSlice


def random_bundle(seed: int = 0, size: int = 8, window: int = 4):
    """A tiny random bundle; its zero-initialised output convolution gets random weights so the
    network output (and every gradient) depends on the input."""
    torch.manual_seed(seed)
    bundle = build_bundle(small_config(size, channel_mult=(1,), window=window, with_slice=False))
    with torch.no_grad():
        for p in bundle.volume.out_conv.parameters():
            p.normal_(0.0, 0.05)
    return bundle.to("cpu")


def multiwindow_condition(size: int = 8, slices: int = 9, seed: int = 0) -> Condition:
    """9 slices, window 4: three windows in two rounds (one up, one down), known frames from the true
    informed slice (first window) and from the overlap (later windows)."""
    rng = np.random.default_rng(seed)
    mask = np.full((slices, size, size), 2, np.int64)
    mask[:, 2:6, 2:6] = 5
    image = rng.uniform(-1, 1, (slices, size, size)).astype(np.float32)
    start = slices // 2
    return Condition("multi", mask, start, InformedSlice(image=image[start], is_true_slice=True), image)
