"""The shipped demo case and model, end to end in napari: sample data -> sampling dock -> live fill -> screenshot.

The session's default model is the bundled one (no "Load model"); the tumour must come out of the real
model as a region whose generated intensity differs from the brain around it the way the real image's does.
"""

from __future__ import annotations

import numpy as np
import pytest
from dock_helpers import record_windows
from screenshot_helpers import screen_region, screenshot_at_tumour

from napari_gem3d import demo_model_path
from napari_gem3d._napari.layers import RESULT_KEY
from napari_gem3d._napari.widget_sampling import SamplingWidget

TUMOUR = (4, 5, 6)
WHITE_MATTER = 3

def _started(qtbot, widget):
    """The run's job: at once, or once the bundled model has loaded in its worker (first use)."""
    job = widget.run()
    if job is None:
        qtbot.waitUntil(lambda: widget.session.job is not None, timeout=120_000)
        job = widget.session.job
    return job


pytestmark = pytest.mark.skipif(not (demo_model_path() / "config.json").is_file(),
                                reason="this installation has no bundled demo model")


def test_demo_case_generates_live_with_the_bundled_model(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer(show=True)
    layers = viewer.open_sample("napari-gem3d", "demo_case")
    image_layer = next(x for x in layers if x._type_string == "image")
    mask_layer = next(x for x in layers if x._type_string == "labels")
    image_before, mask_before = image_layer.data.copy(), mask_layer.data.copy()

    widget = SamplingWidget(viewer)
    viewer.window.add_dock_widget(widget, name="GEM-3D sampling")
    widget.mask.value, widget.image.value = mask_layer, image_layer
    # the dock's default quality (DPM-Solver++, 6 steps) and its default: the scan's slice as conditioning only
    assert (widget.solver.value, widget.steps.value, widget.paste.value) == ("dpmpp2m", 6, False)
    widget.device.value, widget.seed.value = "cpu", 0
    updates = record_windows(widget)
    job = _started(qtbot, widget)
    qtbot.waitUntil(lambda: job.finished, timeout=300_000)
    layer = widget.live.layer
    info = layer.metadata[RESULT_KEY]
    assert info["status"] == "complete"
    assert len(updates) == len(info["plan"]) >= 3  # one live update per planned window
    assert info["provenance"]["model"]["name"].startswith("gem3d-demo")
    assert info["provenance"]["paste_informed"] is False
    assert np.array_equal(image_layer.data, image_before) and np.array_equal(mask_layer.data, mask_before)

    # the generated tumour differs from white matter in the same direction as in the real image
    gen, real, mask = np.asarray(layer.data, float), np.asarray(image_layer.data, float), mask_layer.data
    tumour, wm = np.isin(mask, TUMOUR), mask == WHITE_MATTER
    real_contrast = (real[tumour].mean() - real[wm].mean()) / real[wm].std()
    gen_contrast = (gen[tumour].mean() - gen[wm].mean()) / gen[wm].std()
    print(f"\ntumour vs white matter, in white-matter standard deviations: real {real_contrast:+.2f}, "
          f"generated {gen_contrast:+.2f}")
    assert abs(real_contrast) > 0.5
    assert np.sign(gen_contrast) == np.sign(real_contrast) and abs(gen_contrast) > 0.25

    # a screenshot of the generation at the tumour's largest slice: not blank, tumour visible
    tumour = np.isin(mask, TUMOUR)
    gray = screenshot_at_tumour(viewer, layer, tumour, tmp_path / "demo_generation.png")
    assert gray.std() > 5, "the screenshot is blank"
    on_screen = screen_region(viewer, layer, tumour)
    assert on_screen.sum() > 20, "the tumour is not on screen at its largest slice"
    ring = np.zeros_like(on_screen)
    ys, xs = np.nonzero(on_screen)
    ring[max(ys.min() - 15, 0): ys.max() + 15, max(xs.min() - 15, 0): xs.max() + 15] = True
    ring &= ~on_screen & (gray > 20)  # brain around the tumour (not the black background)
    assert abs(gray[on_screen].mean() - gray[ring].mean()) > 5, "the tumour does not show in the screenshot"


def test_regenerate_changes_latency_on_the_demo_case_is_reported(make_napari_viewer, qtbot):
    """Report the time from "Update edits" (regenerate changes) to the first refilled window on screen, and
    the event loop's gaps meanwhile (goals: <= 1 s and p95 <= 50 ms), at the dock's default quality.
    Reported, not asserted: it depends on the machine. The edit moves the demo tumour up by 3 axial slices."""
    import json
    import os
    import tempfile
    from pathlib import Path

    from latency_helpers import TickRecorder

    viewer = make_napari_viewer(show=True)
    layers = viewer.open_sample("napari-gem3d", "demo_case")
    image_layer = next(x for x in layers if x._type_string == "image")
    mask_layer = next(x for x in layers if x._type_string == "labels")
    widget = SamplingWidget(viewer)
    viewer.window.add_dock_widget(widget, name="GEM-3D sampling")
    widget.mask.value, widget.image.value = mask_layer, image_layer
    # the dock's default quality: DPM-Solver++ at 6 steps (held-out quality as DDIM-25's, docs/benchmarks.md)
    assert (widget.solver.value, widget.steps.value) == ("dpmpp2m", 6)
    widget.device.value, widget.seed.value = "cpu", 0
    job = _started(qtbot, widget)
    qtbot.waitUntil(lambda: job.finished, timeout=300_000)
    full_seconds = widget.live.layer.metadata[RESULT_KEY]["provenance"]["timings_s"]["total"]
    data = mask_layer.data.copy()
    tumour = np.isin(data, TUMOUR)
    moved = np.roll(tumour, 3, axis=0)
    data[tumour] = WHITE_MATTER
    data[moved] = mask_layer.data[tumour]
    mask_layer.data = data

    recorder = TickRecorder(widget)
    started = recorder.start()
    job = widget.regenerate_changes()
    assert job is not None
    qtbot.waitUntil(lambda: job.finished, timeout=300_000)
    gaps, windows = recorder.stop(), recorder.windows
    prov = widget.live.layer.metadata[RESULT_KEY]["provenance"]
    report = {
        "first_window_s": round(windows[0] - started, 3), "windows": len(windows),
        "regenerate_s": prov["timings_s"]["total"], "full_s": full_seconds,
        "range": prov["regenerated"]["range"], "p95_gap_ms": float(np.percentile(gaps, 95)),
        "median_gap_ms": float(np.median(gaps)), "max_gap_ms": float(gaps.max()),
        "cpu_threads": prov.get("cpu_threads"), "solver": prov.get("solver"), "steps": prov.get("steps"),
        "load_average": os.getloadavg()[0],
    }
    out = Path(os.environ.get("GEM3D_REGEN_LATENCY_REPORT",
                              Path(tempfile.gettempdir()) / "gem3d_regenerate_latency.json"))
    out.write_text(json.dumps(report, indent=1))
    print(f"\nregenerate changes on the demo case: {report}")
    assert len(windows) == prov["regenerated"]["windows"] and not prov["regenerated"]["full_run"]


def test_first_run_on_the_sample_data_with_defaults_loads_the_model_in_a_worker(make_napari_viewer, qtbot):
    """A new user: open the sample, open the dock, press Run. Nothing is chosen by hand and no model is loaded
    yet: the dock picks the sample's scan for its mask, the bundled model loads in a worker ("Loading…"),
    and the run starts by itself. The event loop's gaps from Run to the first window are reported (goal:
    worst <= 200 ms); reported, not asserted: they depend on the machine."""
    import json
    import os
    import tempfile
    from pathlib import Path

    from latency_helpers import TickRecorder

    from napari_gem3d._napari.session import get_session

    viewer = make_napari_viewer(show=True)
    layers = viewer.open_sample("napari-gem3d", "demo_case")
    image_layer = next(x for x in layers if x._type_string == "image")
    mask_layer = next(x for x in layers if x._type_string == "labels")
    session = get_session(viewer)
    assert session.bundle is None
    widget = SamplingWidget(viewer)
    viewer.window.add_dock_widget(widget, name="GEM-3D sampling")
    assert widget.mask.value is mask_layer and widget.image.value is image_layer  # defaults from the layers
    recorder = TickRecorder(widget)
    started = recorder.start()
    assert widget.run() is None  # not blocked: the model is loading
    assert session.loading and "Loading" in widget.status.text() and not widget.run_button.enabled
    qtbot.waitUntil(lambda: session.job is not None or widget.live is not None, timeout=120_000)
    loaded = recorder.ticks[-1] if recorder.ticks else started
    qtbot.waitUntil(lambda: widget.live is not None and widget.live.layer.metadata[RESULT_KEY]["status"] != "running",
                    timeout=300_000)
    qtbot.waitUntil(lambda: session.job is None, timeout=60_000)
    ticks = np.asarray(recorder.ticks)
    gaps = recorder.stop()
    first_use = np.diff(ticks[ticks <= recorder.windows[0]]) * 1000.0
    info = widget.live.layer.metadata[RESULT_KEY]
    assert info["status"] == "complete" and info["provenance"]["model"]["name"].startswith("gem3d-demo")
    report = {
        "first_use_median_gap_ms": float(np.median(first_use)),
        "first_use_p95_gap_ms": float(np.percentile(first_use, 95)),
        "first_use_worst_gap_ms": float(first_use.max()), "run_worst_gap_ms": float(gaps.max()),
        "model_loaded_s": round(loaded - started, 2), "first_window_s": round(recorder.windows[0] - started, 2),
        "load_average": os.getloadavg()[0],
    }
    out = Path(os.environ.get("GEM3D_FIRST_USE_REPORT", Path(tempfile.gettempdir()) / "gem3d_first_use_latency.json"))
    out.write_text(json.dumps(report, indent=1))
    print(f"\nfirst use (model loading in a worker, then the run): {report}")
    assert len(first_use) > 10
