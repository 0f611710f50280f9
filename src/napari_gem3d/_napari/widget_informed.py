"""Informed-slice dock: pick the patient's appearance from a scan, or generate it with the slice model.

- "current slice": the slice through the viewer's current point along the model's slice axis;
- "slice number": slice k (0 = bottom) along that axis, counted as the sampling dock's start slice;
- "generate": the bundle's position-conditioned slice model at a height p with a seed (in a worker).

The choice is stored in the session, with its slice index, where the sampling and gallery docks find it
(the sampling dock then starts at that very slice); its description goes into every result's provenance.
It is previewed as a thumbnail in the dock: a 2-D layer would stretch the viewer's 3-D sliders.
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSlider, PushButton, SpinBox
from qtpy.QtCore import Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QLabel

from ._qt_helpers import DockWidget, narrow, note, scan_choices, section
from .jobs import Handlers, Job, JobToken, run_once
from .layers import layer_to_volume, model_slice_index

FROM_LAYER = "A scan"
GENERATE = "Generate (slice model)"
CURRENT = "Current slice"
NUMBER = "Slice number"
THUMBNAIL = 160  # px: the preview's width in the dock


class InformedSliceWidget(DockWidget):
    def __init__(self, viewer: napari.viewer.Viewer):  # noqa: F821 - string annotation for napari
        super().__init__(viewer, "GEM-3D informed slice")
        self.source = ComboBox(
            name="source", label="From", choices=[FROM_LAYER, GENERATE],
            tooltip="take the appearance from a slice of a scan (this patient or another), or let the slice "
                    "model generate one",
        )
        self.image = ComboBox(name="image", label="Scan", choices=scan_choices(viewer),
                              tooltip="the scan the slice is taken from")
        self.where = ComboBox(name="where", label="Slice", choices=[CURRENT, NUMBER], value=NUMBER,
                              tooltip="the slice shown in the viewer now, or a slice by its number")
        self.index = SpinBox(name="index", label="Number", min=0, max=0, value=0,
                             tooltip="slice number along the model's slice axis, 0 = bottom; the sampling "
                                     "dock starts generation at this very slice")
        self.position = FloatSlider(
            name="position", label="Height", min=0.0, max=1.0, step=0.01, value=0.5,
            tooltip="where in the head the generated slice lies: 0 bottom, 1 top (the model's position p)",
        )
        self.seed = SpinBox(name="seed", label="Seed", min=0, max=2**31 - 1, value=0,
                            tooltip="the random seed of the generated slice")
        self.steps = SpinBox(name="steps", label="Steps", min=1, max=1000, value=50,
                             tooltip="denoising steps of the slice model")
        self.form = Container(widgets=[self.source, self.image, self.where, self.index, self.position])
        self.advanced = Container(widgets=[self.seed, self.steps])
        for container in (self.form, self.advanced):
            self.track(container)
            narrow(container)
        self.body.addWidget(self.form.native)
        self.advanced_section = section("Advanced", self.advanced, tooltip="seed and steps of the slice model")
        self.body.addWidget(self.advanced_section)
        self.which = note("")
        self.body.addWidget(self.which)
        self.use_button = PushButton(text="Use this slice",
                                     tooltip="take this slice as the appearance for the sampling dock")
        self.use_button.clicked.connect(lambda *_: self.choose())
        self.body.addWidget(self.use_button.native)
        self.thumbnail = QLabel()
        self.thumbnail.setAlignment(Qt.AlignmentFlag.AlignLeft)
        self.thumbnail.setToolTip("the chosen informed slice, as the model sees it")
        self.body.addWidget(self.thumbnail)
        self.chosen = note("No informed slice chosen.")
        self.body.addWidget(self.chosen)
        self.body.addStretch(1)
        for w in (self.source, self.image, self.where, self.index, self.position):
            w.changed.connect(self._describe)
        self.image.changed.connect(self._image_chosen)
        viewer.dims.events.current_step.connect(self._describe)
        self.reset_choices()
        self._image_chosen()
        self._describe()

    def shutdown(self) -> None:
        if not self._closed:
            self.viewer.dims.events.current_step.disconnect(self._describe)
        super().shutdown()

    # --------------------------------------------------------------------------------- which slice
    def _grid(self, layer):
        from ..volume import model_grid

        config = self._config()
        size = config.image_size if config is not None else (64, 64)
        axis = config.slice_axis if config is not None else "S"
        return model_grid(layer_to_volume(layer, copy=False), size, axis)

    def _image_chosen(self, *_) -> None:
        layer = self.image.value
        if layer is None or self._closed:
            return
        try:
            n = self._grid(layer).num_slices
        except ValueError:
            return
        first = self.index.max == 0
        self.index.max = n - 1
        if first:
            self.index.value = n // 2

    def _grid_and_index(self):
        layer = self.image.value
        if layer is None:
            return None
        grid = self._grid(layer)
        if self.where.value == CURRENT:
            data = layer.world_to_data(self.viewer.dims.point[-layer.ndim :])
            k = int(np.clip(model_slice_index(grid, data), 0, grid.num_slices - 1))
        else:
            k = min(int(self.index.value), grid.num_slices - 1)
        return grid, k

    def _config(self):
        bundle = self.session.bundle
        return None if bundle is None else bundle.config

    def _describe(self, *_):
        if self._closed:
            return
        generating = self.source.value == GENERATE
        self.image.visible = self.where.visible = not generating
        self.advanced_section.setVisible(generating)
        self.position.visible = generating
        self.index.visible = not generating and self.where.value == NUMBER
        if generating:
            self.which.setText(f"The slice model draws a slice at height {self.position.value:.2f} (0 bottom, 1 top).")
            return
        try:
            found = self._grid_and_index()
        except ValueError as exc:
            self.which.setText(str(exc))
            return
        if found is None:
            self.which.setText("Choose a scan.")
            return
        grid, k = found
        self.which.setText(f"Slice {k} of {grid.num_slices} (0 = bottom, along the model's slice axis).")

    # --------------------------------------------------------------------------------------- choose
    def choose(self):
        """Pick or generate the informed slice in a worker (the model loads first if needed); returns the
        Job, or None when the inputs are not valid or the model is still loading (it then starts itself)."""
        if self.session.job is not None and self.session.job.running:
            self._failed(ValueError("a GEM-3D job is already running in this viewer: wait or cancel it"))
            return None
        try:
            then = self._generate if self.source.value == GENERATE else self._pick
            return self.session.when_model_ready(then, status=self.chosen.setText, on_error=self._failed)
        except Exception as exc:
            self._failed(exc)
            return None

    def _failed(self, exc) -> None:
        from napari.utils.notifications import show_error

        show_error(f"GEM-3D informed slice: {exc}")
        self.chosen.setText(f"Not chosen: {exc}")

    def _pick(self, bundle):
        from ..sampling.informed import pick_informed
        from .session import InformedChoice

        found = self._grid_and_index()
        if found is None:
            raise ValueError("choose a scan to take the slice from")
        grid, k = found
        layer = self.image.value
        volume = layer_to_volume(layer)  # a snapshot: the worker never sees the layer
        text = f"{layer.name}, slice {k} of {grid.num_slices}"

        def done(informed):
            self._chosen(InformedChoice(informed, text, position=k / grid.num_slices, index=k,
                                        num_slices=grid.num_slices, layer_name=layer.name))

        return self._job(run_once(pick_informed, volume, bundle.config, index=k, name=layer.name), done,
                         "Taking the slice…", "GEM-3D informed slice (pick)")

    def _generate(self, bundle):
        from ..sampling.informed import generate_informed
        from .session import InformedChoice

        p, seed, steps = float(self.position.value), int(self.seed.value), int(self.steps.value)
        text = f"generated at height {p:.2f}, seed {seed}, {steps} steps ({bundle.config.name})"
        token = JobToken()
        steps_run = run_once(generate_informed, bundle, p, seed=seed, steps=steps, device=self.session.device,
                             cancel=token)
        return self._job(steps_run, lambda informed: self._chosen(InformedChoice(informed, text, position=p)),
                         "Generating the informed slice…", "GEM-3D informed slice", token)

    def _job(self, steps, done, busy: str, desc: str, token=None) -> Job:
        def finished():
            self.use_button.enabled = True
            self.session.set_job(None)

        job = Job(steps, total=0, desc=desc, token=token or JobToken(), handlers=Handlers(
            returned=done, finished=finished, cancelled=lambda n: self.chosen.setText("Cancelled."),
            errored=self._failed))
        job.owner = self
        self.session.set_job(job)
        self.use_button.enabled = False
        self.chosen.setText(busy)
        return job.start()

    def _chosen(self, choice) -> None:
        self._preview(choice)
        self.session.set_informed(choice)
        self.chosen.setText(f"Informed slice: {choice.description}")

    def _preview(self, choice) -> None:
        """The slice (model grid, [-1, 1]) as a grey thumbnail in the dock."""
        image = np.asarray(choice.informed.image if choice.informed.image is not None else [[0.0]], np.float32)
        grey = np.ascontiguousarray(np.clip((image + 1.0) * 127.5, 0, 255).astype(np.uint8))
        h, w = grey.shape
        qimage = QImage(grey.data, w, h, w, QImage.Format.Format_Grayscale8).copy()
        self.preview_image = grey  # what the thumbnail shows (tests read it)
        self.thumbnail.setPixmap(QPixmap.fromImage(qimage).scaledToWidth(
            THUMBNAIL, Qt.TransformationMode.SmoothTransformation))
