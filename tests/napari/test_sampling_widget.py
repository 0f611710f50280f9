"""The sampling dock: a full live run, cancel, errors, run again, responsiveness, screenshot."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
from dock_helpers import record_windows
from latency_helpers import TickRecorder
from screenshot_helpers import screen_region, screenshot_at_tumour

from napari_gem3d._napari.layers import RESULT_KEY, layer_affine
from napari_gem3d._napari.widget_sampling import SamplingWidget
from napari_gem3d.io import read_volume
from study_helpers import AFFINE, SHAPE


def _wait(qtbot, job, timeout=60_000):
    """Wait until the job's GUI-thread handlers have all run (signals queued before a waitSignal
    context is entered would be missed)."""
    qtbot.waitUntil(lambda: job.finished, timeout=timeout)


def _widget(viewer, **values):
    widget = SamplingWidget(viewer)
    viewer.window.add_dock_widget(widget, name="GEM-3D sampling")
    widget.steps.value = 2
    widget.device.value = "cpu"
    for key, value in values.items():
        getattr(widget, key).value = value
    return widget


def test_live_run_fills_window_by_window_and_keeps_inputs(viewer_case, qtbot, tmp_path):
    viewer, image_layer, mask_layer = viewer_case
    image_before, mask_before = image_layer.data.copy(), mask_layer.data.copy()
    widget = _widget(viewer, mask=mask_layer, image=image_layer, seed=5)
    snapshots, counts = [], []
    original = widget._on_window

    def record(update):  # runs as the job's yielded handler, on the GUI thread
        original(update)
        lo = np.float32(widget.live.layer.contrast_limits[0])
        snapshots.append(int(np.sum(np.any(widget.live.layer.data != lo, axis=(1, 2)))))
        counts.append(update)

    widget._on_window = record
    job = widget.run()
    assert job is not None
    layer = widget.live.layer
    assert layer.data.shape == mask_layer.data.shape and layer.data.dtype == np.float32
    _wait(qtbot, job)
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
    assert not any(x.bounding_box.visible for x in viewer.layers if x.name.startswith("GEM-3D window"))
    assert widget.run_button.enabled and not widget.cancel_button.enabled and widget.again_button.enabled
    # saved through the plugin's writer: the source file's voxel order, affine and the provenance
    layer.save(str(tmp_path / "generated.nii.gz"), plugin="napari-gem3d")
    saved = read_volume(tmp_path / "generated.nii.gz")
    assert saved.shape == SHAPE and np.allclose(saved.affine, AFFINE)
    assert (
        saved.header["provenance"]["seed"] == 5
        and saved.header["provenance"]["layer"]["status"] == "complete"
    )


def test_closing_the_dock_cancels_its_job(viewer_case, qtbot):
    viewer, image_layer, mask_layer = viewer_case
    widget = _widget(viewer, mask=mask_layer, image=image_layer, steps=200)
    job = widget.run()
    widget.close()
    _wait(qtbot, job)
    assert job.state == "cancelled" and job.token.cancelled


def _count_unet_calls(monkeypatch, bundle, fail_after: int | None = None):
    calls = {"n": 0}
    original = bundle.volume.forward

    def counting(*args, **kwargs):
        calls["n"] += 1
        if fail_after is not None and calls["n"] > fail_after:
            raise RuntimeError("boom: the network failed")
        return original(*args, **kwargs)

    monkeypatch.setattr(bundle.volume, "forward", counting)
    return calls


def test_cancel_stops_within_one_step_and_keeps_finished_windows(viewer_case, qtbot, bundle, monkeypatch):
    viewer, image_layer, mask_layer = viewer_case
    calls = _count_unet_calls(monkeypatch, bundle)
    widget = _widget(viewer, mask=mask_layer, image=image_layer, steps=12)
    at_cancel = {}
    original = widget._on_window

    def cancel_on_first(update):
        original(update)
        if not at_cancel:
            widget.cancel()
            at_cancel["calls"] = calls["n"]

    widget._on_window = cancel_on_first
    job = widget.run()
    _wait(qtbot, job)
    # the token is checked before every denoising step: at most the step in flight finishes
    assert calls["n"] - at_cancel["calls"] <= 1
    layer = widget.live.layer
    info = layer.metadata[RESULT_KEY]
    assert info["status"] == "partial" and info["provenance"]["status"] == "partial"
    assert len(info["windows_done"]) == info["provenance"]["finished_windows"] >= 1
    assert len(info["windows_done"]) < len(info["plan"])
    assert layer.name.endswith("(partial)")
    z0, z1 = info["windows_done"][0]
    lo = np.float32(layer.contrast_limits[0])
    assert np.any(layer.data[z0:z1] != lo) and np.all(layer.data[z1:] == lo) | np.all(layer.data[:z0] == lo)
    assert job.state == "cancelled" and widget.run_button.enabled


def test_errors_reach_show_error(viewer_case, qtbot, bundle, monkeypatch):
    import napari.utils.notifications as notifications

    viewer, image_layer, mask_layer = viewer_case
    shown = []
    monkeypatch.setattr(notifications, "show_error", lambda message: shown.append(message))
    # 1. bad input, caught before any work starts
    bad = viewer.add_labels(
        np.full(mask_layer.data.shape, 9, np.uint8),
        name="bad mask",
        scale=mask_layer.scale,
        translate=mask_layer.translate,
    )
    widget = _widget(viewer, mask=bad, image=image_layer)
    assert widget.run() is None
    assert "9" in shown[-1] and "label" in shown[-1]
    # 2. a failure inside the worker, with its cause
    _count_unet_calls(monkeypatch, bundle, fail_after=0)
    widget.mask.value = mask_layer
    job = widget.run()
    _wait(qtbot, job)
    assert job.state == "failed"
    assert "boom: the network failed" in shown[-1]
    assert widget.run_button.enabled and not widget.cancel_button.enabled


def test_run_again_uses_seed_plus_one(viewer_case, qtbot):
    viewer, image_layer, mask_layer = viewer_case
    widget = _widget(viewer, mask=mask_layer, image=image_layer, seed=7)
    job = widget.run()
    _wait(qtbot, job)
    first = widget.live.layer
    job = widget.run_again()
    _wait(qtbot, job)
    second = widget.live.layer
    assert second is not first and widget.seed.value == 8
    assert second.metadata[RESULT_KEY]["provenance"]["seed"] == 8
    assert first.metadata[RESULT_KEY]["provenance"]["seed"] == 7
    assert not np.array_equal(first.data, second.data)


def test_event_loop_stays_responsive_during_sampling(viewer_case, qtbot):
    """Report the longest gap between 10 ms timer ticks while a generation runs (goal <= 100 ms).

    Reported, not asserted: the number depends on the machine (here: Xvfb + software OpenGL, a shared
    2-core box). ``steady_max_gap_ms`` leaves out the start (new layers' first draw).
    """
    viewer, image_layer, mask_layer = viewer_case
    widget = _widget(viewer, mask=mask_layer, image=image_layer, steps=8)
    recorder = TickRecorder(widget)
    started = recorder.start()
    job = widget.run()
    _wait(qtbot, job)
    gaps = recorder.stop()
    ticks, windows = np.asarray(recorder.ticks), recorder.windows
    steady = np.diff(ticks[ticks >= windows[0]]) * 1000.0
    report = {
        "max_gap_ms": float(gaps.max()),
        "steady_max_gap_ms": float(steady.max()) if steady.size else None,
        "p95_gap_ms": float(np.percentile(gaps, 95)),
        "median_gap_ms": float(np.median(gaps)),
        "ticks": int(len(ticks)),
        "windows": len(windows),
        "steps": 8,
        "run_seconds": round(windows[-1] - started, 2),
        # where the longest gap sits, against the window arrivals (s after Run): finds the stall
        "max_gap_starts_s": round(float(ticks[int(np.argmax(gaps))] - started), 3),
        "windows_at_s": [round(w - started, 3) for w in windows],
        "load_average": os.getloadavg()[0],
    }
    out = Path(
        os.environ.get("GEM3D_LATENCY_REPORT", Path(tempfile.gettempdir()) / "gem3d_event_loop_latency.json")
    )
    out.write_text(json.dumps(report, indent=1))
    print(f"\nevent-loop latency during sampling: {report}")
    assert len(ticks) > 10 and np.isfinite(report["max_gap_ms"])
    assert len(windows) == len(widget.live.plan)


def test_screenshot_of_a_real_generation(viewer_case, qtbot, tmp_path):
    viewer, image_layer, mask_layer = viewer_case
    widget = _widget(viewer, mask=mask_layer, image=image_layer, steps=4)
    job = widget.run()
    _wait(qtbot, job)
    layer = widget.live.layer
    tumour = np.isin(mask_layer.data, (4, 5, 6))
    gray = screenshot_at_tumour(viewer, layer, tumour, tmp_path / "generation.png")
    assert gray.std() > 5, "the screenshot is blank"
    in_tumour = screen_region(viewer, layer, tumour)
    outside = screen_region(viewer, layer, mask_layer.data == 0)
    assert in_tumour.sum() > 50 and outside.sum() > 50
    # the tiny model has random weights: the screen must show the data's own tumour/background contrast,
    # mapped through the layer's contrast limits (whatever its sign and size for this draw)
    z = int(np.argmax(tumour.sum(axis=(1, 2))))
    data, (lo, hi) = np.asarray(layer.data[z], float), layer.contrast_limits
    shown = [255 * np.clip((data[m[z]].mean() - lo) / (hi - lo), 0, 1) for m in (tumour, mask_layer.data == 0)]
    print(f"\nscreenshot: tumour {gray[in_tumour].mean():.1f}, outside-brain {gray[outside].mean():.1f}; "
          f"from the data: {shown[0]:.1f}, {shown[1]:.1f}")
    assert abs(gray[in_tumour].mean() - shown[0]) < 12 and abs(gray[outside].mean() - shown[1]) < 12


def test_out_of_domain_is_refused_before_any_work_and_run_anyway_records_it(viewer_case, qtbot, bundle):
    import dataclasses

    from napari_gem3d._napari.session import get_session
    from napari_gem3d.models import ModelBundle, ModelCard

    viewer, image_layer, mask_layer = viewer_case
    mr_card = ModelCard(modality="MR", contrast="T1", body_region="brain", tissue_labels=(1, 2, 3),
                        lesion_labels=(4, 5, 6), background_labels=(0,))
    carded = ModelBundle(dataclasses.replace(bundle.config, card=mr_card), bundle.vae, bundle.unets,
                         bundle.path, bundle.model_hash)
    get_session(viewer).set_bundle(carded, str(bundle.path))
    ct = viewer.add_image(image_layer.data * 8 - 1024, name="ct", scale=image_layer.scale,
                          translate=image_layer.translate, metadata=dict(image_layer.metadata))
    widget = _widget(viewer, mask=mask_layer, image=ct)
    layers_before = len(viewer.layers)
    assert widget.run() is None
    assert "outside the model's domain" in widget.status.text() and "modality" in widget.status.text()
    assert "tick 'Run anyway" in widget.status.text() and "--force" not in widget.status.text()  # the dock's words
    assert len(viewer.layers) == layers_before  # refused before any output layer was made
    assert "MR T1, brain" in widget.model_label.text()
    widget.force.value = True
    job = widget.run()
    assert job is not None
    _wait(qtbot, job)
    info = widget.live.layer.metadata[RESULT_KEY]
    assert info["provenance"]["domain"]["in_domain"] is False
    assert [f["code"] for f in info["provenance"]["domain"]["findings"] if f["severity"] == "error"] == ["modality"]


def _grow_core(mask_layer, planes):
    """An edit on a few axial slices (display axis 0 is S in the plugin's frame), as one data change."""
    data = mask_layer.data.copy()
    for k in planes:
        plane = data[k]
        plane[(plane == 2)] = 6
    mask_layer.data = data


def test_regenerate_changes_refills_only_the_edited_slices(viewer_case, qtbot):
    from napari_gem3d._napari.session import STALE_SUFFIX

    viewer, image_layer, mask_layer = viewer_case
    widget = _widget(viewer, mask=mask_layer, image=image_layer, seed=3)
    job = widget.run()
    _wait(qtbot, job)
    layer = widget.live.layer
    before = layer.data.copy()
    _grow_core(mask_layer, [12, 13])
    assert layer.name.endswith(STALE_SUFFIX)
    job = widget.regenerate_changes()
    assert job is not None
    _wait(qtbot, job)
    info = layer.metadata[RESULT_KEY]
    lo, hi = info["provenance"]["regenerated"]["range"]
    assert not info["provenance"]["regenerated"]["full_run"] and 0 < hi - lo < widget.live.grid.num_slices
    n = widget.live.grid.num_slices
    changed = np.flatnonzero(np.any(layer.data != before, axis=(1, 2)))
    assert before.shape[0] == n and changed.size
    assert set(changed) <= set(range(lo, hi)) or set(changed) <= {n - 1 - z for z in range(lo, hi)}
    untouched = [k for k in range(n) if k not in changed]
    assert len(untouched) >= n - (hi - lo)
    assert np.array_equal(layer.data[untouched], before[untouched])  # exactly the values shown before
    assert not layer.name.endswith(STALE_SUFFIX) and info["stale"] is False
    # nothing changed since: refused with a clear status, no job
    assert widget.regenerate_changes() is None and "nothing to regenerate" in widget.status.text()


def test_auto_regeneration_runs_after_an_edit_and_a_newer_edit_supersedes_it(viewer_case, qtbot):
    viewer, image_layer, mask_layer = viewer_case
    widget = _widget(viewer, mask=mask_layer, image=image_layer, seed=3)
    _wait(qtbot, widget.run())
    widget.auto_regen.value = True
    started = []
    original = widget.regenerate_changes

    def counting():
        job = original()
        started.append(job)
        return job

    widget.regenerate_changes = counting
    _grow_core(mask_layer, [12])
    _grow_core(mask_layer, [13])  # within the debounce: one regeneration for both edits
    qtbot.waitUntil(lambda: len(started) == 1 and started[0] is not None and started[0].finished, timeout=60_000)
    qtbot.wait(2 * 500)
    assert len(started) == 1
    assert widget.live.layer.metadata[RESULT_KEY]["stale"] is False


def test_solver_choice_reaches_the_provenance(viewer_case, qtbot):
    viewer, image_layer, mask_layer = viewer_case
    widget = _widget(viewer, mask=mask_layer, image=image_layer, solver="dpmpp2m")
    assert widget.solver.native.currentText() == "DPM-Solver++ 2M" and "deterministic" in widget.solver.tooltip
    job = widget.run()
    assert job is not None
    _wait(qtbot, job)
    assert widget.live.layer.metadata[RESULT_KEY]["provenance"]["solver"] == "dpmpp2m"


def test_a_run_with_two_workers_and_the_sde_solver_fills_every_window(viewer_case, qtbot, monkeypatch):
    """The dock's run with the CPU split into two workers (windows and decodes side by side, decodes in the
    background) and the SDE solver: every window arrives on the GUI thread, the volume is whole, and the
    provenance records the workers, the solver and its slice-indexed step noise."""
    viewer, image_layer, mask_layer = viewer_case
    monkeypatch.setenv("GEM3D_WORKERS", "2")
    widget = _widget(viewer, mask=mask_layer, image=image_layer, solver="dpmpp2m_sde")
    assert widget.solver.native.currentText() == "DPM-Solver++ 2M SDE"
    updates = record_windows(widget)
    job = widget.run()
    assert job is not None
    _wait(qtbot, job)
    info = widget.live.layer.metadata[RESULT_KEY]
    prov = info["provenance"]
    assert info["status"] == "complete" and len(updates) == len(info["plan"])
    assert prov["cpu_threads"]["workers"] == 2 and prov["solver"] == "dpmpp2m_sde" and prov["step_noise"] == "slices"
    assert np.isfinite(widget.live.layer.data).all()


def test_paste_choice_reaches_the_generator_and_is_off_with_official_compat(viewer_case, qtbot):
    """Off by default (the scan's slice conditions only); ticked, the generator holds it as the start's known
    frame and says so in the provenance; the official-compat mode never pastes, ticked or not."""
    viewer, image_layer, mask_layer = viewer_case
    widget = _widget(viewer, mask=mask_layer, image=image_layer, solver="ddim")  # official compat: DDIM only
    assert widget.paste.value is False and widget.paste.tooltip
    seen = {}
    for paste, compat in ((True, False), (False, False), (True, True)):
        widget.paste.value, widget.compat.value = paste, compat
        job = widget.run()
        assert job is not None
        _wait(qtbot, job)
        info = widget.live.layer.metadata[RESULT_KEY]
        assert info["status"] == "complete" and info["settings"]["paste"] is paste
        seen[paste, compat] = info["provenance"]["paste_informed"]
    assert seen == {(True, False): True, (False, False): False, (True, True): False}


def test_removing_the_output_layer_cancels_its_run(viewer_case, qtbot):
    viewer, image_layer, mask_layer = viewer_case
    widget = _widget(viewer, mask=mask_layer, image=image_layer, steps=50)
    job = widget.run()
    assert job is not None and job.running
    viewer.layers.remove(widget.live.layer)
    _wait(qtbot, job)
    assert job.state == "cancelled"
    assert "removed" in widget.status.text() and widget.live is None
    assert not widget.regen_button.enabled and widget.run_button.enabled


def test_every_result_of_an_edited_mask_is_marked_stale_through_naparis_plugin_proxy(viewer_case, qtbot):
    """napari hands plugin docks a PublicOnlyProxy of the viewer, whose layers are proxies too: the
    session must remember the real layers, or the second run's proxy dies and stale marking misses."""
    import gc

    from napari.utils._proxies import PublicOnlyProxy

    from napari_gem3d._napari.session import STALE_SUFFIX

    viewer, image_layer, mask_layer = viewer_case
    proxy = PublicOnlyProxy(viewer)
    widget = SamplingWidget(proxy)
    viewer.window.add_dock_widget(widget, name="GEM-3D sampling (proxy)")
    widget.steps.value, widget.device.value = 2, "cpu"
    widget.mask.value, widget.image.value = proxy.layers["mask"], proxy.layers["image"]
    for seed in (1, 2):
        widget.seed.value = seed
        _wait(qtbot, widget.run())
        gc.collect()  # drop the proxies napari made for this run
    results = [layer for layer in viewer.layers
               if layer.metadata.get(RESULT_KEY, {}).get("status") == "complete"]
    assert len(results) == 2
    _grow_core(mask_layer, [12])
    assert all(layer.name.endswith(STALE_SUFFIX) for layer in results)


def test_a_bundle_with_a_vq_first_stage_loads_and_generates_in_the_dock(viewer_case_without_model, qtbot, tmp_path):
    """Issue 17: the VQ-GAN first stage is a bundle like any other for the plugin (load, sample, provenance)."""
    import dataclasses

    from napari_gem3d._napari.session import get_session
    from napari_gem3d.models import save_bundle
    from napari_gem3d.models.presets import small_config
    from napari_gem3d.models.vq import VQConfig
    from sampler_helpers import bundle_from_config

    viewer, image_layer, mask_layer = viewer_case_without_model
    config = small_config(32, window=8, name="tiny-vq")
    config = dataclasses.replace(config, vae=VQConfig(**dataclasses.asdict(config.vae), codebook_size=16))
    path = save_bundle(bundle_from_config(config), tmp_path / "tiny-vq")
    session = get_session(viewer)
    session.load_model(path)
    qtbot.waitUntil(lambda: session.bundle is not None, timeout=60_000)
    assert session.bundle.vae.config.kind == "vq"
    widget = _widget(viewer, mask=mask_layer, image=image_layer)
    job = widget.run()
    assert job is not None
    _wait(qtbot, job)
    info = widget.live.layer.metadata[RESULT_KEY]
    assert info["status"] == "complete" and info["provenance"]["model"]["name"] == "tiny-vq"
    assert np.isfinite(widget.live.layer.data).all()


def test_lesion_strength_needs_a_model_with_lesion_labels_and_reaches_the_generator(viewer_case, qtbot, bundle,
                                                                                   bundle_path):
    """The tiny model has no card: the control is greyed out and the run is unguided; a model whose card names
    lesion labels enables it and the generator records the strength asked for."""
    import dataclasses

    from napari_gem3d._napari.session import get_session
    from napari_gem3d.models.card import ModelCard

    viewer, image_layer, mask_layer = viewer_case
    widget = _widget(viewer, mask=mask_layer, image=image_layer, lesion_strength=2.5)
    assert widget.lesion_strength.tooltip and not widget.lesion_strength.enabled
    seen = []
    for _ in range(2):
        job = widget.run()
        assert job is not None
        _wait(qtbot, job)
        info = widget.live.layer.metadata[RESULT_KEY]
        assert info["status"] == "complete" and info["settings"]["lesion_strength"] == 2.5
        seen.append(info["provenance"]["lesion_guidance"])
        card = ModelCard(modality="MR", contrast="T1", body_region="brain", tissue_labels=(1, 2, 3),
                         lesion_labels=(4, 5, 6))
        get_session(viewer).set_bundle(dataclasses.replace(bundle, config=dataclasses.replace(bundle.config,
                                                                                            card=card)))
        assert widget.lesion_strength.enabled
    assert seen == [1.0, 2.5]
    widget.solver.value, widget.compat.value = "ddim", True  # the official sampler has no lesion guidance
    job = widget.run()
    assert job is not None
    _wait(qtbot, job)
    info = widget.live.layer.metadata[RESULT_KEY]
    assert info["status"] == "complete" and info["provenance"]["lesion_guidance"] == 1.0
    widget.mode.value = "Mask only (baseline)"  # the baseline has none either
    assert not widget.lesion_strength.enabled
