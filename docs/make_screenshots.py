"""Screenshots of the GEM-3D docks for the README (run under Xvfb on a headless machine).

    xvfb-run -a python docs/make_screenshots.py [--out docs/screenshots] [--steps N]

Uses the bundled demo case and model when they are installed; otherwise a synthetic brain phantom and a
small random-weight model (the pictures then show the workflow, not image quality).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

MAX_BYTES = 300_000


def phantom(shape=(40, 64, 64)):
    """A brain-like phantom with the demo labels, stored LPS with anisotropic voxels (1 x 1 x 1.2 mm)."""
    from napari_gem3d.volume import Volume

    idx = np.indices(shape).astype(float)
    c = (np.asarray(shape, float) - 1) / 2
    r = np.sqrt(((idx[0] - c[0]) / 18) ** 2 + ((idx[1] - c[1]) / 28) ** 2 + ((idx[2] - c[2]) / 23) ** 2)
    mask = np.zeros(shape, np.uint8)
    mask[r < 1.0] = 2  # grey matter
    mask[r < 0.82] = 3  # white matter
    ventricles = (
        (np.abs(idx[2] - c[2]) - 5) ** 2 / 9 + ((idx[1] - c[1] + 2) / 9) ** 2 + ((idx[0] - c[0]) / 6) ** 2
    )
    mask[ventricles < 1] = 1  # CSF
    t = np.sqrt(((idx[0] - 22) / 7) ** 2 + ((idx[1] - 24) / 8) ** 2 + ((idx[2] - 42) / 8) ** 2)
    brain = r < 1.0
    mask[(t < 1.0) & brain] = 4
    mask[(t < 0.55) & brain] = 5
    mask[(t < 0.35) & brain] = 6
    rng = np.random.default_rng(0)
    values = np.array([0, 900, 500, 380, 1100, 1400, 300], np.float32)
    image = values[mask] + rng.normal(0, 25, shape).astype(np.float32)
    # arrays are (S, P, L); store them as L, P, S (LPS, the DICOM order) with 1.2 mm slices
    affine = np.array([[-1.0, 0, 0, 32], [0, -1.0, 0, 32], [0, 0, 1.2, -24], [0, 0, 0, 1]])

    def stored(a):
        return np.ascontiguousarray(np.transpose(a, (2, 1, 0)))

    return Volume(stored(image), affine), Volume(stored(mask), affine)


def random_bundle():
    import torch

    from napari_gem3d.models import build_bundle
    from napari_gem3d.models.presets import small_config

    torch.manual_seed(0)
    bundle = build_bundle(small_config(32))
    with torch.no_grad():  # zero-initialised output layers would make every prediction 0
        for module in bundle.unets.values():
            for p in module.parameters():
                if p.ndim > 1 and p.abs().sum() == 0:
                    p.copy_(torch.randn_like(p) * 0.02)
    for module in bundle.modules().values():
        module.eval()
    return bundle


def wait(app, condition, timeout=600.0):
    end = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > end:
            raise TimeoutError("timed out waiting for a job")
        app.processEvents()
        time.sleep(0.005)


def settle(app, seconds=0.4):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.01)


def save(viewer, path: Path, app) -> None:
    """A window screenshot, palette-quantised if needed to stay under MAX_BYTES."""
    from PIL import Image

    settle(app)
    shot = viewer.screenshot(canvas_only=False, flash=False)
    image = Image.fromarray(shot[..., :3])
    image.save(path, optimize=True)
    for colors in (256, 128, 64):
        if path.stat().st_size <= MAX_BYTES:
            break
        image.quantize(colors=colors).save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size // 1000} kB)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "screenshots")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the docks' defaults)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    import torch
    from qtpy.QtWidgets import QApplication

    import napari
    from napari_gem3d import demo_case, demo_model_path
    from napari_gem3d._napari.layers import volume_to_layer
    from napari_gem3d._napari.session import get_session
    from napari_gem3d._napari.widget_gallery import GalleryWidget
    from napari_gem3d._napari.widget_informed import InformedSliceWidget
    from napari_gem3d._napari.widget_inspector import InspectorWidget
    from napari_gem3d._napari.widget_mask_editor import MaskEditorWidget
    from napari_gem3d._napari.widget_sampling import INFORMED_IMAGE, SamplingWidget
    from napari_gem3d.models import load_bundle

    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    demo = (demo_model_path() / "config.json").is_file()
    try:
        image, mask = demo_case()
        source = "demo case"
    except FileNotFoundError:
        image, mask = phantom()
        source = "synthetic phantom"
    bundle = load_bundle(demo_model_path()) if demo else random_bundle()
    print(f"case: {source}; model: {'bundled demo model' if demo else 'random weights (no demo model yet)'}")

    viewer = napari.Viewer(title="napari-gem3d", show=True)
    viewer.window._qt_window.resize(1500, 900)
    app = QApplication.instance()
    data, kwargs = volume_to_layer(image, "image", name="image")
    image_layer = viewer.add_image(data, **kwargs)
    data, kwargs = volume_to_layer(mask, "labels", name="mask")
    mask_layer = viewer.add_labels(data, opacity=0.35, **kwargs)
    session = get_session(viewer)
    session.set_bundle(bundle)
    tumour = np.argwhere(np.isin(mask_layer.data, (4, 5, 6)))
    centre = tumour.mean(axis=0) if len(tumour) else np.asarray(mask_layer.data.shape) / 2
    viewer.dims.set_point(0, float(image_layer.data_to_world(centre)[0]))
    viewer.reset_view()

    def dock(widget, name):
        return viewer.window.add_dock_widget(widget, name=name, area="right")

    # 1. mask editor, after adding a small lesion at the cursor
    editor = MaskEditorWidget(viewer)
    d = dock(editor, "Mask editor")
    editor.mask.value = mask_layer
    viewer.cursor.position = tuple(mask_layer.data_to_world(centre + np.array([0, -6, -10])))
    editor.label.value = 5
    editor.radius_z.value = editor.radius_y.value = editor.radius_x.value = 3.0
    editor.add_lesion()
    save(viewer, args.out / "mask_editor.png", app)
    mask_layer.undo()
    viewer.window.remove_dock_widget(d)

    # 2. informed slice: picked from the image at the tumour's slice (a thumbnail in the dock)
    informed = InformedSliceWidget(viewer)
    d = dock(informed, "Informed slice")
    informed.image.value = image_layer
    informed.where.value = "Current slice"
    job = informed.choose()
    wait(app, lambda: job.finished)
    viewer.reset_view()
    save(viewer, args.out / "informed_slice.png", app)
    viewer.window.remove_dock_widget(d)
    viewer.reset_view()

    # 3. sampling: live (after the first window, with the window box) and finished
    sampling = SamplingWidget(viewer)
    d = dock(sampling, "Sampling")
    sampling.mask.value, sampling.image.value = mask_layer, image_layer
    sampling.informed.value = INFORMED_IMAGE
    sampling.device.value = "cpu"  # the dock's default quality (Fast); --steps sets the steps instead
    if args.steps:
        sampling.steps.value = args.steps
    sampling.view.value = "coronal"  # the filled band, the running window and the scan beneath are visible
    mask_layer.visible = False
    shots = {}
    original = sampling._on_window

    def live_window(update):
        original(update)
        if len(sampling.live.layer.metadata["gem3d"]["windows_done"]) == 2 and "live" not in shots:
            sampling._update_view()
            save(viewer, args.out / "sampling_live.png", app)
            shots["live"] = True

    sampling._on_window = live_window
    job = sampling.run()
    wait(app, lambda: job.finished)
    sampling.view.value = "axial"
    result = sampling.live.layer
    viewer.canvas.grid.enabled = True
    for layer in viewer.layers:
        layer.visible = layer in (image_layer, result)
    viewer.reset_view()
    save(viewer, args.out / "sampling_done.png", app)
    viewer.canvas.grid.enabled = False
    viewer.window.remove_dock_widget(d)

    # 4. consistency inspector on the result
    inspector = InspectorWidget(viewer)
    d = dock(inspector, "Inspector")
    inspector.volume.value = result
    inspector.source.value = image_layer
    inspector.plot()
    inspector.draw_planes()
    for layer in viewer.layers:
        layer.visible = layer is result
    viewer.reset_view()
    save(viewer, args.out / "inspector.png", app)
    viewer.window.remove_dock_widget(d)

    # 5. gallery: one mask x (its own slice + a generated slice)
    gallery = GalleryWidget(viewer)
    d = dock(gallery, "Gallery")
    gallery.mask.value, gallery.reference.value = mask_layer, image_layer
    gallery.informed_layers.value = [image_layer]
    gallery.generated.value = 1 if bundle.slice is not None else 0
    gallery.device.value = "cpu"  # the dock's default quality (Fast), as the sampling dock's
    if args.steps:
        gallery.steps.value = args.steps
    job = gallery.run()
    wait(app, lambda: job.finished)
    viewer.reset_view()
    save(viewer, args.out / "gallery.png", app)
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
