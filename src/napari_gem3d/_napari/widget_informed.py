"""Informed-slice dock: pick the patient prior from any image layer, or generate it with the slice model.

- "current slice": the slice through the viewer's current point along the model's slice axis;
- "relative position p": slice ``int(p * N)`` along that axis (the label says which);
- "generate": the bundle's position-conditioned slice model at p with a seed (in a worker).

The choice is previewed as a 2-D layer (beside the volume) and stored in the session, where the
sampling and gallery docks find it; its description goes into every result's provenance.
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSlider, PushButton, SpinBox

from ._qt_helpers import DockWidget, layer_choices, note
from .jobs import Handlers, Job, JobToken, run_once
from .layers import layer_to_volume, model_slice_index

FROM_LAYER = "Image layer"
GENERATE = "Generate with the slice model"
CURRENT = "Current slice"
RELATIVE = "Relative position p"
PREVIEW_NAME = "informed slice (preview)"


class InformedSliceWidget(DockWidget):
    def __init__(self, viewer: napari.viewer.Viewer):  # noqa: F821 - string annotation for napari
        super().__init__(viewer, "GEM-3D informed slice")
        import napari

        self.source = ComboBox(name="source", label="source", choices=[FROM_LAYER, GENERATE])
        self.image = ComboBox(name="image", label="image", choices=layer_choices(viewer, napari.layers.Image))
        self.where = ComboBox(name="where", label="slice", choices=[CURRENT, RELATIVE], value=RELATIVE)
        self.position = FloatSlider(
            name="position", label="position p", min=0.0, max=1.0, step=0.01, value=0.5
        )
        self.seed = SpinBox(name="seed", label="seed", min=0, max=2**31 - 1, value=0)
        self.steps = SpinBox(name="steps", label="steps", min=1, max=1000, value=50)
        self.form = Container(
            widgets=[self.source, self.image, self.where, self.position, self.seed, self.steps]
        )
        self.track(self.form)
        self.body.addWidget(self.form.native)
        self.which = note("")
        self.body.addWidget(self.which)
        self.use_button = PushButton(text="Use this slice")
        self.use_button.clicked.connect(lambda *_: self.choose())
        self.body.addWidget(self.use_button.native)
        self.chosen = note("No informed slice chosen.")
        self.body.addWidget(self.chosen)
        self.body.addStretch(1)
        for w in (self.source, self.image, self.where, self.position):
            w.changed.connect(self._describe)
        viewer.dims.events.current_step.connect(self._describe)
        self.reset_choices()
        self._describe()

    def shutdown(self) -> None:
        if not self._closed:
            self.viewer.dims.events.current_step.disconnect(self._describe)
        super().shutdown()

    # --------------------------------------------------------------------------------- which slice
    def _grid_and_index(self):
        from ..sampling.informed import relative_index
        from ..volume import model_grid

        layer = self.image.value
        if layer is None:
            return None
        config = self._config()
        size = config.image_size if config is not None else (64, 64)
        axis = config.slice_axis if config is not None else "S"
        volume = layer_to_volume(layer, copy=False)
        grid = model_grid(volume, size, axis)
        if self.where.value == CURRENT:
            data = layer.world_to_data(self.viewer.dims.point[-layer.ndim :])
            k = int(np.clip(model_slice_index(grid, data), 0, grid.num_slices - 1))
        else:
            k = relative_index(float(self.position.value), grid.num_slices)
        return volume, grid, k

    def _config(self):
        bundle = self.session.bundle
        return None if bundle is None else bundle.config

    def _describe(self, *_):
        if self._closed:
            return
        generating = self.source.value == GENERATE
        self.image.visible = self.where.visible = not generating
        self.seed.visible = self.steps.visible = generating
        self.position.visible = generating or self.where.value == RELATIVE
        if generating:
            self.which.setText(f"The slice model generates the slice at p = {self.position.value:.2f}.")
            return
        try:
            found = self._grid_and_index()
        except ValueError as exc:
            self.which.setText(str(exc))
            return
        if found is None:
            self.which.setText("Choose an image layer.")
            return
        _, grid, k = found
        self.which.setText(
            f"Slice {k} of {grid.num_slices} along the model's slice axis ({grid.slice_axis}), "
            f"p = {k / grid.num_slices:.2f}."
        )

    # --------------------------------------------------------------------------------------- choose
    def choose(self):
        """Pick (immediately) or generate (in a worker) the informed slice; returns the choice or Job."""
        from napari.utils.notifications import show_error

        try:
            if self.source.value == GENERATE:
                return self._generate()
            return self._pick()
        except Exception as exc:
            show_error(f"GEM-3D informed slice: {exc}")
            self.chosen.setText(f"Not chosen: {exc}")
            return None

    def _pick(self):
        from ..sampling.informed import pick_informed
        from .session import InformedChoice

        bundle = self.session.require_bundle()
        found = self._grid_and_index()
        if found is None:
            raise ValueError("choose an image layer to take the slice from")
        volume, grid, k = found
        layer = self.image.value
        informed = pick_informed(volume, bundle.config, index=k, name=layer.name)
        text = f"{layer.name}, slice {k}/{grid.num_slices} ({grid.slice_axis}), p = {k / grid.num_slices:.2f}"
        choice = InformedChoice(informed, text, position=k / grid.num_slices)
        self._preview(choice, like=layer)
        self.session.set_informed(choice)
        self.chosen.setText(f"Informed slice: {text}")
        return choice

    def _generate(self):
        from ..sampling.informed import generate_informed
        from .session import InformedChoice

        if self.session.job is not None and self.session.job.running:
            raise ValueError("a GEM-3D job is already running in this viewer: wait or cancel it")
        bundle = self.session.require_bundle()
        p, seed, steps = float(self.position.value), int(self.seed.value), int(self.steps.value)
        token = JobToken()

        def done(informed):
            text = f"generated at p = {p:.2f}, seed {seed}, {steps} steps ({bundle.config.name})"
            choice = InformedChoice(informed, text, position=p)
            self._preview(choice, like=self.image.value)
            self.session.set_informed(choice)
            self.chosen.setText(f"Informed slice: {text}")

        def finished():
            self.use_button.enabled = True
            self.session.set_job(None)

        job = Job(
            run_once(
                generate_informed, bundle, p, seed=seed, steps=steps, device=self.session.device, cancel=token
            ),
            total=0,
            desc="GEM-3D informed slice",
            token=token,
            handlers=Handlers(
                returned=done,
                finished=finished,
                cancelled=lambda n: self.chosen.setText("Generation cancelled."),
            ),
        )
        job.owner = self
        self.session.set_job(job)
        self.use_button.enabled = False
        self.chosen.setText("Generating the informed slice…")
        return job.start()

    def _preview(self, choice, like=None) -> None:
        """Show the slice (model grid, [-1, 1]) as a 2-D layer beside the volume it relates to."""
        image = np.asarray(choice.informed.image, dtype=np.float32)
        scale, translate = (1.0, 1.0), (0.0, 0.0)
        if like is not None and like.ndim == 3:
            from ..volume import model_frame_affine, model_grid

            config = self.session.bundle.config
            grid = model_grid(layer_to_volume(like, copy=False), config.image_size, config.slice_axis)
            spacing = np.linalg.norm(model_frame_affine(grid)[:3, 1:3], axis=0)
            lo, hi = like.extent.world
            scale = (float(spacing[0]), float(spacing[1]))
            translate = (float(lo[1]), float(hi[2] + 0.05 * (hi[2] - lo[2])))  # to the right of the volume
        metadata = {"gem3d_informed": dict(choice.informed.source), "description": choice.description}
        if PREVIEW_NAME in self.viewer.layers:
            layer = self.viewer.layers[PREVIEW_NAME]
            layer.data = image
            layer.scale, layer.translate, layer.metadata = scale, translate, metadata
        else:
            active = self.viewer.layers.selection.active
            self.viewer.add_image(
                image,
                name=PREVIEW_NAME,
                contrast_limits=(-1.0, 1.0),
                scale=scale,
                translate=translate,
                metadata=metadata,
                units=("mm", "mm"),
            )
            self.viewer.layers.selection.active = active
