"""The sampling dock: a full live run, cancel, errors, run again, responsiveness, screenshot."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from study_helpers import AFFINE

from napari_gem3d._napari.layers import RESULT_KEY, layer_affine
from napari_gem3d._napari.widget_sampling import SamplingWidget


def _widget(viewer, **values):
    widget = SamplingWidget(viewer)
    viewer.window.add_dock_widget(widget, name="GEM-3D sampling")
    widget.steps.value = 2
    widget.device.value = "cpu"
    for key, value in values.items():
        getattr(widget, key).value = value
    return widget


def test_live_run_fills_window_by_window_and_keeps_inputs(viewer_case, qtbot):
    viewer, image_layer, mask_layer = viewer_case
    image_before, mask_before = image_layer.data.copy(), mask_layer.data.copy()
    widget = _widget(viewer, mask=mask_layer, image=image_layer, seed=5)
    snapshots, counts = [], []

    job = widget.run()
    assert job is not None
    layer = widget.live.layer
    assert layer.data.shape == mask_layer.data.shape and layer.data.dtype == np.float32
    lo = layer.contrast_limits[0]

    def record(update):
        snapshots.append(int(np.sum(np.any(layer.data != lo, axis=(1, 2)))))
        counts.append(update)

    job.worker.yielded.connect(record)
    with qtbot.waitSignal(job.worker.finished, timeout=60_000):
        pass
    plan = layer.metadata[RESULT_KEY]["plan"]
    assert len(counts) == len(plan) >= 3
    assert snapshots == sorted(snapshots) and snapshots[0] < snapshots[-1]  # fills window by window
    assert np.array_equal(image_layer.data, image_before) and np.array_equal(mask_layer.data, mask_before)
    info = layer.metadata[RESULT_KEY]
    assert info["status"] == "complete"
    prov = info["provenance"]
    assert prov["seed"] == 5 and prov["steps"] == 2 and prov["mode"] == "gem3d"
    assert prov["informed"]["kind"] == "picked" and prov["mask_sha256"] and prov["model"]["hash"]
    assert np.allclose(layer_affine(layer), layer_affine(mask_layer))
    assert np.allclose(np.asarray(prov["grid"]["source_affine"]), layer_affine(mask_layer))
    assert not any(l.name.startswith("GEM-3D window") for l in viewer.layers)  # boxes removed at the end
    assert widget.run_button.enabled and not widget.cancel_button.enabled and widget.again_button.enabled
