"""Evaluation metrics (Qt-free; torch and MONAI load on first use).

- :mod:`.similarity`: 3-D MS-SSIM (kernel/scales fitted to the volume size), SSIM, PSNR on an explicit range;
- :mod:`.fid`: FID-A/C/S over axial, coronal and sagittal slices, FID-3D over volumes;
- :mod:`.features`: extractors (RadImageNet ResNet-50 from a user file, the offline random-conv fallback,
  deepbet's 3-D encoder);
- :mod:`.consistency`: adjacent-slice difference profile, generated/real ratio, seam ratio;
- :mod:`.segmentation`: Dice and HD95 per label;
- :mod:`.report`: real vs generated folders -> table, ``metrics.csv`` and ``metrics.md``.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "MSSSIMConfig": "similarity",
    "ms_ssim_config": "similarity",
    "ms_ssim": "similarity",
    "ssim": "similarity",
    "psnr": "similarity",
    "unit_range_pair": "similarity",
    "compare_volumes": "similarity",
    "frechet_distance": "fid",
    "view_slices": "fid",
    "ViewFeatures": "fid",
    "fid_views": "fid",
    "fid_between": "fid",
    "fid_3d": "fid",
    "make_extractor": "features",
    "fallback_extractor": "features",
    "radimagenet_extractor": "features",
    "deepbet_extractor": "features",
    "RadImageNetResNet50": "features",
    "consistency": "consistency",
    "adjacent_difference_profile": "consistency",
    "seam_ratio": "consistency",
    "window_seams": "consistency",
    "dice_per_label": "segmentation",
    "hd95_per_label": "segmentation",
    "evaluate_folders": "report",
    "write_report": "report",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
