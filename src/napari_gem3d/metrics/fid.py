"""Fréchet distances over axial, coronal and sagittal slices (FID-A/C/S) and over whole volumes (FID-3D).

Views
    Each volume is reoriented exactly (a flip/transpose, from its affine) with the model-grid machinery of
    :mod:`napari_gem3d.volume`: axial = slices along S, coronal = along A, sagittal = along R, so the three
    views mean the same anatomy whatever the file's orientation. Each slice is fitted into the extractor's
    ``input_size`` square (aspect ratio kept, padded with the background) and the volume's own
    0.5-99.5 percentile window maps it to [0, 1]. Every slice is used (``stride`` subsamples them).

Distance
    MONAI's ``FIDMetric`` on the two feature matrices. When there are fewer samples than features the
    features are first rotated onto an orthonormal basis of the span of all samples: the Fréchet distance
    is invariant under that isometry (both means and covariances live in the span), so the value is the
    same and the matrix square root is much smaller. Tiny negative values from round-off are reported as 0.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from ..volume import IntensityNorm, Volume, model_grid, to_model
from .similarity import DEFAULT_NORM, to_unit_range

#: view name -> model-grid slice axis
VIEWS = {"axial": "S", "coronal": "A", "sagittal": "R"}
#: view name -> column name in reports
FID_NAMES = {"axial": "FID-A", "coronal": "FID-C", "sagittal": "FID-S"}


def view_slices(
    volume: Volume, view: str, size: int, *, stride: int = 1, norm: IntensityNorm = DEFAULT_NORM
) -> np.ndarray:
    """(N, size, size) float32 slices of one view in [0, 1], every ``stride``-th slice."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {tuple(VIEWS)}, got {view!r}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    window = norm.fit(np.asarray(volume.array, dtype=np.float32))
    grid = model_grid(volume, size, VIEWS[view])
    slices = to_model(volume, grid, "image", pad_value=window.lo)[::stride]
    return to_unit_range(slices, window)


def frechet_distance(real: np.ndarray, generated: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two (N, F) feature sets (MONAI ``FIDMetric``)."""
    import torch
    from monai.metrics import FIDMetric

    a, b = np.asarray(real, dtype=np.float64), np.asarray(generated, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need two (N, F) feature matrices with one F, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"a Fréchet distance needs at least 2 samples per set, got {len(a)} and {len(b)}")
    if a.shape[1] == 1:  # MONAI's covariance squeezes 1 feature to a scalar; a zero feature changes nothing
        a, b = np.pad(a, ((0, 0), (0, 1))), np.pad(b, ((0, 0), (0, 1)))
    both = np.concatenate([a, b])
    if len(both) < both.shape[1]:  # exact: rotate onto the span of the samples
        _, s, vt = np.linalg.svd(both, full_matrices=False)
        keep = s > s[0] * 1e-12 if s.size and s[0] > 0 else np.zeros_like(s, dtype=bool)
        if not keep.any():
            return 0.0
        both = both @ vt[keep].T
        a, b = both[: len(a)], both[len(a) :]
    with warnings.catch_warnings():  # MONAI passes scipy's deprecated `disp` to sqrtm
        warnings.filterwarnings("ignore", message=".*disp.*", category=DeprecationWarning)
        value = FIDMetric()(torch.from_numpy(b), torch.from_numpy(a))
    return max(float(value), 0.0)


@dataclass
class ViewFeatures:
    """Per-view slice features of a set of volumes, accumulated one volume at a time."""

    extractor: object  # SliceExtractor
    stride: int = 1
    views: tuple[str, ...] = tuple(VIEWS)
    features: dict[str, list[np.ndarray]] = field(default_factory=dict)
    num_volumes: int = 0

    def add(self, volume: Volume) -> None:
        for view in self.views:
            slices = view_slices(volume, view, self.extractor.input_size, stride=self.stride)
            self.features.setdefault(view, []).append(self.extractor(slices))
        self.num_volumes += 1

    def matrix(self, view: str) -> np.ndarray:
        parts = self.features.get(view, [])
        return np.concatenate(parts) if parts else np.zeros((0, self.extractor.num_features))


def fid_views(real: ViewFeatures, generated: ViewFeatures) -> dict[str, float]:
    """{"FID-A": ..., "FID-C": ..., "FID-S": ...} between two accumulated sets (same extractor)."""
    if real.extractor is not generated.extractor and real.extractor.name != generated.extractor.name:
        raise ValueError("real and generated features come from different extractors")
    return {FID_NAMES[v]: frechet_distance(real.matrix(v), generated.matrix(v)) for v in real.views}


def fid_between(
    real: Iterable[Volume], generated: Iterable[Volume], extractor, *, stride: int = 1
) -> dict[str, float]:
    """FID-A/C/S between two collections of volumes."""
    r, g = ViewFeatures(extractor, stride), ViewFeatures(extractor, stride)
    for v in real:
        r.add(v)
    for v in generated:
        g.add(v)
    return fid_views(r, g)


def fid_3d(real: Iterable[Volume], generated: Iterable[Volume], extractor) -> float:
    """Volume-level Fréchet distance with a 3-D extractor (e.g. deepbet); needs >= 2 volumes per set."""
    a = np.stack([extractor(v) for v in real])
    b = np.stack([extractor(v) for v in generated])
    return frechet_distance(a, b)
