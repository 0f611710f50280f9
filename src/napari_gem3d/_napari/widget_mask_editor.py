"""Mask editor dock: a new mask for an image (empty, or made from the image), painting with named labels and
a colour legend, lesion tools in mm, augmentation.

Every lesion operation is computed by :mod:`napari_gem3d.lesions` (Qt-free) on a copy, then only the
voxels that changed are written with ``Labels.data_setitem`` inside ``block_history()``: one undo step
per operation, and only the changed block of the texture is re-uploaded. Each edit fires the layer's
``paint`` event, which bumps the session's mask version and marks results made from it as stale.
Label values are named with the loaded model's label scheme (else the bundled demo model's): in the
pickers, the legend, and the status bar (the mask layer's ``features``; its data is never changed).
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, LineEdit, PushButton, SpinBox
from qtpy.QtWidgets import QGridLayout, QLabel, QWidget

from .. import lesions
from ._qt_helpers import DockWidget, layer_choices, narrow, note, section
from .label_names import colour_of, name_labels, names_of, scheme_of
from .layers import SOURCE_KEY, layer_affine, transforms_of

ROTATION_PLANES = {"axial": (1, 2), "coronal": (0, 2), "sagittal": (0, 1)}
FLIP_AXES = {"left-right": 2, "anterior-posterior": 1, "superior-inferior": 0}
#: world axes of the plugin's frame (S, P, L; see layers.py): a move of +mm goes this way
MOVE_AXES = (("superior", "inferior"), ("posterior", "anterior"), ("left", "right"))
RADIUS_AXES = ("S-I", "A-P", "L-R")
CURSOR = "cursor"
BRAIN_METHODS = (("automatic", "auto"), ("deepbet (neural network)", "deepbet"), ("simple (no network)", "fallback"),
                 ("none: already skull-stripped", "none"))


def world_mm_to_voxels(layer, mm) -> np.ndarray:
    """A shift of ``mm`` along the world axes (S, P, L) as a shift in the layer's voxel (array) axes."""
    mm = np.asarray(mm, dtype=float)
    return np.asarray(layer.world_to_data(mm), float) - np.asarray(layer.world_to_data(np.zeros_like(mm)), float)


def unit(spin_box, suffix: str, decimals: int | None = None):
    """Show the unit in a magicgui float spin box's value ('6.00 mm'), not in its label: labels stay short."""
    spin_box.native.setSuffix(suffix if suffix == "°" else f" {suffix}")
    if decimals is not None:
        spin_box.native.setDecimals(decimals)
    return spin_box


def button_grid(*buttons, columns: int = 2) -> QWidget:
    """magicgui push buttons in rows of ``columns`` (a row of four would widen the dock)."""
    box = QWidget()
    grid = QGridLayout(box)
    grid.setContentsMargins(0, 0, 0, 0)
    for i, button in enumerate(buttons):
        grid.addWidget(button.native, i // columns, i % columns)
    return box


class MaskEditorWidget(DockWidget):
    def __init__(self, viewer: napari.viewer.Viewer):  # noqa: F821 - string annotation for napari
        super().__init__(viewer, "GEM-3D mask editor")
        import napari

        self.scheme = scheme_of(self.session.bundle)
        self._synced: weakref.WeakSet = weakref.WeakSet()  # mask layers whose selected label we follow

        # ---- a new mask for an image: empty, or made from the image
        self.image = ComboBox(name="image", label="image", choices=layer_choices(viewer, napari.layers.Image),
                              tooltip="the scan a new mask is made for: the mask gets its grid and position")
        self.create_button = PushButton(text="New empty mask",
                                        tooltip="a mask of zeros on the image's grid, to paint lesions into")
        self.from_image_button = PushButton(
            text="Mask from image", tooltip="a label map in the model's labels (outside brain, CSF, grey and "
                                            "white matter, your lesion) made from the image, as a new layer")
        self.create_button.clicked.connect(lambda *_: self._guard(self.create_mask))
        self.from_image_button.clicked.connect(lambda *_: self._guard(self.mask_from_image))
        self._add(Container(widgets=[self.image]))
        self.body.addWidget(button_grid(self.create_button, self.from_image_button, columns=1))

        self.lesion_from = ComboBox(name="lesion_from", label="your lesion", nullable=True,
                                    choices=layer_choices(viewer, napari.layers.Labels),
                                    tooltip="optional: a mask of the lesion (or a full label map) on the "
                                            "image's grid; it stays lesion in the new mask")
        self.lesion_as = ComboBox(name="lesion_as", label="lesion as", choices=self._lesion_as_choices,
                                  tooltip="by intensity: each lesion is divided into the model's lesion "
                                          "parts; or every lesion voxel becomes the part chosen")
        self.label_map = LineEdit(name="label_map", label="your labels", value="",
                                  tooltip="only for a full label map in another scheme: VALUE:NAME pairs, e.g. "
                                          "'1:grey matter,2:white matter,3:necrotic tumour core'")
        self.brain = ComboBox(name="brain", label="skull strip", choices=list(BRAIN_METHODS), value="auto",
                              tooltip="how the brain is found: automatic uses deepbet when installed, else a "
                                      "simple method; choose 'none' when the image is already skull-stripped")
        derive = self._add(Container(widgets=[self.lesion_from, self.lesion_as, self.label_map, self.brain]),
                           into=None)
        self.body.addWidget(section("Mask-from-image options", derive,
                                    tooltip="what 'Mask from image' does with your lesion and the skull"))

        # ---- painting, with the legend of the label colours
        self.mask = ComboBox(name="mask", label="mask", choices=layer_choices(viewer, napari.layers.Labels),
                             tooltip="the mask (label layer) to paint and to edit with the lesion tools")
        self.label = ComboBox(name="label", label="paint", choices=self._label_choices,
                              tooltip="the label the brush paints and 'Add lesion' stamps")
        self.brush3d = CheckBox(name="brush3d", text="3D brush", value=False,
                                tooltip="paint and erase a ball through neighbouring slices, not a disc "
                                        "in the current slice")
        self.mask.changed.connect(self._mask_chosen)
        self.label.changed.connect(self._label_changed)
        self.brush3d.changed.connect(self._brush_changed)
        self._add(Container(widgets=[self.mask, self.label, self.brush3d]))
        self.legend = QWidget()
        self.legend.setToolTip("the label names of the model with their colours in the chosen mask")
        QGridLayout(self.legend).setContentsMargins(0, 0, 0, 0)
        self.body.addWidget(self.legend)

        # ---- which lesion the tools edit
        self.parts = Container(name="parts", labels=False)
        self.parts.tooltip = "the labels that make up one lesion"
        self.point_from = ComboBox(name="point_from", label="point", choices=self._point_choices,
                                   tooltip="where the lesion is: the last mouse position on the image, or the "
                                           "last point of a Points layer")
        self.at_point_only = CheckBox(name="at_point_only", text="only the lesion at the point", value=True,
                                      tooltip="untick to edit every lesion in the mask at once")
        self.keep_inside = CheckBox(name="keep_inside", text="keep inside the brain", value=True,
                                    tooltip="lesion voxels that would land outside the brain are dropped")
        which = self._add(Container(widgets=[self.point_from, self.at_point_only, self.keep_inside]), into=None)
        self.body.addWidget(section("Lesion to edit", QLabel("Lesion parts:"), self.parts, which, expanded=True,
                                    tooltip="which lesion the tools below add, move, resize or delete"))

        # ---- add a lesion
        self.radius_z, self.radius_y, self.radius_x = (
            unit(FloatSpinBox(name=f"radius_{a}", label=f"radius {axis}", min=0.1, max=500, value=6.0,
                              tooltip=f"half the lesion's size along {axis} in mm"), "mm")
            for a, axis in zip("zyx", RADIUS_AXES, strict=True)
        )
        self.add_button = PushButton(text="Add lesion at the point",
                                     tooltip="stamps an ellipsoid of the paint label, round in mm")
        add = self._add(Container(widgets=[self.radius_z, self.radius_y, self.radius_x]), into=None)
        self.body.addWidget(section("Add a lesion", add, self.add_button.native,
                                    tooltip="draw a new ellipsoid lesion at the point"))

        # ---- move, resize, rotate, flip, grow, shrink, delete
        self.offset = [
            unit(FloatSpinBox(name=f"offset_{to}", label=to, min=-500, max=500, step=1.0, value=0.0,
                              tooltip=f"mm toward {to}; negative moves toward {back} (rounded to whole voxels)"),
                 "mm")
            for to, back in MOVE_AXES
        ]
        self.factor = FloatSpinBox(name="factor", label="scale ×", min=0.05, max=20.0, step=0.1, value=1.5,
                                   tooltip="size factor for 'Scale' (1.5 makes the lesion 50% larger)")
        self.angle = unit(FloatSpinBox(name="angle", label="angle", min=-360, max=360, value=15.0,
                                       tooltip="degrees for 'Rotate', about the lesion's centre"), "°")
        self.plane = ComboBox(name="plane", label="in plane", choices=list(ROTATION_PLANES),
                              tooltip="the plane 'Rotate' turns the lesion in")
        self.flip_axis = ComboBox(name="flip_axis", label="flip", choices=list(FLIP_AXES),
                                  tooltip="the direction 'Flip' mirrors the lesion in, about its centre")
        self.grow = unit(FloatSpinBox(name="grow", label="margin", min=0.1, max=100.0, value=2.0,
                                      tooltip="mm 'Grow' adds around the lesion or 'Shrink' takes off it"), "mm")
        tips = {"Move": "moves the lesion by the mm above", "Scale": "resizes the lesion by the factor",
                "Rotate": "turns the lesion by the angle", "Flip": "mirrors the lesion",
                "Grow": "adds the margin around the lesion", "Shrink": "takes the margin off the lesion",
                "Delete lesion": "removes the lesion; the surrounding tissue fills its place"}
        (self.move_button, self.scale_button, self.rotate_button, self.flip_button, self.dilate_button,
         self.erode_button, self.delete_button) = (PushButton(text=t, tooltip=tip) for t, tip in tips.items())
        moves = self._add(Container(widgets=self.offset), into=None)
        shape = self._add(Container(widgets=[self.factor, self.angle, self.plane, self.flip_axis, self.grow]),
                          into=None)
        self.body.addWidget(section(
            "Move, resize, rotate", moves, self.move_button.native, shape,
            button_grid(self.scale_button, self.rotate_button, self.flip_button, self.dilate_button,
                        self.erode_button, self.delete_button),
            expanded=True, tooltip="change the lesion at the point; each click is one undo step"))

        # ---- augmentation
        self.aug_seed = SpinBox(name="aug_seed", label="seed", min=0, max=2**31 - 1, value=0,
                                tooltip="the same seed gives the same augmentation")
        self.aug_angle = unit(FloatSpinBox(name="aug_angle", label="max turn", min=0.0, max=45.0, value=2.5,
                                           tooltip="the whole mask turns by up to this many degrees about each "
                                                   "axis"), "°")
        self.aug_flip = FloatSpinBox(name="aug_flip", label="flip chance", min=0.0, max=1.0, step=0.1, value=0.5,
                                     tooltip="probability of mirroring left-right")
        self.aug_min, self.aug_max = (
            unit(FloatSpinBox(name=f"aug_{end}", label=f"shift {end}", min=0, max=999, step=1, value=value,
                              tooltip=f"{word} shift of the lesion toward the centre, in voxels as in the paper"),
                 "vox", decimals=0)
            for end, word, value in (("min", "smallest", 20), ("max", "largest", 60))
        )
        self.augment_button = PushButton(text="Augment the mask",
                                         tooltip="the paper's mask augmentation (turn, flip, lesion shift), "
                                                 "done as intended")
        aug = self._add(Container(widgets=[self.aug_seed, self.aug_angle, self.aug_flip, self.aug_min,
                                           self.aug_max]), into=None)
        self.body.addWidget(section("Random augmentation", aug, self.augment_button.native,
                                    tooltip="the paper's random mask augmentation of all lesions"))
        self.body.addWidget(note("Each change is one undo step (Ctrl+Z on the mask). Editing a mask marks "
                                 "results made from it as stale."))
        self.body.addStretch(1)
        self.status = note("")
        self.status.setContentsMargins(6, 2, 6, 4)
        self.layout().addWidget(self.status)  # below the scroll area: always in view

        for button, op in ((self.add_button, self.add_lesion), (self.move_button, self.move),
                           (self.scale_button, self.scale), (self.rotate_button, self.rotate),
                           (self.flip_button, self.flip), (self.dilate_button, self.dilate),
                           (self.erode_button, self.erode), (self.delete_button, self.delete),
                           (self.augment_button, self.augment)):
            button.clicked.connect(lambda *_, op=op: self._guard(op))
        self.session.model_changed.connect(self._model_changed)
        self._model_changed(self.session.bundle)
        self._mask_chosen(self.mask.value)

    def _add(self, container: Container, into=True) -> Container:
        """Track a container's layer choices and let it shrink with the dock; add it to the body."""
        self.track(container)
        narrow(container)
        if into:
            self.body.addWidget(container.native)
        return container

    def shutdown(self) -> None:
        self.session.model_changed.disconnect(self._model_changed)
        for layer in list(self._synced):
            layer.events.selected_label.disconnect(self._layer_label_changed)
            layer.events.colormap.disconnect(self._update_legend)
        super().shutdown()

    # ------------------------------------------------------------------------------ label names
    def _names(self) -> dict[int, str]:
        """The scheme's names, with the chosen mask's own named values."""
        layer = self.mask.value
        return {**(names_of(layer) if layer is not None else {}), **self.scheme.names}

    def _label_choices(self, widget=None):
        return [(f"{name} ({value})", value) for value, name in self._names().items()]

    def _lesion_as_choices(self, widget=None):
        return [("by intensity", "auto")] + [(self.scheme.name(v),) * 2 for v in self.scheme.lesion]

    def _model_changed(self, bundle) -> None:
        previous = {v for v, box in getattr(self, "_part_boxes", {}).items() if not box.value}
        self.scheme = scheme_of(bundle)
        self.parts.clear()
        self._part_boxes = {
            v: CheckBox(name=f"part_{v}", text=self.scheme.name(v), value=v not in previous,
                        tooltip=f"the lesion includes {self.scheme.name(v)} (label {v})")
            for v in self.scheme.lesion
        }
        self.parts.extend(self._part_boxes.values())
        region = self.scheme.region
        self.keep_inside.text = f"keep inside the {region}"
        self.keep_inside.tooltip = f"lesion voxels that would land outside the {region} are dropped"
        if self.mask.value is not None:
            name_labels(self.mask.value, self.scheme)
        self.reset_choices()
        self._update_legend()

    def lesion_values(self) -> tuple[int, ...]:
        """The label values of the ticked lesion parts."""
        values = tuple(v for v, box in self._part_boxes.items() if box.value)
        if not values:
            raise ValueError("tick at least one lesion part under 'Lesion to edit'")
        return values

    def choose_parts(self, values) -> None:
        """Tick exactly the lesion parts with these label values."""
        for v, box in self._part_boxes.items():
            box.value = v in set(values)

    def _update_legend(self, event=None) -> None:
        grid = self.legend.layout()
        while grid.count():
            old = grid.takeAt(0).widget()
            old.setParent(None)  # gone now, not at the next event loop turn
            old.deleteLater()
        layer = self.mask.value
        for row, (value, name) in enumerate(self.scheme.names.items()):
            colour = colour_of(layer, value) if layer is not None else "#808080"
            swatch = QLabel()
            swatch.setFixedSize(14, 14)
            swatch.setStyleSheet(f"background-color: {colour}; border: 1px solid grey;")
            text = QLabel(f"{name} ({value})")
            text.setWordWrap(True)
            grid.addWidget(swatch, row, 0)
            grid.addWidget(text, row, 1)
        grid.setColumnStretch(1, 1)

    # ---------------------------------------------------------------------------------- new mask
    def create_mask(self):
        """A new uint8 Labels layer of zeros, placed exactly like the chosen image."""
        image = self.image.value
        if image is None:
            raise ValueError("choose an image layer first")
        if image.ndim != 3:
            raise ValueError(f"{image.name!r} is {image.ndim}-D; masks are made for 3-D images")
        layer = self._add_mask(np.zeros(image.data.shape, dtype=np.uint8), image, f"{image.name} mask")
        layer.mode = "paint"
        return layer

    def _add_mask(self, data, image, name: str):
        """A new Labels layer placed like ``image``, its labels named; it becomes the chosen mask."""
        metadata = {SOURCE_KEY: dict(image.metadata[SOURCE_KEY])} if SOURCE_KEY in image.metadata else {}
        layer = self.viewer.add_labels(data, name=name, metadata=metadata, **transforms_of(image))
        name_labels(layer, self.scheme)
        self.reset_choices()
        self.mask.value = layer
        return layer

    def mask_from_image(self):
        """Make a mask from the chosen image in a worker, once a model is ready (the bundled demo model loads
        first, in a worker, when none is); the result becomes a new Labels layer. Returns the Job, or None
        while the model loads."""
        from ..commands.make_mask import parse_label_map
        from .layers import layer_to_volume

        image = self.image.value
        if image is None:
            raise ValueError("choose the image layer to make the mask from")
        self._no_running_job()
        lesion = layer_to_volume(self.lesion_from.value) if self.lesion_from.value is not None else None
        label_map = parse_label_map(self.label_map.value) if self.label_map.value.strip() else None
        volume = layer_to_volume(image)
        options = {"lesion": lesion, "lesion_as": self.lesion_as.value or "auto", "label_map": label_map,
                   "brain": self.brain.value}
        return self.session.when_model_ready(lambda bundle: self._start_mask(bundle, image, volume, options),
                                             status=self.status.setText, on_error=self._report)

    def _no_running_job(self) -> None:
        if self.session.job is not None and self.session.job.running:
            raise ValueError("a GEM-3D job is already running in this viewer: wait for it or cancel it")

    def _start_mask(self, bundle, image, volume, options):
        from ..make_mask import make_model_mask
        from .jobs import Handlers, Job, run_once

        config = bundle.config

        def done(result):
            labels, report = result
            self._add_mask(np.asarray(labels.array), image, f"{image.name} model mask")
            counts = ", ".join(f"{k} {v}" for k, v in report["counts"].items())
            self.status.setText(f"Mask from image ({report['method']['brain']}): voxels {counts}")

        def finished():
            self.from_image_button.enabled = True
            if self.session.job is job:
                self.session.set_job(None)

        self._no_running_job()
        job = Job(run_once(make_model_mask, volume, config.card, config.labels.names, **options),
                  total=0, desc="GEM-3D mask from image",
                  handlers=Handlers(returned=done, finished=finished, errored=self._report))
        job.owner = self
        self.session.set_job(job)  # the session holds the job while it runs
        self.from_image_button.enabled = False
        self.status.setText("Making a mask from the image (finding the brain takes a few seconds)…")
        return job.start()

    # ---------------------------------------------------------------------------------- painting
    def _mask_chosen(self, layer) -> None:
        if layer is None:
            self._update_legend()
            return
        self.session.watch_mask(layer)
        name_labels(layer, self.scheme)
        if layer not in self._synced:
            self._synced.add(layer)
            layer.events.selected_label.connect(self._layer_label_changed)
            layer.events.colormap.connect(self._update_legend)
        self.label.reset_choices()
        self._layer_label_changed()
        self.brush3d.value = layer.n_edit_dimensions == 3
        self._update_legend()

    def _layer_label_changed(self, event=None) -> None:
        layer = self.mask.value
        if layer is not None and int(layer.selected_label) in self._names():
            self.label.value = int(layer.selected_label)

    def _label_changed(self, value) -> None:
        if self.mask.value is not None and value is not None:
            self.mask.value.selected_label = int(value)

    def _brush_changed(self, value) -> None:
        if self.mask.value is not None:
            self.mask.value.n_edit_dimensions = 3 if value else 2

    # ----------------------------------------------------------------------------- lesion tools
    def _report(self, exc) -> None:
        from napari.utils.notifications import show_error

        show_error(f"GEM-3D mask editor: {exc}")
        self.status.setText(str(exc))

    def _guard(self, op) -> Any:
        try:
            return op()
        except Exception as exc:  # noqa: BLE001 - every failure is shown to the user
            self._report(exc)
            return None

    def _point_choices(self, widget=None):
        import napari

        return [("mouse position", CURSOR)] + [
            (layer.name, layer)
            for layer in self.viewer.layers
            if isinstance(layer, napari.layers.Points) and not layer.name.startswith("GEM-3D window")
        ]

    def _layer(self):
        layer = self.mask.value
        if layer is None:
            raise ValueError("choose a mask (label layer), or make one with 'New empty mask'")
        if layer.ndim != 3:
            raise ValueError(f"{layer.name!r} is {layer.ndim}-D; the lesion tools work on 3-D masks")
        return layer

    def spacing(self, layer) -> np.ndarray:
        return np.linalg.norm(layer_affine(layer)[:3, :3], axis=0)

    def point(self, layer) -> np.ndarray:
        """The chosen point in the mask's voxel coordinates."""
        source = self.point_from.value
        if source == CURSOR or source is None:
            world = np.asarray(self.viewer.cursor.position, dtype=float)
            if world.size != layer.ndim:
                raise ValueError("move the mouse over the image to set the point first")
        else:
            if len(source.data) == 0:
                raise ValueError(f"the Points layer {source.name!r} has no point")
            world = np.asarray(source.data_to_world(source.data[-1]), dtype=float)
        data = np.asarray(layer.world_to_data(world), dtype=float)
        if np.any(np.round(data) < 0) or np.any(np.round(data) > np.asarray(layer.data.shape) - 1):
            raise ValueError("the point is outside the mask: move the mouse over the image")
        return data

    def _common(self, layer) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"spacing": self.spacing(layer)}
        if self.at_point_only.value:
            kwargs["point"] = self.point(layer)
        return kwargs

    def _region(self, layer):
        return lesions.region_of(np.asarray(layer.data)) if self.keep_inside.value else None

    def apply(self, layer, edit: lesions.Edit, what: str) -> int:
        """Write an edit as one undo step (only changed voxels); returns how many voxels changed."""
        indices, values = edit.changes(layer.data)
        if len(indices[0]) == 0:
            self.status.setText(f"{what}: nothing changed")
            return 0
        with layer.block_history():
            layer.data_setitem(indices, values)
        self.status.setText(f"{what}: {len(indices[0])} voxels changed")
        return len(indices[0])

    def _edit(self, what: str, operation, *args, region: bool = True, **kwargs) -> int:
        """Run a lesion operation on the ticked lesion parts of the chosen mask and apply it."""
        layer = self._layer()
        if region:
            kwargs["region"] = self._region(layer)
        edit = operation(np.asarray(layer.data), self.lesion_values(), *args, **kwargs, **self._common(layer))
        return self.apply(layer, edit, what)

    def add_lesion(self):
        layer = self._layer()
        radii = (self.radius_z.value, self.radius_y.value, self.radius_x.value)
        region = self._region(layer) if np.any(np.asarray(layer.data) != 0) else None
        edit = lesions.add_ellipsoid(np.asarray(layer.data), self.point(layer), radii, int(self.label.value),
                                     spacing=self.spacing(layer), region=region)
        return self.apply(layer, edit, f"added {self.scheme.name(self.label.value)}")

    def move(self):
        """Move by the mm along superior, posterior, left (converted to voxels with the layer's placement)."""
        mm = [w.value for w in self.offset]
        where = ", ".join(f"{abs(v):g} mm {to if v > 0 else back}"
                          for v, (to, back) in zip(mm, MOVE_AXES, strict=True) if v)
        return self._edit(f"moved {where or 'nowhere'}", lesions.move, world_mm_to_voxels(self._layer(), mm))

    def scale(self):
        return self._edit("scaled", lesions.scale, self.factor.value)

    def rotate(self):
        return self._edit("rotated", lesions.rotate, self.angle.value, axes=ROTATION_PLANES[self.plane.value])

    def flip(self):
        return self._edit("flipped", lesions.flip, FLIP_AXES[self.flip_axis.value])

    def dilate(self):
        return self._edit("grown", lesions.dilate, self.grow.value)

    def erode(self):
        return self._edit("shrunk", lesions.erode, self.grow.value, region=False)

    def delete(self):
        return self._edit("deleted", lesions.delete, region=False)

    def augment(self):
        layer = self._layer()
        if self.aug_min.value > self.aug_max.value:
            raise ValueError("the smallest shift must not exceed the largest")
        edit = lesions.random_augmentation(
            np.asarray(layer.data), np.random.default_rng(int(self.aug_seed.value)),
            lesion_labels=self.lesion_values(), spacing=self.spacing(layer), max_angle_deg=self.aug_angle.value,
            flip_axis=FLIP_AXES["left-right"], flip_probability=self.aug_flip.value,
            shift_range=(int(self.aug_min.value), int(self.aug_max.value)))
        changed = self.apply(layer, edit, "augmentation")
        info = edit.info
        self.status.setText(
            f"augmentation: turned {np.round(info['angles_deg'], 1).tolist()}°, "
            f"{'flipped' if info['flipped'] else 'not flipped'}, lesion shifted {info['shift_vox']} voxels "
            f"({changed} voxels changed)")
        return changed
