"""Gallery dock: counterfactual (one mask x K informed slices) and de-enhancement (one informed slice x
K cases) studies, shown as a grid of result layers with difference maps, exported with provenance.

The studies run in :mod:`napari_gem3d.sampling.variants` (Qt-free) on a worker; this dock only collects
the inputs, shows progress and adds the results as new layers (napari's grid mode; all tiles share the
dims, so they scroll together).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSlider,
    FloatSpinBox,
    PushButton,
    Select,
    SpinBox,
)
from qtpy.QtWidgets import QFileDialog

from ._qt_helpers import DockWidget, layer_choices, note
from .jobs import Handlers, Job, JobToken
from .layers import layer_to_volume, volume_to_layer

COUNTERFACTUAL = "Counterfactuals: one mask x K informed slices"
DEENHANCE = "De-enhancement: one informed slice x K cases"
FROM_WIDGET = "Informed-slice widget"


class GalleryWidget(DockWidget):
    def __init__(self, viewer: napari.viewer.Viewer):  # noqa: F821 - string annotation for napari
        super().__init__(viewer, "GEM-3D gallery")
        import napari

        self.study = ComboBox(name="study", label="study", choices=[COUNTERFACTUAL, DEENHANCE])
        # counterfactual inputs
        self.mask = ComboBox(name="mask", label="mask", choices=layer_choices(viewer, napari.layers.Labels))
        self.reference = ComboBox(
            name="reference",
            label="its image",
            nullable=True,
            choices=layer_choices(viewer, napari.layers.Image),
            tooltip="intensity units of the results and the difference-map reference",
        )
        self.informed_layers = Select(
            name="informed_layers",
            label="informed from layers",
            choices=layer_choices(viewer, napari.layers.Image),
        )
        self.generated = SpinBox(
            name="generated",
            label="+ generated slices",
            min=0,
            max=32,
            value=0,
            tooltip="K slices from the slice model at p (seeds seed .. seed+K-1)",
        )
        self.position = FloatSlider(
            name="position", label="position p", min=0.0, max=1.0, step=0.01, value=0.5
        )
        # de-enhancement inputs
        self.informed_from = ComboBox(
            name="informed_from", label="informed slice", choices=self._informed_choices
        )
        self.cases = Select(
            name="cases", label="cases (masks)", choices=layer_choices(viewer, napari.layers.Labels)
        )
        self.folder_button = PushButton(text="Add cases from a folder…")
        self.folder_button.clicked.connect(self._choose_folder)
        # settings
        self.steps = SpinBox(name="steps", label="steps", min=1, max=1000, value=50)
        self.eta = FloatSpinBox(name="eta", label="eta", min=0.0, max=1.0, step=0.1, value=1.0)
        self.seed = SpinBox(name="seed", label="seed", min=0, max=2**31 - 1, value=0)
        self.device = ComboBox(
            name="device", label="device", choices=["auto", "cpu", "cuda", "mps"], value="auto"
        )
        self.only_results = CheckBox(name="only_results", text="grid: show only the results", value=True)
        self.force = CheckBox(name="force", text="Run anyway if out of domain", value=False,
                              tooltip="run even when the domain check refuses a case (findings are recorded)")
        self.form = Container(
            widgets=[
                self.study,
                self.mask,
                self.reference,
                self.informed_layers,
                self.generated,
                self.position,
                self.informed_from,
                self.cases,
                self.folder_button,
                self.steps,
                self.eta,
                self.seed,
                self.device,
                self.only_results,
                self.force,
            ]
        )
        self.track(self.form)
        self.body.addWidget(self.form.native)
        self.folder_cases: list = []
        self.folder_note = note("")
        self.body.addWidget(self.folder_note)
        self.run_button = PushButton(text="Run study")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.export_button = PushButton(text="Export results…", enabled=False)
        self.run_button.clicked.connect(lambda *_: self.run())
        self.cancel_button.clicked.connect(lambda *_: self.cancel_own_job())
        self.export_button.clicked.connect(self._choose_export)
        buttons = Container(
            widgets=[self.run_button, self.cancel_button, self.export_button],
            layout="horizontal",
            labels=False,
        )
        self.body.addWidget(buttons.native)
        self.status = note("")
        self.body.addWidget(self.status)
        self.body.addStretch(1)
        self.results: list = []
        self.result_layers: list = []
        self.study.changed.connect(self._study_changed)
        self.session.informed_changed.connect(lambda *_: self.reset_choices())
        self.reset_choices()
        self._study_changed()

    def _informed_choices(self, widget=None):
        import napari

        items = [(FROM_WIDGET, FROM_WIDGET)]
        items += [
            (f"{layer.name} at p", layer)
            for layer in self.viewer.layers
            if isinstance(layer, napari.layers.Image) and layer.ndim == 3
        ]
        return items

    def _study_changed(self, *_):
        cf = self.study.value == COUNTERFACTUAL
        for w in (self.mask, self.reference, self.informed_layers, self.generated):
            w.visible = cf
        for w in (self.informed_from, self.cases, self.folder_button):
            w.visible = not cf
        self.folder_note.setVisible(not cf)

    def _choose_folder(self, *_):
        folder = QFileDialog.getExistingDirectory(self, "Folder of (image, mask) cases")
        if folder:
            self.add_folder(folder)

    def add_folder(self, folder) -> None:
        from ..sampling.variants import find_cases

        self.folder_cases = find_cases(folder)
        self.folder_note.setText(
            f"{len(self.folder_cases)} cases from {folder}: "
            + ", ".join(c.name for c in self.folder_cases[:6])
            + (" …" if len(self.folder_cases) > 6 else "")
        )

    # --------------------------------------------------------------------------------------- run
    def run(self):
        from napari.utils.notifications import show_error

        if self.session.job is not None and self.session.job.running:
            show_error("GEM-3D gallery: a job is already running in this viewer")
            return None
        try:
            return self._start()
        except Exception as exc:
            show_error(f"GEM-3D gallery: {exc}")
            self.status.setText(f"Not started: {exc}")
            return None

    def _options(self):
        from ..sampling import SamplingOptions

        return SamplingOptions(
            steps=int(self.steps.value),
            eta=float(self.eta.value),
            seed=int(self.seed.value),
            device=self.device.value,
        )

    def _start(self):
        from ..sampling.variants import count_windows

        bundle = self.session.require_bundle()
        options = self._options()
        token = JobToken()
        if self.study.value == COUNTERFACTUAL:
            gen, total = self._counterfactual(bundle, options, token, count_windows)
        else:
            gen, total = self._deenhance(bundle, options, token, count_windows)
        job = Job(
            gen,
            total=total,
            desc="GEM-3D study",
            token=token,
            handlers=Handlers(
                yielded=self._on_update,
                returned=self._on_results,
                cancelled=lambda n: self.status.setText(f"Cancelled after {n} windows."),
                finished=self._on_finished,
            ),
        )
        job.owner = self
        self.session.set_job(job)
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.status.setText(f"Running {total} windows…")
        return job.start()

    def _counterfactual(self, bundle, options, token, count_windows):
        from ..sampling.informed import generate_informed, pick_informed
        from ..sampling.variants import counterfactuals

        mask_layer = self.mask.value
        if mask_layer is None:
            raise ValueError("choose the mask to vary the informed slice for")
        mask = layer_to_volume(mask_layer)
        reference = layer_to_volume(self.reference.value) if self.reference.value is not None else None
        self._gate(bundle, mask, reference, what=f"mask {mask_layer.name!r}")
        for layer in self.informed_layers.value:
            self._gate(bundle, mask, informed=layer_to_volume(layer, copy=False),
                       what=f"mask {mask_layer.name!r} with informed slices from {layer.name!r}")
        p = float(self.position.value)
        informed = [
            (
                layer.name,
                pick_informed(layer_to_volume(layer, copy=False), bundle.config, position=p, name=layer.name),
            )
            for layer in self.informed_layers.value
        ]
        seeds = [int(self.seed.value) + k for k in range(int(self.generated.value))]
        if not informed and not seeds:
            raise ValueError("select informed-slice layers and/or ask for generated slices")
        per_case = count_windows(bundle.config, mask, p, options)
        total = per_case * (len(informed) + len(seeds))

        def study():
            variants = list(informed)
            for seed in seeds:
                variants.append(
                    (
                        f"generated seed {seed}",
                        generate_informed(
                            bundle,
                            p,
                            seed=seed,
                            steps=options.steps,
                            eta=options.eta,
                            device=options.device,
                            cancel=token,
                        ),
                    )
                )
            return (
                yield from counterfactuals(
                    bundle, mask, variants, image=reference, position=p, options=options, cancel=token
                )
            )

        return study(), total

    def _deenhance(self, bundle, options, token, count_windows):
        from ..sampling.informed import pick_informed
        from ..sampling.variants import StudyCase, deenhance

        source = self.informed_from.value
        if source == FROM_WIDGET:
            if self.session.informed is None:
                raise ValueError(
                    "no informed slice chosen: use the Informed slice widget, or pick an image layer"
                )
            informed = self.session.informed.informed
        else:
            source_volume = layer_to_volume(source, copy=False)
            informed = pick_informed(source_volume, bundle.config, position=float(self.position.value),
                                     name=source.name)
        cases = [
            StudyCase(layer.name, layer_to_volume(layer), self._image_for(layer))
            for layer in self.cases.value
        ]
        for case in cases:  # folder cases are read, and refused by the sampler's own checks, in the worker
            self._gate(bundle, case.mask, case.image, informed=None if source == FROM_WIDGET else source_volume,
                       what=f"case {case.name!r}")
        cases += self.folder_cases
        if not cases:
            raise ValueError("select mask layers and/or add a folder of cases")
        p = informed.source.get("position", float(self.position.value))
        total = 0
        for case in cases:
            mask = case.mask if not isinstance(case.mask, (str, Path)) else None
            total += count_windows(bundle.config, mask, p, options) if mask is not None else 0
        return deenhance(bundle, cases, informed, options=options, cancel=token), total

    def _gate(self, bundle, mask, image=None, informed=None, what: str = "the inputs") -> None:
        """The domain check before any work: out of domain is refused unless "Run anyway" is ticked."""
        from ..domain import require_domain

        require_domain(bundle.config, mask, image, informed=informed, force=bool(self.force.value), what=what)

    def _image_for(self, mask_layer):
        """The image layer sharing the mask's geometry (the difference reference), if any."""
        import napari

        from .layers import layer_affine

        affine = layer_affine(mask_layer)
        for layer in self.viewer.layers:
            if (
                isinstance(layer, napari.layers.Image)
                and layer.ndim == 3
                and layer.data.shape == mask_layer.data.shape
                and np.allclose(layer_affine(layer), affine, atol=1e-3)
            ):
                return layer_to_volume(layer)
        return None

    # ------------------------------------------------------------------------------- GUI-thread slots
    def _on_update(self, update) -> None:
        self.status.setText(
            f"{update.name} ({update.case + 1}/{update.cases}): window {update.done}"
            f"{'/' + str(update.total) if update.total else ''}"
        )

    def _on_results(self, results) -> None:
        from ..sampling.variants import difference_map

        self.results = list(results)
        added = []
        for k, res in enumerate(self.results):
            data, kwargs = volume_to_layer(res.volume, "image", name=f"{k:02d} {res.name}")
            added.append(self.viewer.add_image(data, **kwargs))
            if res.reference is not None:
                diff = difference_map(res.volume, res.reference)
                data, kwargs = volume_to_layer(diff, "image", name=f"{k:02d} {res.name} - reference")
                kwargs.update(colormap="PiYG", contrast_limits=(-1.0, 1.0))
                added.append(self.viewer.add_image(data, **kwargs))
        self.result_layers = added
        if self.only_results.value:
            for layer in self.viewer.layers:
                layer.visible = layer in added
        self.viewer.canvas.grid.enabled = True
        self.export_button.enabled = True
        self.status.setText(f"{len(self.results)} results (+ difference maps) in the grid.")

    def _on_finished(self) -> None:
        self.run_button.enabled, self.cancel_button.enabled = True, False
        self.session.set_job(None)

    # ------------------------------------------------------------------------------------- export
    def _choose_export(self, *_):
        folder = QFileDialog.getExistingDirectory(self, "Export the results to a folder")
        if folder:
            self.export(folder)

    def export(self, folder) -> list[Path]:
        from napari.utils.notifications import show_error, show_info

        from ..sampling.variants import export_results
        from .writer import open_sources

        try:  # no exported file may replace a file open in the viewer
            paths = export_results(self.results, folder, inputs=open_sources(self.viewer))
        except Exception as exc:
            show_error(f"GEM-3D gallery export: {exc}")
            return []
        show_info(f"Exported {len(paths)} files to {folder}")
        self.status.setText(f"Exported {len(paths)} files to {folder}.")
        return paths
