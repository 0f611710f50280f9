"""Gallery dock: counterfactual (one mask x K informed slices) and de-enhancement (one informed slice x
K cases) studies, shown as a grid of result layers with difference maps, exported with provenance.

The studies run in :mod:`napari_gem3d.sampling.variants` (Qt-free) on a worker; this dock only collects
the inputs, shows progress with the time left, and adds the results as new layers in napari's grid: one
row per variant, its result on the left and its difference map (with napari's colour bar) on the right,
every tile titled. All tiles share the dims, so they scroll together. Technical settings sit in a folded
"Advanced" section; the model loads in the background on first use.
"""

from __future__ import annotations

import time
from pathlib import Path

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

from ._qt_helpers import (
    DockWidget,
    grey_out_devices,
    layer_choices,
    narrow,
    note,
    same_geometry,
    scan_choices,
    section,
)
from .jobs import Handlers, Job, JobToken
from .layers import layer_to_volume, volume_to_layer
from .quality import lesion_guidance_for, lesion_strength_spin, link_quality, quality_combo, solver_combo

COUNTERFACTUAL = "Counterfactuals (one mask)"
DEENHANCE = "De-enhance (many cases)"
FROM_WIDGET = "Informed slice dock"
DIFFERENCE_COLORMAP = "PiYG"  # diverging: pink = result darker than the scan, green = brighter
LEGEND = (
    "Difference tiles: result minus scan, each scaled to its own 0.5–99.5 % intensity range "
    "(−1 … +1); green = brighter than the scan, pink = darker. The colour bar is on each tile."
)


def tile_title(result) -> str:
    """What a tile shows, in words: the look's source for a counterfactual, the case for de-enhancement."""
    study = result.provenance.get("study", {})
    if study.get("kind") == "deenhance":
        return f"case {result.name}"
    if result.name.startswith("synthetic slice"):
        return result.name
    return f"look from {result.name}'s slice"


class GalleryWidget(DockWidget):
    def __init__(self, viewer: napari.viewer.Viewer):  # noqa: F821 - string annotation for napari
        super().__init__(viewer, "GEM-3D gallery")
        import napari

        self.clock = time.perf_counter  # the time-left estimate's clock (tests give a fake one)
        self.study = ComboBox(
            name="study",
            label="Study",
            choices=[COUNTERFACTUAL, DEENHANCE],
            tooltip="Counterfactuals: the same mask (anatomy, lesion) drawn with the look of several slices.\n"
            "De-enhance: several cases drawn with one slice's look (harmonise a dataset to one scanner).",
        )
        # counterfactual inputs
        self.mask = ComboBox(
            name="mask",
            label="Mask",
            choices=layer_choices(viewer, napari.layers.Labels),
            tooltip="The mask (labels) every variant is drawn from",
        )
        self.reference = ComboBox(
            name="reference",
            label="Scan",
            nullable=True,
            choices=layer_choices(viewer, napari.layers.Image),
            tooltip="The mask's own scan: results come in its intensity units and the difference maps "
            "compare against it (optional)",
        )
        self.informed_layers = Select(
            name="informed_layers",
            label="Looks from",
            choices=scan_choices(viewer),
            tooltip="One variant per selected scan: its slice at Position sets the look (contrast, scanner "
            "style). Technical: the informed slice. GEM-3D results are not offered.",
        )
        self.generated = SpinBox(
            name="generated",
            label="+ synthetic",
            min=0,
            max=32,
            value=0,
            tooltip="Extra variants whose look comes from a synthetic slice made by the slice model "
            "(seeds: Advanced → Seed, Seed + 1, …)",
        )
        self.position = FloatSlider(
            name="position",
            label="Position",
            min=0.0,
            max=1.0,
            step=0.01,
            value=0.5,
            tooltip="Where the look's slice is taken along the slice axis: 0 = first slice, 1 = last "
            "(technical: relative position p)",
        )
        # de-enhancement inputs
        self.informed_from = ComboBox(
            name="informed_from",
            label="Look from",
            choices=self._informed_choices,
            tooltip="The slice whose look every case gets: the Informed slice dock's choice, or a scan's "
            "slice at Position. GEM-3D results are not offered.",
        )
        self.cases = Select(
            name="cases",
            label="Cases",
            choices=layer_choices(viewer, napari.layers.Labels),
            tooltip="Masks to redraw with the look; each case's scan (same geometry) is its difference reference",
        )
        self.folder_button = PushButton(
            text="Add a folder of cases…",
            tooltip="A folder of (image, mask) cases: one sub-folder per case, imagesTr/ + labelsTr/, "
            "or <name>_image / <name>_mask files",
        )
        self.folder_button.clicked.connect(self._choose_folder)
        # technical settings (the Advanced section); the quality presets as in the sampling dock
        self.quality = quality_combo()
        self.lesion_strength = lesion_strength_spin()
        self.solver = solver_combo()
        self.steps = SpinBox(
            name="steps", label="Steps", min=1, max=1000, value=50,
            tooltip="Denoising steps per window: more is slower and usually sharper",
        )
        self.eta = FloatSpinBox(
            name="eta", label="η (eta)", min=0.0, max=1.0, step=0.1, value=1.0,
            tooltip="DDIM eta: 0 = deterministic sampling, 1 = fully stochastic (the official sampler)",
        )
        link_quality(self.quality, self.solver, self.steps, self.eta)
        self.seed = SpinBox(
            name="seed", label="Seed", min=0, max=2**31 - 1, value=0,
            tooltip="Random seed: the same seed and inputs give the same result; synthetic looks use "
            "Seed, Seed + 1, …",
        )
        self.device = ComboBox(
            name="device", label="Device", choices=["auto", "cpu", "cuda", "mps"], value="auto",
            tooltip="Where the model runs: auto picks a GPU when there is one",
        )
        grey_out_devices(self.device)
        self.force = CheckBox(
            name="force", text="Run anyway if out of domain", value=False,
            tooltip="Run even when the domain check refuses a case (the findings are recorded)",
        )
        self.form = Container(
            widgets=[
                self.study,
                self.mask,
                self.reference,
                self.informed_from,
                self.informed_layers,
                self.generated,
                self.position,
                self.cases,
                self.folder_button,
            ]
        )
        for listing in (self.informed_layers, self.cases):
            listing.max_height = 96  # about four rows, then it scrolls
        self.advanced = Container(widgets=[self.quality, self.lesion_strength, self.solver, self.steps, self.eta,
                                           self.seed, self.device, self.force])
        for form in (self.form, self.advanced):
            narrow(form)
            self.track(form)
        self.body.addWidget(self.form.native)
        self.folder_cases: list = []
        self.folder_note = note("")
        self.body.addWidget(self.folder_note)
        self.body.addWidget(
            section("Advanced", self.advanced,
                    tooltip="Sampler settings: quality (solver, steps, eta), seed, device, domain check")
        )
        self.run_button = PushButton(text="Run study", tooltip="Generate every variant (in the background)")
        self.cancel_button = PushButton(
            text="Cancel", enabled=False, tooltip="Stop the study within one denoising step"
        )
        self.export_button = PushButton(
            text="Export results…",
            enabled=False,
            tooltip="Write every result and difference map (NIfTI) with a provenance.json into a folder",
        )
        self.run_button.clicked.connect(lambda *_: self.run())
        self.cancel_button.clicked.connect(lambda *_: self.cancel_own_job())
        self.export_button.clicked.connect(self._choose_export)
        for row in ((self.run_button, self.cancel_button), (self.export_button,)):
            self.body.addWidget(Container(widgets=list(row), layout="horizontal", labels=False).native)
        self.status = note("")
        self.body.addWidget(self.status)
        self.legend = note(LEGEND)
        self.legend.setVisible(False)
        self.body.addWidget(self.legend)
        self.body.addStretch(1)
        self.results: list = []
        self.result_layers: list = []
        self._time_left = None
        self.study.changed.connect(self._study_changed)
        self.session.informed_changed.connect(lambda *_: self.reset_choices())
        self.reset_choices()
        self._study_changed()

    def _informed_choices(self, widget=None):
        return [(FROM_WIDGET, FROM_WIDGET)] + [
            (f"{name}'s slice", layer) for name, layer in scan_choices(self.viewer)()
        ]

    def _study_changed(self, *_):
        cf = self.study.value == COUNTERFACTUAL
        for w in (self.mask, self.reference, self.informed_layers, self.generated):
            w.visible = cf
        for w in (self.informed_from, self.cases, self.folder_button):
            w.visible = not cf
        self.folder_note.setVisible(not cf and bool(self.folder_cases))

    def _choose_folder(self, *_):
        folder = QFileDialog.getExistingDirectory(self, "Folder of (image, mask) cases")
        if folder:
            try:
                self.add_folder(folder)
            except (OSError, ValueError) as exc:  # no cases there: say so in the dock
                self.status.setText(str(exc))

    def add_folder(self, folder) -> None:
        from ..sampling.variants import find_cases

        self.folder_cases = find_cases(folder)
        self._study_changed()
        self.folder_note.setText(
            f"{len(self.folder_cases)} cases from {folder}: "
            + ", ".join(c.name for c in self.folder_cases[:6])
            + (" …" if len(self.folder_cases) > 6 else "")
        )

    # --------------------------------------------------------------------------------------- run
    def run(self):
        """Start the study; returns its Job, or None when it did not start or waits for the model to load
        (the model loads in the background on first use; the study then starts by itself)."""
        from napari.utils.notifications import show_error

        if self.session.job is not None and self.session.job.running:
            show_error("GEM-3D gallery: a job is already running in this viewer")
            return None
        self.run_button.enabled = False
        try:
            return self.session.when_model_ready(self._start, status=self.status.setText, on_error=self._not_started)
        except Exception as exc:
            self._not_started(exc)
            return None

    def _not_started(self, exc) -> None:
        from napari.utils.notifications import show_error

        show_error(f"GEM-3D gallery: {exc}")
        self.status.setText(f"Not started: {exc}")
        self.run_button.enabled = True

    def _options(self, bundle):
        from ..sampling import SamplingOptions

        return SamplingOptions(
            steps=int(self.steps.value),
            eta=float(self.eta.value),
            solver=self.solver.value,
            seed=int(self.seed.value),
            device=self.device.value,
            slice_noise_correlation=None,  # the model's slice-noise prior, as the sampling dock and the CLI
            lesion_guidance=lesion_guidance_for(self.lesion_strength, bundle),
        )

    def _start(self, bundle):
        from ..sampling.variants import TimeLeft, count_windows

        options = self._options(bundle)
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
        self._time_left = TimeLeft(clock=self.clock)
        self.session.set_job(job)
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.status.setText("Starting…")
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
                        f"synthetic slice, seed {seed}",
                        generate_informed(
                            bundle,
                            p,
                            seed=seed,
                            steps=options.steps,
                            eta=options.eta,
                            solver=options.solver,
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

        require_domain(bundle.config, mask, image, informed=informed, force=bool(self.force.value), what=what,
                       override="tick 'Run anyway if out of domain' under Advanced")

    def _image_for(self, mask_layer):
        """The image layer sharing the mask's geometry (the difference reference), if any."""
        import napari

        for layer in self.viewer.layers:
            if isinstance(layer, napari.layers.Image) and layer.ndim == 3 and same_geometry(layer, mask_layer):
                return layer_to_volume(layer)
        return None

    # ------------------------------------------------------------------------------- GUI-thread slots
    def _on_update(self, update) -> None:
        from ..sampling.variants import progress_text

        noun = "variant" if self.study.value == COUNTERFACTUAL else "case"
        text = progress_text(update, self._time_left(update), noun)
        self.status.setText(text[0].upper() + text[1:])
        job = self.session.job
        if job is not None and getattr(job, "owner", None) is self:
            job.set_message(text)
            pbar = getattr(job.worker, "pbar", None)
            if pbar is not None and pbar.total != update.total:  # folder cases are counted in the worker
                pbar.total = update.total

    def _on_results(self, results) -> None:
        """Tiles in napari's grid: variant i's result on the left of row i, its difference map on the right
        (results without a scan to compare with come after the pairs); each tile titled, views re-centred."""
        from ..sampling.variants import difference_map

        self.results = list(results)
        pairs, singles = [], []
        for k, res in enumerate(self.results):
            title = f"{k + 1}. {tile_title(res)}"
            data, kwargs = volume_to_layer(res.volume, "image", name=title)
            if res.reference is None:
                singles.append((data, kwargs, None))
                continue
            diff_data, diff_kwargs = volume_to_layer(difference_map(res.volume, res.reference), "image",
                                                     name=f"{k + 1}. difference from the scan")
            diff_kwargs.update(colormap=DIFFERENCE_COLORMAP, contrast_limits=(-1.0, 1.0))
            pairs.append((data, kwargs, (diff_data, diff_kwargs)))
        added = []
        for data, kwargs, diff in pairs + singles:
            added.append(self.viewer.add_image(data, **kwargs))
            if diff is not None:
                layer = self.viewer.add_image(diff[0], **diff[1])
                layer.colorbar.visible = True
                added.append(layer)
        for layer in added:
            layer.name_overlay.visible = True
        self.result_layers = added
        for layer in self.viewer.layers:
            layer.visible = layer in added
        grid = self.viewer.canvas.grid
        grid.stride, grid.shape, grid.spacing = 1, ((-1, 2) if pairs else (-1, -1)), 6
        grid.enabled = True
        self.viewer.reset_view(margin=0.15)  # room for the tile titles above the images
        self.export_button.enabled = True
        self.legend.setVisible(bool(pairs))
        self.status.setText(
            f"{len(self.results)} results in the grid"
            + (": each row is a result and its difference from the scan." if pairs else ".")
            + " Your other layers are hidden (tick their eye to show them)."
        )

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
