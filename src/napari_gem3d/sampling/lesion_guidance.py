"""Lesion guidance: make the network draw each of a mask's lesion labels as strongly as asked.

The demo network draws lesions fainter than they are: on brain1 through make-mask its enhancing lesion came
out +0.73 / +0.30 white-matter SDs above white matter against the real +3.4 (docs/make-mask.md). Guidance in
the manner of classifier-free guidance (Ho & Salimans 2022) and its composable form (Liu et al. 2022), with
*counterfactual masks* as the reference conditions instead of an empty one, so the network needs no condition
dropout in training. For each lesion label ``l`` in a window, the reference mask is the mask with ``l``'s voxels
given their nearest other label (an enhancing rim becomes the core and oedema or tissue around it, a necrotic
core becomes the rim around it), and the step uses

    out + (w - 1) * sum_l (out - out_without_l)

so each label's own effect on the output is ``w`` times as strong: a necrotic core is pushed away from the rim
around it, not only the tumour away from healthy tissue (that single healthy reference brightened the dark core
with the rim, docs/make-mask.md). ``w = 1`` is the unguided output exactly; a window without lesion voxels runs
the network once, unguided (it differs from an unguided run only through the guided slices it continues from).
One more network pass per lesion label present in a window.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..lesions import delete

if TYPE_CHECKING:
    import torch


def reference_masks(mask: np.ndarray, lesion_labels: tuple[int, ...]) -> dict[int, np.ndarray]:
    """For each of ``lesion_labels`` present in ``mask`` (Z, h, w): the mask with that label's voxels given their
    nearest other label (in voxels of the grid given). Empty when the mask holds no lesion label. The input is
    not modified."""
    mask = np.asarray(mask)
    return {int(v): delete(mask, (int(v),)).mask for v in lesion_labels if np.any(mask == v)}


def label_slices(mask: np.ndarray, labels) -> dict[int, np.ndarray]:
    """For each label: (Z,) bool, which slices of ``mask`` hold it."""
    return {int(v): (np.asarray(mask) == v).any(axis=(1, 2)) for v in labels}


def guide(out: torch.Tensor, references: list[torch.Tensor], scale: float) -> torch.Tensor:
    """``out + (scale - 1) * sum(out - r for r in references)``: each reference's difference, ``scale`` times."""
    guided = out.clone()
    for r in references:
        guided += (scale - 1.0) * (out - r)
    return guided
