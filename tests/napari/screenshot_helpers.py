"""Screenshots of a generated layer at the tumour's largest slice, and where a voxel set lands on screen."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_gem3d._napari.layers import transforms_of


def screenshot_at_tumour(viewer, layer, tumour: np.ndarray, path: Path) -> np.ndarray:
    """Show only ``layer`` in 2-D at the slice with the most ``tumour`` voxels; save and return the grey image."""
    for other in viewer.layers:
        other.visible = other is layer
    viewer.dims.ndisplay = 2
    axis0 = int(np.argmax(tumour.sum(axis=(1, 2))))
    viewer.dims.set_point(0, float(layer.data_to_world((axis0, 0, 0))[0]))
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)
    from skimage.io import imsave

    imsave(path, shot)
    return shot[..., :3].astype(float).mean(axis=-1)


def screen_region(viewer, layer, selected: np.ndarray) -> np.ndarray:
    """Where ``selected`` voxels land on screen: render them white with the same camera as ``layer``."""
    helper = viewer.add_image(selected.astype(np.float32), contrast_limits=(0, 1), **transforms_of(layer))
    layer.visible = False
    region = viewer.screenshot(canvas_only=True, flash=False)[..., :3].mean(axis=-1) > 128
    viewer.layers.remove(helper)
    layer.visible = True
    return region
