"""Montages: a label keeps its colour whichever labels a mask holds, when the colour map's end is given."""

from __future__ import annotations

import numpy as np
from matplotlib.image import imread

from napari_gem3d.montage import save_montage
from napari_gem3d.volume import Volume


def test_label_colours_are_fixed_by_labels_max(tmp_path):
    wm_only = np.zeros((12, 12, 12), np.int16)
    wm_only[3:9, 3:9, 3:9] = 3  # white matter
    with_core = wm_only.copy()
    with_core[5:7, 5:7, 5:7] = 6  # and a small core inside it

    def drawn(mask, top, name):
        path = save_montage([("mask", Volume(mask, np.eye(4)))], tmp_path / f"{name}_{top}.png", kinds=["labels"],
                            labels_max=top)
        return imread(path)[..., :3]

    changed = {top: np.any(drawn(wm_only, top, "wm") != drawn(with_core, top, "core"), axis=-1).sum()
               for top in (None, 6)}
    # with the map's end at 6 only the core's pixels differ; scaled to each mask's own maximum, the white
    # matter (the top label of one mask, not of the other) changes colour too
    assert changed[6] > 0 and changed[None] > 4 * changed[6]
