"""The coordinate head's target: each voxel's normalised position in the model frame, in [-1, 1]^3.

The model frame is the preprocessed case: cropped to its label bounding box (plus a margin), resampled
to ``image_size`` in-plane, slice axis first. So (slice, row, column) / (shape - 1) is a position relative
to the brain's bounding box: a crude affine normalisation of anatomy, *not* MNI coordinates (only the
MNI152 subject lies in MNI space; the others are not registered). The slice coordinate cannot be read off
a 2-D slice's pixel grid: the network has to recognise it from the anatomy.
"""

from __future__ import annotations

import torch


def slice_coordinates(slice_index: torch.Tensor, num_slices: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 3, H, W) float32: (slice, row, column) positions mapped to [-1, 1] for slices ``slice_index``."""
    b = slice_index.shape[0]
    z = 2.0 * slice_index.float() / (num_slices.float() - 1).clamp(min=1) - 1.0
    rows = torch.linspace(-1.0, 1.0, height)
    cols = torch.linspace(-1.0, 1.0, width)
    return torch.stack([z[:, None, None].expand(b, height, width), rows[None, :, None].expand(b, height, width),
                        cols[None, None, :].expand(b, height, width)], dim=1)
