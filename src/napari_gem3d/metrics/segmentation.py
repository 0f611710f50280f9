"""Segmentation overlap and surface distance per label: Dice and HD95 from MONAI, in millimetres."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _one_hot(pred: np.ndarray, ref: np.ndarray, labels: Sequence[int] | None):
    import torch

    p, r = np.asarray(pred), np.asarray(ref)
    if p.shape != r.shape:
        raise ValueError(f"prediction {p.shape} and reference {r.shape} label volumes differ in shape")
    if labels is None:
        labels = sorted(int(v) for v in np.union1d(np.unique(p), np.unique(r)) if v != 0)
    labels = [int(v) for v in labels]
    if not labels:
        raise ValueError("no foreground labels to score (both volumes are all 0); pass labels=[...]")
    po = torch.from_numpy(np.stack([p == v for v in labels])[None].astype(np.float32))
    ro = torch.from_numpy(np.stack([r == v for v in labels])[None].astype(np.float32))
    return po, ro, labels


def dice_per_label(
    pred: np.ndarray, ref: np.ndarray, labels: Sequence[int] | None = None
) -> dict[int, float]:
    """Dice of each label (default: every non-zero label present in either).

    A label absent from the reference scores 1 if the prediction has none of it too, else 0 (MONAI
    ``ignore_empty=False``).
    """
    from monai.metrics import compute_dice

    po, ro, labels = _one_hot(pred, ref, labels)
    values = compute_dice(po, ro, include_background=True, ignore_empty=False)[0]
    return {lab: float(v) for lab, v in zip(labels, values, strict=True)}


def hd95_per_label(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float] | None = None,
    labels: Sequence[int] | None = None,
) -> dict[int, float]:
    """95th-percentile symmetric Hausdorff distance of each label in the units of ``spacing`` (mm).

    nan when the label is empty in the prediction or the reference (MONAI's convention gives inf/nan).
    """
    from monai.metrics import compute_hausdorff_distance

    po, ro, labels = _one_hot(pred, ref, labels)
    sp = None if spacing is None else [float(s) for s in spacing]
    import warnings

    with warnings.catch_warnings():  # MONAI warns for empty labels; we report nan for them
        warnings.simplefilter("ignore")
        values = compute_hausdorff_distance(po, ro, include_background=True, percentile=95, spacing=sp)[0]
    return {
        lab: (float(v) if np.isfinite(float(v)) else float("nan"))
        for lab, v in zip(labels, values, strict=True)
    }
