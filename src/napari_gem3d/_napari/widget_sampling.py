"""Sampling dock: mask (+ image, informed slice) -> a new volume, filled live window by window.

On Run (GUI thread) the inputs are snapshotted (layer data copied), checked cheaply (labels, geometry),
the window plan is computed, and an output Image layer is preallocated in the mask's geometry, see-through
until filled (``result_display``). A worker then runs :func:`~.sampling_steps.sampling_steps`: it prepares
the frozen request (``pipeline.prepare_request``: resampling to the model grid), drives the one sampler
generator, maps each finished window into the source geometry and intensity units and finally resamples the
whole volume back (``pipeline.finish``). The GUI thread only copies finished blocks into the layer in place.
Yellow boxes (``window_boxes``) show the window(s) being generated.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, PushButton, SpinBox
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog, QHBoxLayout, QLabel, QMenu, QSizePolicy, QToolButton, QWidget
from superqt.utils import qthrottled

from ..sampling.plan import rounds
from ..sampling.request import (
    UNTRAINED_PRIOR_CORRELATION,
    coarse_correlation_for,
    model_slice_noise_correlation,
    pastes_informed,
)
from ._qt_helpers import DockWidget, grey_out_devices, layer_choices, narrow, note, same_geometry, scan_choices, section
from .jobs import Handlers, Job, JobToken
from .layers import RESULT_KEY, SOURCE_KEY, layer_to_volume, transforms_of
from .quality import lesion_guidance_for, lesion_strength_spin, link_quality, quality_combo, solver_combo
from .result_display import done_display, fill_display, filling_display, result_name
from .sampling_steps import Prepared, WindowBlock, plan_for, regeneration_steps, sampling_steps
from .window_boxes import WindowBoxes

GEM3D = "GEM-3D"
METHODS = {GEM3D: "gem3d", "Mask only (baseline)": "baseline"}
INFORMED_IMAGE = "Scan, start slice"
INFORMED_WIDGET = "Informed slice dock"
#: view name -> (napari dims order, 2-D camera orientation); world axes are (S, P, L), see layers.py
VIEWS = {
    "axial": ((0, 1, 2), ("down", "right")),
    "coronal": ((1, 0, 2), ("up", "right")),
    "sagittal": ((2, 0, 1), ("up", "right")),
}
BOX_DELAY_MS = 30  # the first window boxes wait for the result layer's first draw
VIEW_REFRESH_MS = 150  # at most ~7 redraws per second however fast windows arrive
REGEN_DEBOUNCE_MS = 500  # the "auto" regeneration: wait this long after the last edit


@dataclass
class LiveRun:
    """GUI-side state of one generation (touched only in the GUI-thread slots)."""

    layer: Any
    mask_layer: Any
    grid: Any
    reference: Any
    mask_volume: Any
    plan: list
    options: Any = None  # the SamplingOptions of the run (regeneration reuses device and precision)
    started: float = field(default_factory=time.perf_counter)


class SamplingWidget(DockWidget):
    """Form + Run / Cancel / New seed; the live output layer is new, the inputs are never modified.

    The main form speaks a radiologist's words (mask, scan, appearance, start slice, view); the sampler's
    own settings (steps, solver, eta, slice coherence, seed, device, precision, official compat) sit in a
    collapsed "Advanced" section.
    """

    def __init__(self, viewer: napari.viewer.Viewer):  # noqa: F821 - string annotation for napari
        super().__init__(viewer, "GEM-3D sampling")
        import napari

        self._model_row()
        self.mask = ComboBox(
            name="mask", label="Mask", choices=layer_choices(viewer, napari.layers.Labels),
            tooltip="the label map (tissue + lesion labels) the new volume is drawn from; it is never modified",
        )
        self.image = ComboBox(
            name="image", label="Scan", choices=scan_choices(viewer), nullable=True,
            tooltip="the patient's scan: its appearance (at the start slice), its intensity units and its "
                    "geometry, which must match the mask's",
        )
        self.informed = ComboBox(
            name="informed", label="Appearance", choices=[INFORMED_IMAGE, INFORMED_WIDGET],
            tooltip="the informed slice that carries the patient's appearance: the scan's own slice at the "
                    "start, or the slice chosen (or generated) in the Informed slice dock",
        )
        self.mode = ComboBox(
            name="mode", label="Method", choices=list(METHODS), value=GEM3D,
            tooltip="GEM-3D: appearance from the informed slice. Mask only: the baseline model, from the mask "
                    "alone (no informed slice)",
        )
        self.start = SpinBox(
            name="start", label="Start slice", min=0, max=0, value=0,
            tooltip="the slice generation starts from (with the scan's appearance) and spreads up and down "
                    "from; counted along the model's slice axis, as the Informed slice dock counts",
        )
        self.quality = quality_combo()
        self.lesion_strength = lesion_strength_spin()
        self.view = ComboBox(
            name="view", label="View", choices=list(VIEWS), value="axial",
            tooltip="the plane shown: in coronal or sagittal view each window fills as a band",
        )
        self.follow = CheckBox(
            name="follow", text="Follow the window", value=True,
            tooltip="move to the slices being generated (axial view); off: the view stays where you put it",
        )
        self.force = CheckBox(
            name="force", text="Run anyway if out of domain", value=False,
            tooltip="the domain check compares the scan and mask with the model card (modality, labels, field "
                    "of view); when it refuses, this runs anyway and records the findings in the result",
        )
        self.steps = SpinBox(name="steps", label="Steps", min=1, max=1000, value=50,
                             tooltip="denoising steps per window: more is slower and, up to ~50, better")
        self.solver = solver_combo()
        self.eta = FloatSpinBox(name="eta", label="Noise (eta)", min=0.0, max=1.0, step=0.1, value=1.0,
                                tooltip="DDIM's eta: 0 deterministic, 1 the official stochastic sampler")
        self.coherence = FloatSpinBox(
            name="coherence", label="Coherence", min=0.0, max=0.99, step=0.05, value=UNTRAINED_PRIOR_CORRELATION,
            tooltip="slice coherence: correlation of the noise between neighbouring slices (GEM-3D): higher "
                    "gives fewer slice-to-slice stripes; 0 is the paper's independent noise (the noise's coarse "
                    "band, 2x2 latent block means, is correlated at least 0.995 whenever this is above 0). Set "
                    "to the loaded "
                    "model's own when it loads (the noise it was trained with), unless you changed it. Not used "
                    "by the baseline or the official-compat mode",
        )
        self._model_coherence = float(self.coherence.value)  # the value the dock set, not the user
        self.seed = SpinBox(name="seed", label="Seed", min=0, max=2**31 - 1, value=0,
                            tooltip="the random seed: the same seed and settings give the same volume")
        self.device = ComboBox(
            name="device", label="Device", choices=["auto", "cpu", "cuda", "mps"], value="auto",
            tooltip="where the model runs: auto takes a GPU when there is one",
        )
        self.precision = ComboBox(
            name="precision", label="Precision", choices=["fp32", "bf16", "fp16"], value="fp32",
            tooltip="number format: half precision (bf16, fp16) is faster on GPUs only",
        )
        self.paste = CheckBox(
            name="paste", text="Paste the scan's start slice", value=False,
            tooltip="put the scan's own slice into the result at the start slice, as a known frame. Off "
                    "(default): that slice only sets the appearance and every slice is generated, as the official "
                    "sampler does, which gave fewer slice-to-slice stripes on held-out brains. Not used by the "
                    "official-compat mode",
        )
        self.compat = CheckBox(
            name="compat", text="Official compat", value=False,
            tooltip="reproduce the official GEM-3D code exactly, its known bugs included (GEM-3D method only)",
        )
        self.main = Container(widgets=[self.mask, self.image, self.informed, self.mode, self.start, self.quality,
                                       self.lesion_strength, self.view])
        self.advanced = Container(widgets=[self.steps, self.solver, self.eta, self.coherence, self.seed,
                                           self.device, self.precision])
        self.fields = [*self.main, self.follow, self.force, *self.advanced, self.paste, self.compat]
        for container in (self.main, self.advanced):
            self.track(container)
            narrow(container)
        self.body.addWidget(self.main.native)
        self.body.addWidget(self.follow.native)
        self.body.addWidget(self.force.native)
        self.device_note = note("")
        self.advanced_section = section("Advanced", self.advanced, self.paste, self.compat, self.device_note,
                                        tooltip="the sampler's settings: steps, solver, noise, seed, device")
        self.body.addWidget(self.advanced_section)
        hint = grey_out_devices(self.device)
        self.device_note.setText(hint)
        self.device_note.setVisible(bool(hint))

        self.run_button = PushButton(text="Run", tooltip="generate a new volume from the mask (a new layer)")
        self.cancel_button = PushButton(text="Cancel", enabled=False,
                                        tooltip="stop within one denoising step; finished windows are kept")
        self.again_button = PushButton(text="New seed", enabled=False,
                                       tooltip="run the last generation again with the next seed")
        self.run_button.clicked.connect(self._run_clicked)
        self.cancel_button.clicked.connect(self.cancel)
        self.again_button.clicked.connect(self._again_clicked)
        buttons = Container(
            widgets=[self.run_button, self.cancel_button, self.again_button], layout="horizontal", labels=False
        )
        self.body.addWidget(buttons.native)
        self.regen_button = PushButton(
            text="Update edits", enabled=False,
            tooltip="after a mask edit, refill only the slices whose mask changed (plus 2 each side) in the last "
                    "result, with its seed and settings; the other slices stay exactly as they are",
        )
        self.auto_regen = CheckBox(name="auto_regen", text="auto", value=False,
                                   tooltip="update the edits half a second after an edit ends; a newer "
                                           "edit cancels an update it makes stale")
        self.regen_button.clicked.connect(lambda *_: self.regenerate_changes())
        regen = Container(widgets=[self.regen_button, self.auto_regen], layout="horizontal", labels=False)
        self.body.addWidget(regen.native)
        self._regen_timer = QTimer(self)
        self._regen_timer.setSingleShot(True)
        self._regen_timer.setInterval(REGEN_DEBOUNCE_MS)
        self._regen_timer.timeout.connect(self._auto_regenerate)
        self._regen_pending = False
        self.session.mask_edited.connect(self._mask_edited)
        viewer.layers.events.removed.connect(self._layer_removed)
        self.status = note("Ready.")
        self.body.addWidget(self.status)
        self.body.addStretch(1)
        self.live: LiveRun | None = None
        self.boxes = WindowBoxes(viewer)
        self.boxes.adopt()
        self._pending_view = None
        self._refresh_view = qthrottled(self._update_view, timeout=VIEW_REFRESH_MS, leading=True)
        self.session.model_changed.connect(self._show_model)
        self.session.informed_changed.connect(self._informed_chosen)
        self.session.loading_changed.connect(self._loading)
        self.mask.changed.connect(self._mask_chosen)
        self.view.changed.connect(self._view_chosen)
        self.mode.changed.connect(self._mode_chosen)
        link_quality(self.quality, self.solver, self.steps, self.eta)
        self._show_model(self.session.bundle)
        self.reset_choices()
        if self.session.informed is not None:  # chosen before this dock opened: it is the user's choice
            self.informed.value = INFORMED_WIDGET
        self._mask_chosen()
        self._mode_chosen()

    # ----------------------------------------------------------------------------------- model row
    def _model_row(self) -> None:
        row = QWidget()
        layout = QHBoxLayout(row)
        layout.setContentsMargins(0, 0, 0, 0)
        self.model_label = QLabel("Model: (default)")
        self.model_label.setWordWrap(True)
        self.model_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        load = QToolButton()
        load.setText("Model…")
        load.setToolTip("load another model (a bundle folder or an official GEM-3D checkpoint), or give the "
                        "GPU memory back")
        load.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(load)
        menu.addAction("Model bundle folder…", self._choose_bundle)
        menu.addAction("Official GEM-3D checkpoint (.ckpt)…", self._choose_checkpoint)
        menu.addSeparator()
        menu.addAction("Release GPU memory", self.release_memory)
        load.setMenu(menu)
        layout.addWidget(self.model_label, 1)
        layout.addWidget(load)
        self.body.addWidget(row)

    def _show_model(self, bundle) -> None:
        if bundle is None:
            from .session import default_model_path

            default = default_model_path()
            text = (
                "Model: bundled demo model (loads on first run)"
                if default
                else ("Model: none. The bundled demo model is not installed: use Load model…")
            )
        else:
            card = bundle.config.card
            knows = (f"{card.modality} {card.contrast}, {card.body_region}" if card.known
                     else "no model card: its domain is unknown")
            text = f"Model: {bundle.config.name} ({bundle.model_hash[:10] or 'in memory'}): {knows}"
            self._mode_chosen()  # lesion strength follows the model's card
            if float(self.coherence.value) == self._model_coherence:  # not changed by the user: the model's
                self._model_coherence = model_slice_noise_correlation(bundle.config)
                self.coherence.value = self._model_coherence
            self.model_label.setToolTip("\n".join(card.describe(bundle.config.labels.names, bundle.config.image_size,
                                                                bundle.config.slice_axis)))
        self.model_label.setText(text)

    def _informed_chosen(self, choice) -> None:
        """A slice chosen in the informed-slice dock: use it, starting at that very slice."""
        if choice is None or self._closed:
            return
        self.informed.value = INFORMED_WIDGET
        self._start_from_informed()

    def _start_from_informed(self) -> None:
        choice, grid = self.session.informed, self._grid()
        if choice is None or grid is None or self.informed.value != INFORMED_WIDGET:
            return
        start, exact = choice.start_for(grid.num_slices)
        self.start.value = start
        if not exact and choice.index is not None:
            self.status.setText(f"The informed slice comes from a scan with {choice.num_slices} slices, the mask "
                                f"has {grid.num_slices}: starting at the same relative height, slice {start}.")

    def _grid(self):
        """The mask's model grid (None without a mask or a known model configuration)."""
        from ..volume import model_grid

        layer = self.mask.value
        config = self.session.bundle.config if self.session.bundle is not None else None
        if layer is None:
            return None
        size, axis = (config.image_size, config.slice_axis) if config is not None else ((64, 64), "S")
        try:
            return model_grid(layer_to_volume(layer, copy=False), size, axis)
        except ValueError:
            return None

    def _mask_chosen(self, *_) -> None:
        """Defaults follow the mask: the scan it belongs to, and the start slice's range (middle slice)."""
        layer = self.mask.value
        if layer is None or self._closed:
            return
        scan = self.image.value
        if scan is None or not same_geometry(scan, layer):
            matching = [lyr for _, lyr in scan_choices(self.viewer)() if same_geometry(lyr, layer)]
            if matching:
                self.image.value = matching[0]
        grid = self._grid()
        if grid is not None:
            was_default = self.start.max == 0
            self.start.max = grid.num_slices - 1
            if was_default:
                self.start.value = grid.num_slices // 2
            self.start.label = "Start slice"
            self.start.tooltip = (f"the slice generation starts from and spreads up and down from: 0 (bottom) to "
                                  f"{grid.num_slices - 1} (top) along the model's slice axis ({grid.slice_axis}), "
                                  "as the Informed slice dock counts")
        self._start_from_informed()

    def _mode_chosen(self, *_) -> None:
        gem3d = METHODS[self.mode.value] == "gem3d"
        self.informed.enabled = self.compat.enabled = self.coherence.enabled = self.paste.enabled = gem3d
        bundle = self.session.bundle  # none loaded yet: the bundled demo model, whose card names lesion labels
        self.lesion_strength.enabled = gem3d and (bundle is None or bool(bundle.config.card.lesion_labels))

    def _view_chosen(self, *_) -> None:
        order, orientation = VIEWS[self.view.value]
        self.viewer.dims.ndisplay = 2
        self.viewer.dims.order = order
        self.viewer.camera.orientation2d = orientation
        self.viewer.reset_view()

    def _loading(self, loading: bool) -> None:
        if self._closed:
            return
        if loading:
            self.status.setText("Loading the model (first use; a few seconds)…")
        self.run_button.enabled = not loading and not (self.session.job is not None and self.session.job.running)

    def _choose_bundle(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose a GEM-3D model bundle folder")
        if path:
            self.load_model(path)

    def _choose_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Choose an official GEM-3D checkpoint", "", "Checkpoints (*.ckpt *.pt *.pth)"
        )
        if path:
            self.load_model(path)

    def load_model(self, path: str):
        """Load a bundle folder or convert + load an official checkpoint (in a worker)."""
        from .jobs import _report

        self.status.setText(f"Loading model {path}…")
        return self.session.load_model(
            path,
            on_done=lambda b: self.status.setText(f"Model {b.config.name} loaded."),
            on_error=lambda exc: (
                _report(exc, "model loading"),
                self.status.setText(f"Loading failed: {exc}"),
            ),
        )

    def release_memory(self) -> None:
        from napari.utils.notifications import show_info

        if self.session.job is not None and self.session.job.running:
            show_info("A generation is running: cancel it before releasing memory.")
            return
        message = self.session.release_memory()
        self.status.setText(message)
        show_info(message)

    # ---------------------------------------------------------------------------------------- run
    def _run_clicked(self, *_):
        self.run()

    def _again_clicked(self, *_):
        self.run_again()

    def values(self) -> dict[str, Any]:
        out = {w.name: w.value for w in self.fields}
        out["mask"] = getattr(out["mask"], "name", None)
        out["image"] = getattr(out["image"], "name", None)
        return out

    def run_again(self) -> Job | None:
        """Repeat the last generation with seed + 1 (same layers and settings)."""
        last = self.session.last_run
        if last is None:
            from napari.utils.notifications import show_info

            show_info("Nothing to repeat yet: press Run first.")
            return None
        self.seed.value = int(last.values.get("seed", self.seed.value)) + 1
        return self.run()

    def run(self) -> Job | None:
        """Start a generation: returns the Job, or None when the inputs are not valid or the model is still
        loading (the run then starts by itself once it is loaded)."""
        from napari.utils.notifications import show_warning

        if self.session.job is not None and self.session.job.running:
            show_warning("A GEM-3D job is already running in this viewer: cancel it first.")
            return None
        try:
            return self.session.when_model_ready(self._start, status=self.status.setText, on_error=self._not_started)
        except Exception as exc:  # invalid inputs: tell the user what to fix
            self._not_started(exc)
            return None

    def _not_started(self, exc) -> None:
        from napari.utils.notifications import show_error

        from ..domain import DomainError

        first = "outside the model's domain" if isinstance(exc, DomainError) else str(exc).split("\n")[0]
        show_error(f"GEM-3D not started: {first[:120]}{'…' if len(first) > 120 else ''} (see the Sampling dock)")
        self.status.setText(f"Not started: {exc}")

    def _start(self, bundle) -> Job:
        from ..sampling import SamplingOptions
        from .session import RunSnapshot

        mask_layer, image_layer = self.mask.value, self.image.value
        if mask_layer is None:
            raise ValueError("choose a mask (Labels) layer: open one, or make one in the Mask editor")
        mode = METHODS[self.mode.value]
        official = mode == "gem3d" and bool(self.compat.value)
        mask_volume = layer_to_volume(mask_layer)  # snapshots: the user may keep painting
        image_volume = layer_to_volume(image_layer) if image_layer is not None else None
        informed = None
        if mode == "gem3d":
            if self.informed.value == INFORMED_WIDGET:
                if self.session.informed is None:
                    raise ValueError(
                        "no informed slice chosen yet: choose one in the Informed slice dock, or set "
                        f"Appearance to '{INFORMED_IMAGE}' with a scan"
                    )
                informed = self.session.informed.informed
            elif image_volume is None:
                raise ValueError(
                    "GEM-3D takes the appearance from a scan: choose the Scan, use the Informed slice "
                    "dock, or set Method to 'Mask only (baseline)'"
                )
        rho = float(self.coherence.value) if mode == "gem3d" and not official else 0.0
        options = SamplingOptions(
            steps=int(self.steps.value),
            eta=float(self.eta.value),
            seed=int(self.seed.value),
            device=self.device.value,
            precision=self.precision.value,
            mode=mode,
            official_compat=official,
            solver=self.solver.value,
            cpu_threads="auto",  # the GUI thread and other work hold cores: use the idle ones
            slice_noise_correlation=rho,
            slice_noise_coarse_correlation=coarse_correlation_for(rho),
            paste_informed=bool(self.paste.value) and not official,
            lesion_guidance=(lesion_guidance_for(self.lesion_strength, bundle) if mode == "gem3d" and not official
                             else 1.0),  # the official sampler has none
        )
        # cheap checks and the plan here; the heavy preparation runs in the worker (sampling_steps)
        from ..domain import require_domain
        from ..sampling.device import effective_precision, resolve_device

        effective_precision(options.precision, resolve_device(options.device))  # bf16 on a CPU: refused now
        from ..volume import model_grid, same_grid

        if image_volume is not None and not same_grid(image_volume, mask_volume):
            raise ValueError(
                f"image {image_layer.name!r} {image_volume.shape} and mask {mask_layer.name!r} "
                f"{mask_volume.shape} are not in one geometry: resample the mask onto the image first"
            )
        # (the domain check validates the mask's labels first)
        domain = require_domain(bundle.config, mask_volume, image_volume, force=bool(self.force.value),
                                what=f"mask {mask_layer.name!r}" + (f" and image {image_layer.name!r}" if image_layer
                                                                   else ""),
                                override="tick 'Run anyway if out of domain' and press Run again")
        grid = model_grid(mask_volume, bundle.config.image_size, bundle.config.slice_axis)
        start = int(self.start.value)
        if not 0 <= start < grid.num_slices:
            raise ValueError(f"the start slice {start} is outside 0..{grid.num_slices - 1} for this mask")
        # no informed slice given: the worker picks the scan's own start slice, a true slice
        start_known = pastes_informed(options, informed.is_true_slice if informed is not None else True)
        plan = plan_for(bundle.config, grid.num_slices, start, start_known, options)
        layer = self._output_layer(mask_layer, image_layer, options, plan, grid)
        layer.metadata[RESULT_KEY]["domain"] = domain.to_dict()
        self.session.add_result(layer, mask_layer)
        self.session.last_run = RunSnapshot(
            weakref.ref(mask_layer), None if image_layer is None else weakref.ref(image_layer), self.values()
        )
        self.live = LiveRun(layer, mask_layer, grid, None, mask_volume, plan, options)
        self.boxes.attach(layer, grid)
        token = JobToken()
        steps = sampling_steps(
            bundle,
            mask_volume,
            image=image_volume,
            informed=informed,
            start=start,
            options=options,
            cancel=token,
        )
        job = Job(
            steps,
            total=len(plan) + 1,  # preparing + one per window
            desc=f"GEM-3D sampling ({len(plan)} windows)",
            token=token,
            handlers=Handlers(self._on_message, self._on_done, None, self._on_cancelled, self._on_finished),
        )
        job.owner = self
        self.session.set_job(job)
        self._set_running(True)  # (the window boxes come after the worker's first message, _on_prepared)
        self.status.setText(f"Generating {len(plan)} windows ({options.steps} steps each)…")
        return job.start()

    def _output_layer(self, mask_layer, image_layer, options, plan, grid):
        # the intensity window is known once the worker has fitted it (Prepared); until then [-1, 1].
        # Unfilled voxels are drawn transparent: the scan shows beneath until each window arrives.
        floor, display = filling_display(-1.0, 1.0)
        data = np.full(mask_layer.data.shape, floor, dtype=np.float32)
        geometry_source = image_layer if image_layer is not None else mask_layer
        metadata = {
            RESULT_KEY: {
                "status": "running",
                "stale": False,
                "windows_done": [],
                "plan": [
                    {"start": w.start, "stop": w.stop, "direction": w.direction, "round": w.round}
                    for w in plan
                ],
                "slice_axis": grid.slice_axis,
                "mask_layer": mask_layer.name,
                "image_layer": None if image_layer is None else image_layer.name,
                "mask_version": self.session.mask_version(mask_layer),
                "settings": self.values(),
            }
        }
        if SOURCE_KEY in geometry_source.metadata:
            metadata[SOURCE_KEY] = dict(geometry_source.metadata[SOURCE_KEY])
        active = self.viewer.layers.selection.active
        layer = self.viewer.add_image(
            data,
            name=result_name(options.mode, options.seed),
            metadata=metadata,
            blending="translucent",
            **display,
            **transforms_of(mask_layer),
        )
        self.boxes.raise_to_top()
        self.viewer.layers.selection.active = active
        return layer

    # ----------------------------------------------------------------------------- GUI-thread slots
    def _show_running(self, finished: int) -> None:
        live = self.live
        if live is None or finished >= len(live.plan):
            self.boxes.hide()
            return
        nxt = live.plan[finished]
        running = [w for w in live.plan[finished:] if w.round == nxt.round]
        self.boxes.show([(w.start, w.stop) for w in running])

    def _on_message(self, message) -> None:
        if isinstance(message, Prepared):
            self._on_prepared(message.reference)
        else:
            self._on_window(message)

    def _on_prepared(self, reference) -> None:
        live = self.live
        if live is None:
            return
        live.reference = reference
        if reference is not None:
            live.layer.data[...] = fill_display(live.layer, reference.lo, reference.hi)  # in place; see-through
        # the boxes after this, not at Run: building their layers in the same turn of the event loop as the
        # result layer (or its new colour map) froze the viewer for both at once (on first use ~0.3 s)
        QTimer.singleShot(BOX_DELAY_MS, self._first_boxes)
        self.status.setText(f"Generating {len(live.plan)} windows…")

    def _first_boxes(self) -> None:
        live = self.live
        if live is not None and not self._closed and not live.layer.metadata[RESULT_KEY]["windows_done"]:
            self._show_running(0)
            # the later rounds run up to two windows at once (up and down): their boxes are made now, in
            # turns of their own, not when the first window arrives
            widest = max(len(group) for group in rounds(live.plan))
            QTimer.singleShot(BOX_DELAY_MS, lambda: self.boxes.reserve(widest, BOX_DELAY_MS))

    def _on_window(self, message: WindowBlock) -> None:
        live = self.live
        if live is None:
            return
        update = message.update
        live.layer.data[message.index] = message.block  # in place: no events.data, contrast limits kept
        info = live.layer.metadata[RESULT_KEY]
        info["windows_done"].append([int(update.z0), int(update.z1)])
        self._pending_view = (update.index + 1, message.index)
        self._refresh_view()
        # (napari's progress bar counts the windows; its description is set once: updating it calls
        # processEvents, which would re-enter this slot)
        slices = f"slices {update.z0}-{update.z1 - 1} ({update.direction})"
        text = f"window {update.index + 1}/{update.total}: {slices}"
        self.status.setText(f"{text}, {update.elapsed:.1f} s")

    def _update_view(self) -> None:
        """Redraw the output, move the boxes and follow the window (throttled: bursts coalesce)."""
        live, pending = self.live, self._pending_view
        if live is None or pending is None:
            return
        self._pending_view = None
        finished, index = pending
        live.layer.refresh()
        self._show_running(finished)
        if self.follow.value:
            self._follow(index)

    def _follow(self, index) -> None:
        axis = next(a for a, s in enumerate(index) if s != slice(None))
        if axis not in self.viewer.dims.not_displayed:
            return
        centre = [0.0, 0.0, 0.0]
        centre[axis] = (index[axis].start + index[axis].stop - 1) / 2.0
        world = self.live.layer.data_to_world(centre)
        self.viewer.dims.set_point(axis, float(world[axis]))

    def _on_done(self, generated) -> None:
        live = self.live
        if live is None:
            return
        self._pending_view = None
        live.layer.data[...] = generated.volume.array  # equals the live blocks; in place
        lo, hi = (live.reference.lo, live.reference.hi) if live.reference is not None else (-1.0, 1.0)
        done_display(live.layer, lo, hi)
        live.layer.refresh()
        info = live.layer.metadata[RESULT_KEY]
        widget = {"name": "GEM-3D sampling dock", "settings": info.get("settings")}
        info.update(status="complete", provenance={**generated.provenance, "widget": widget,
                                                   "domain": info.get("domain")})
        self.status.setText(
            f"Done: {len(live.plan)} windows in {generated.provenance['timings_s']['total']:.1f} s "
            f"on {generated.provenance['device']}."
        )

    # ------------------------------------------------------------------------------ regeneration
    def regenerate_changes(self) -> Job | None:
        """Refill only the slices of the last result whose mask changed since it was made."""
        from napari.utils.notifications import show_error

        if self.session.job is not None and self.session.job.running:
            self.status.setText("A GEM-3D job is running: cancel it first.")
            return None
        try:
            return self._start_regeneration()
        except Exception as exc:  # nothing changed, no result, another model: say what to do
            show_error(f"GEM-3D update edits: {exc}")
            self.status.setText(f"Not updated: {exc}")
            return None

    def _start_regeneration(self) -> Job:
        from ..sampling.plan import plan_bridge
        from ..sampling.regenerate import margin_for, plan_regeneration
        from ..volume import Volume, to_model

        live = self.live
        if live is None or live.layer not in self.viewer.layers:
            raise ValueError("run a generation first: Update edits refills the last result")
        info = live.layer.metadata[RESULT_KEY]
        prov = info.get("provenance") or {}
        if info.get("status") != "complete" or "mask_slices_sha256" not in prov:
            raise ValueError("the last result is not complete (cancelled or still running): press Run")
        bundle = self.session.bundle
        if bundle is None:
            raise ValueError("no model is loaded: press Run first")
        edited = layer_to_volume(live.mask_layer)
        margin = margin_for(live.options)
        plan = plan_regeneration(prov["mask_slices_sha256"], to_model(edited, live.grid, "labels"), margin)
        if plan.full:
            start = int(prov.get("start_slice", live.grid.num_slices // 2))
            windows = plan_for(bundle.config, live.grid.num_slices, start, pastes_informed(live.options, True),
                               live.options)
        else:
            overlap = bundle.config.overlap if live.options.overlap is None else live.options.overlap
            windows = plan_bridge(live.grid.num_slices, bundle.config.window, overlap, plan.lo, plan.hi)
        snapshot = layer_to_volume(live.layer)
        previous = Volume(snapshot.array, snapshot.affine, {"provenance": prov})
        image_layer = self.image.value
        image = layer_to_volume(image_layer) if (plan.full and image_layer is not None) else None
        live.plan, live.mask_volume = windows, edited
        info["windows_done"] = []
        token = JobToken()
        steps = regeneration_steps(bundle, previous, edited, image=image, margin=margin, cancel=token,
                                   device=live.options.device, precision=live.options.precision,
                                   cpu_threads="auto")
        job = Job(steps, total=len(windows), desc=f"GEM-3D regenerate ({len(windows)} windows)", token=token,
                  handlers=Handlers(self._on_window, self._on_regenerated, None, self._on_regen_cancelled,
                                    self._on_finished))
        job.owner = self
        self.session.set_job(job)
        self._set_running(True)
        self._show_running(0)
        what = "a full run (most slices changed)" if plan.full else f"slices {plan.lo}-{plan.hi - 1}"
        self.status.setText(f"Regenerating {what}: {len(windows)} window(s)…")
        return job.start()

    def _on_regenerated(self, generated) -> None:
        live = self.live
        if live is None:
            return
        self._pending_view = None
        live.layer.data[...] = generated.volume.array  # outside the range: the same values as before
        live.layer.refresh()
        info = live.layer.metadata[RESULT_KEY]
        info.update(status="complete", provenance={**generated.provenance, "widget": {
            "name": "GEM-3D sampling dock", "settings": info.get("settings"), "action": "regenerate changes"}})
        self.session.renew_result(live.layer, live.mask_layer)
        regen = generated.provenance.get("regenerated", {})
        lo, hi = regen.get("range", (0, 0))
        what = "a full run" if regen.get("full_run") else f"slices {lo}-{hi - 1}"
        warning = f" Note: {regen['warning']}." if regen.get("warning") else ""
        self.status.setText(f"Regenerated {what} in {generated.provenance['timings_s']['total']:.1f} s; "
                            f"the other slices are unchanged.{warning}")

    def _on_regen_cancelled(self, _messages: int) -> None:
        live = self.live
        if live is not None:  # the refilled windows so far are kept; the result is stale until regenerated
            live.layer.refresh()
            live.layer.metadata[RESULT_KEY]["status"] = "complete"
        self.status.setText("Regeneration cancelled; the result is stale until it is regenerated.")

    def _layer_removed(self, event) -> None:
        """The live output layer deleted mid-run: nobody will see the result, so the run stops."""
        live = self.live
        if self._closed or live is None or getattr(event, "value", None) is not live.layer:
            return
        job = self.session.job
        if job is not None and getattr(job, "owner", None) is self and job.running:
            job.cancel()
            self.status.setText("The output layer was removed: the run was cancelled.")
        self.live = None
        self.regen_button.enabled = False

    def shutdown(self) -> None:
        if not self._closed:
            self.viewer.layers.events.removed.disconnect(self._layer_removed)
        super().shutdown()

    def _mask_edited(self, layer, _version) -> None:
        live = self.live
        if not self.auto_regen.value or live is None or layer is not live.mask_layer:
            return
        self._regen_timer.start()  # restarted by every edit: runs once the edits pause

    def _auto_regenerate(self) -> None:
        job = self.session.job
        if job is not None and job.running:
            if getattr(job, "owner", None) is self and job.desc.startswith("GEM-3D regenerate"):
                self._regen_pending = True  # a newer edit makes the running regeneration stale
                job.cancel()
            return
        self.regenerate_changes()

    def _on_cancelled(self, _messages: int) -> None:
        live = self.live
        if live is None:
            return
        finished = len(live.layer.metadata[RESULT_KEY]["windows_done"])
        self._pending_view = None
        live.layer.refresh()
        info = live.layer.metadata[RESULT_KEY]
        info.update(status="partial", partial=True)
        info["provenance"] = {
            "status": "partial",
            "finished_windows": finished,
            "total_windows": len(live.plan),
            "settings": info.get("settings"),
        }
        if not live.layer.name.endswith("(partial)"):
            live.layer.name = f"{live.layer.name} (partial)"
        self.status.setText(
            f"Cancelled after {finished} of {len(live.plan)} windows; the finished windows are "
            "kept (marked partial)."
        )

    def _on_finished(self) -> None:
        self._pending_view = None
        self.boxes.hide()
        self._set_running(False)
        self.session.set_job(None)
        if self._regen_pending:
            self._regen_pending = False
            self.regenerate_changes()

    def _set_running(self, running: bool) -> None:
        self.run_button.enabled = not running
        self.again_button.enabled = not running and self.session.last_run is not None
        self.regen_button.enabled = not running and self.live is not None
        self.cancel_button.enabled = running

    def cancel(self, *_) -> None:
        job = self.session.job
        if job is not None and job.running:
            self.status.setText("Cancelling (stops within one denoising step)…")
            job.cancel()
