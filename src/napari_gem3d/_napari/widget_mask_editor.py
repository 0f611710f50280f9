"""Mask editor dock: a new empty mask in an image's geometry, painting settings, lesion tools, augmentation.

Every lesion operation is computed by :mod:`napari_gem3d.lesions` (Qt-free) on a copy, then only the
voxels that changed are written with ``Labels.data_setitem`` inside ``block_history()``: one undo step
per operation, and only the changed block of the texture is re-uploaded. Each edit fires the layer's
``paint`` event, which bumps the session's mask version and marks results made from it as stale.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, LineEdit, PushButton, SpinBox
from superqt import QCollapsible

from .. import lesions
from ._qt_helpers import DockWidget, layer_choices, note
from .layers import SOURCE_KEY, layer_affine, transforms_of

ROTATION_PLANES = {
    "axial (rows, columns)": (1, 2),
    "coronal (slices, columns)": (0, 2),
    "sagittal (slices, rows)": (0, 1),
}
FLIP_AXES = {"left-right": 2, "anterior-posterior": 1, "superior-inferior": 0}
CURSOR = "cursor"
LESION_WORDS = ("tumour", "tumor", "oedema", "edema", "lesion", "necro", "enhanc")


def default_lesion_labels(names: dict[int, str] | None) -> str:
    """Labels whose names sound like lesion parts (e.g. '4,5,6' for the demo labels)."""
    if not names:
        return "1"
    found = [str(k) for k, v in names.items() if any(w in v.lower() for w in LESION_WORDS)]
    return ",".join(found) or str(max(names))


def parse_labels(text: str) -> tuple[int, ...]:
    """'4,5,6' or '4-6' -> (4, 5, 6)."""
    out: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        if "-" in part[1:]:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    if not out:
        raise ValueError("enter the lesion label(s), e.g. 4,5,6 or 4-6")
    return tuple(sorted(set(out)))


class MaskEditorWidget(DockWidget):
    def __init__(self, viewer: napari.viewer.Viewer):  # noqa: F821 - string annotation for napari
        super().__init__(viewer, "GEM-3D mask editor")
        import napari

        # ---- new mask
        self.image = ComboBox(name="image", label="image", choices=layer_choices(viewer, napari.layers.Image))
        self.create_button = PushButton(
            text="New empty mask", tooltip="a uint8 mask of zeros in this image's geometry"
        )
        self.create_button.clicked.connect(self._create_clicked)
        new = Container(widgets=[self.image, self.create_button])
        self.track(new)
        self.body.addWidget(new.native)

        # ---- a model-ready mask from the image (napari_gem3d.make_mask)
        self.lesion_from = ComboBox(name="lesion_from", label="your lesion mask", nullable=True,
                                    choices=layer_choices(viewer, napari.layers.Labels),
                                    tooltip="optional: a lesion (or full) label layer on the image's grid")
        self.lesion_as = LineEdit(name="lesion_as", label="lesion becomes", value="auto",
                                  tooltip="'auto' splits each lesion into the model's lesion parts by intensity; "
                                          "or a model label name, e.g. 'oedema'")
        self.label_map = LineEdit(name="label_map", label="label map", value="",
                                  tooltip="for a mask in another label scheme: VALUE:NAME pairs, e.g. "
                                          "'1:grey matter,2:white matter,3:necrotic tumour core'")
        self.brain = ComboBox(name="brain", label="brain region", choices=["auto", "deepbet", "fallback", "none"],
                              value="auto", tooltip="auto: deepbet when installed, else a network-free fallback; "
                                                    "none: the image is already skull-stripped")
        self.from_image_button = PushButton(
            text="Mask from image", tooltip="a label map in the model's scheme (outside brain, CSF, grey and white "
                                            "matter, your lesions) made from the image, as a new layer")
        self.from_image_button.clicked.connect(lambda *_: self._guard(self.mask_from_image))
        derive = Container(widgets=[self.lesion_from, self.lesion_as, self.label_map, self.brain,
                                    self.from_image_button])
        self.track(derive)
        section0 = QCollapsible("Mask from image")
        section0.addWidget(derive.native)
        self.body.addWidget(section0)

        # ---- painting
        self.mask = ComboBox(name="mask", label="mask", choices=layer_choices(viewer, napari.layers.Labels))
        self.label = SpinBox(name="label", label="paint label", min=0, max=255, value=1)
        self.brush3d = CheckBox(name="brush3d", text="3D brush (edits neighbouring slices too)", value=False)
        self.mask.changed.connect(self._mask_chosen)
        self.label.changed.connect(self._label_changed)
        self.brush3d.changed.connect(self._brush_changed)
        paint = Container(widgets=[self.mask, self.label, self.brush3d])
        self.track(paint)
        self.body.addWidget(paint.native)

        # ---- lesion tools
        self.lesion_labels = LineEdit(
            name="lesion_labels",
            label="lesion labels",
            value="4,5,6",
            tooltip="labels that make up one lesion, e.g. 4,5,6 or 4-6",
        )
        self.point_from = ComboBox(
            name="point_from",
            label="point from",
            choices=self._point_choices,
            tooltip="the cursor's last position on the canvas, or the last point of a Points layer",
        )
        self.at_point_only = CheckBox(name="at_point_only", text="only the lesion at the point", value=True)
        self.keep_inside = CheckBox(name="keep_inside", text="keep lesions inside label != 0", value=True)
        self.radius_z = FloatSpinBox(name="radius_z", label="radius slices (mm)", min=0.1, max=500, value=6.0)
        self.radius_y = FloatSpinBox(name="radius_y", label="radius rows (mm)", min=0.1, max=500, value=6.0)
        self.radius_x = FloatSpinBox(
            name="radius_x", label="radius columns (mm)", min=0.1, max=500, value=6.0
        )
        self.add_button = PushButton(text="Add ellipsoid at the point", tooltip="stamps the paint label")
        self.offset = [
            SpinBox(name=f"offset_{a}", label=f"move {a} (voxels)", min=-999, max=999, value=0)
            for a in ("slices", "rows", "columns")
        ]
        self.move_button = PushButton(text="Move")
        self.factor = FloatSpinBox(
            name="factor", label="scale factor", min=0.05, max=20.0, step=0.1, value=1.5
        )
        self.scale_button = PushButton(text="Scale")
        self.angle = FloatSpinBox(name="angle", label="angle (deg)", min=-360, max=360, value=15.0)
        self.plane = ComboBox(name="plane", label="rotation plane", choices=list(ROTATION_PLANES))
        self.rotate_button = PushButton(text="Rotate")
        self.flip_axis = ComboBox(name="flip_axis", label="flip axis", choices=list(FLIP_AXES))
        self.flip_button = PushButton(text="Flip")
        self.grow = FloatSpinBox(name="grow", label="grow/shrink (mm)", min=0.1, max=100.0, value=2.0)
        self.dilate_button = PushButton(text="Dilate")
        self.erode_button = PushButton(text="Erode")
        self.delete_button = PushButton(text="Delete lesion")
        tools = Container(
            widgets=[
                self.lesion_labels,
                self.point_from,
                self.at_point_only,
                self.keep_inside,
                self.radius_z,
                self.radius_y,
                self.radius_x,
                self.add_button,
                *self.offset,
                self.move_button,
                self.factor,
                self.scale_button,
                self.angle,
                self.plane,
                self.rotate_button,
                self.flip_axis,
                self.flip_button,
                self.grow,
                self.dilate_button,
                self.erode_button,
                self.delete_button,
            ]
        )
        self.track(tools)
        section = QCollapsible("Lesion tools")
        section.addWidget(tools.native)
        section.expand(animate=False)
        self.body.addWidget(section)

        # ---- augmentation
        self.aug_seed = SpinBox(name="aug_seed", label="seed", min=0, max=2**31 - 1, value=0)
        self.aug_angle = FloatSpinBox(
            name="aug_angle", label="max rotation (deg)", min=0.0, max=45.0, value=2.5
        )
        self.aug_flip = FloatSpinBox(
            name="aug_flip", label="flip probability", min=0.0, max=1.0, step=0.1, value=0.5
        )
        self.aug_min = SpinBox(name="aug_min", label="shift min (voxels)", min=0, max=999, value=20)
        self.aug_max = SpinBox(name="aug_max", label="shift max (voxels)", min=0, max=999, value=60)
        self.augment_button = PushButton(
            text="Random augmentation", tooltip="the paper's mask augmentation, done as intended"
        )
        aug = Container(
            widgets=[
                self.aug_seed,
                self.aug_angle,
                self.aug_flip,
                self.aug_min,
                self.aug_max,
                self.augment_button,
            ]
        )
        section2 = QCollapsible("Random augmentation")
        section2.addWidget(aug.native)
        self.body.addWidget(section2)
        self.body.addWidget(
            note(
                "Each operation is one undo step (Ctrl+Z on the mask layer). Editing a mask "
                "marks results generated from it as stale."
            )
        )
        self.status = note("")
        self.body.addWidget(self.status)
        self.body.addStretch(1)

        for button, op in (
            (self.add_button, self.add_lesion),
            (self.move_button, self.move),
            (self.scale_button, self.scale),
            (self.rotate_button, self.rotate),
            (self.flip_button, self.flip),
            (self.dilate_button, self.dilate),
            (self.erode_button, self.erode),
            (self.delete_button, self.delete),
            (self.augment_button, self.augment),
        ):
            button.clicked.connect(lambda *_, op=op: self._guard(op))
        self.session.model_changed.connect(self._model_changed)
        self._model_changed(self.session.bundle)
        self.reset_choices()
        self._mask_chosen(self.mask.value)

    def _point_choices(self, widget=None):
        import napari

        return [(CURSOR, CURSOR)] + [
            (layer.name, layer)
            for layer in self.viewer.layers
            if isinstance(layer, napari.layers.Points) and not layer.name.startswith("GEM-3D window")
        ]

    def _model_changed(self, bundle) -> None:
        if bundle is not None:
            self.lesion_labels.value = default_lesion_labels(dict(bundle.config.labels.names))

    # ---------------------------------------------------------------------------------- new mask
    def _create_clicked(self, *_):
        self._guard(self.create_mask)

    def create_mask(self):
        """A new uint8 Labels layer of zeros, placed exactly like the chosen image."""
        image = self.image.value
        if image is None:
            raise ValueError("choose an image layer first")
        if image.ndim != 3:
            raise ValueError(f"{image.name!r} is {image.ndim}-D; masks are made for 3-D images")
        metadata = {}
        if SOURCE_KEY in image.metadata:
            metadata[SOURCE_KEY] = dict(image.metadata[SOURCE_KEY])
        layer = self.viewer.add_labels(
            np.zeros(image.data.shape, dtype=np.uint8),
            name=f"{image.name} mask",
            metadata=metadata,
            **transforms_of(image),
        )
        self.reset_choices()
        self.mask.value = layer
        layer.mode = "paint"
        return layer

    def mask_from_image(self):
        """Run make-mask on the chosen image in a worker; the result becomes a new Labels layer."""
        from ..commands.make_mask import parse_label_map
        from ..make_mask import make_model_mask
        from .jobs import Handlers, Job, run_once
        from .layers import layer_to_volume

        image = self.image.value
        if image is None:
            raise ValueError("choose the image layer to make the mask from")
        bundle = self.session.require_bundle()
        config = bundle.config
        lesion = layer_to_volume(self.lesion_from.value) if self.lesion_from.value is not None else None
        label_map = parse_label_map(self.label_map.value) if self.label_map.value.strip() else None
        volume = layer_to_volume(image)

        def done(result):
            labels, report = result
            metadata = {SOURCE_KEY: dict(image.metadata[SOURCE_KEY])} if SOURCE_KEY in image.metadata else {}
            layer = self.viewer.add_labels(np.asarray(labels.array), name=f"{image.name} model mask",
                                           metadata=metadata, **transforms_of(image))
            self.reset_choices()
            self.mask.value = layer
            counts = ", ".join(f"{k} {v}" for k, v in report["counts"].items())
            self.status.setText(f"Mask from image ({report['method']['brain']}): {counts}")

        job = Job(run_once(make_model_mask, volume, config.card, config.labels.names, lesion=lesion,
                           lesion_as=self.lesion_as.value.strip() or "auto", label_map=label_map,
                           brain=self.brain.value),
                  total=0, desc="GEM-3D mask from image", handlers=Handlers(returned=done))
        self.status.setText("Making a mask from the image (brain extraction takes a few seconds)…")
        return job.start()

    # ---------------------------------------------------------------------------------- painting
    def _mask_chosen(self, layer) -> None:
        if layer is None:
            return
        self.session.watch_mask(layer)
        self.label.value = int(layer.selected_label)
        self.brush3d.value = layer.n_edit_dimensions == 3

    def _label_changed(self, value) -> None:
        if self.mask.value is not None:
            self.mask.value.selected_label = int(value)

    def _brush_changed(self, value) -> None:
        if self.mask.value is not None:
            self.mask.value.n_edit_dimensions = 3 if value else 2

    # ----------------------------------------------------------------------------- lesion tools
    def _guard(self, op) -> Any:
        from napari.utils.notifications import show_error

        try:
            return op()
        except Exception as exc:
            show_error(f"GEM-3D mask editor: {exc}")
            self.status.setText(str(exc))
            return None

    def _layer(self):
        layer = self.mask.value
        if layer is None:
            raise ValueError("choose a mask (Labels) layer, or make one with 'New empty mask'")
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
                raise ValueError("move the mouse over the canvas to set the cursor position first")
        else:
            if len(source.data) == 0:
                raise ValueError(f"the Points layer {source.name!r} has no point")
            world = np.asarray(source.data_to_world(source.data[-1]), dtype=float)
        data = np.asarray(layer.world_to_data(world), dtype=float)
        if np.any(np.round(data) < 0) or np.any(np.round(data) > np.asarray(layer.data.shape) - 1):
            raise ValueError(f"the point {np.round(data, 1).tolist()} is outside the mask")
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

    def add_lesion(self):
        layer = self._layer()
        radii = (self.radius_z.value, self.radius_y.value, self.radius_x.value)
        region = self._region(layer) if np.any(np.asarray(layer.data) != 0) else None
        edit = lesions.add_ellipsoid(
            np.asarray(layer.data),
            self.point(layer),
            radii,
            int(self.label.value),
            spacing=self.spacing(layer),
            region=region,
        )
        return self.apply(layer, edit, "add")

    def move(self):
        layer = self._layer()
        offset = [w.value for w in self.offset]
        edit = lesions.move(
            np.asarray(layer.data),
            parse_labels(self.lesion_labels.value),
            offset,
            region=self._region(layer),
            **self._common(layer),
        )
        return self.apply(layer, edit, "move")

    def scale(self):
        layer = self._layer()
        edit = lesions.scale(
            np.asarray(layer.data),
            parse_labels(self.lesion_labels.value),
            self.factor.value,
            region=self._region(layer),
            **self._common(layer),
        )
        return self.apply(layer, edit, "scale")

    def rotate(self):
        layer = self._layer()
        edit = lesions.rotate(
            np.asarray(layer.data),
            parse_labels(self.lesion_labels.value),
            self.angle.value,
            axes=ROTATION_PLANES[self.plane.value],
            region=self._region(layer),
            **self._common(layer),
        )
        return self.apply(layer, edit, "rotate")

    def flip(self):
        layer = self._layer()
        edit = lesions.flip(
            np.asarray(layer.data),
            parse_labels(self.lesion_labels.value),
            FLIP_AXES[self.flip_axis.value],
            region=self._region(layer),
            **self._common(layer),
        )
        return self.apply(layer, edit, "flip")

    def dilate(self):
        layer = self._layer()
        edit = lesions.dilate(
            np.asarray(layer.data),
            parse_labels(self.lesion_labels.value),
            self.grow.value,
            region=self._region(layer),
            **self._common(layer),
        )
        return self.apply(layer, edit, "dilate")

    def erode(self):
        layer = self._layer()
        edit = lesions.erode(
            np.asarray(layer.data),
            parse_labels(self.lesion_labels.value),
            self.grow.value,
            **self._common(layer),
        )
        return self.apply(layer, edit, "erode")

    def delete(self):
        layer = self._layer()
        edit = lesions.delete(
            np.asarray(layer.data), parse_labels(self.lesion_labels.value), **self._common(layer)
        )
        return self.apply(layer, edit, "delete")

    def augment(self):
        layer = self._layer()
        if self.aug_min.value > self.aug_max.value:
            raise ValueError("shift min must not exceed shift max")
        edit = lesions.random_augmentation(
            np.asarray(layer.data),
            np.random.default_rng(int(self.aug_seed.value)),
            lesion_labels=parse_labels(self.lesion_labels.value),
            spacing=self.spacing(layer),
            max_angle_deg=self.aug_angle.value,
            flip_axis=FLIP_AXES["left-right"],
            flip_probability=self.aug_flip.value,
            shift_range=(self.aug_min.value, self.aug_max.value),
        )
        changed = self.apply(layer, edit, "augmentation")
        info = edit.info
        self.status.setText(
            f"augmentation: angles {np.round(info['angles_deg'], 2).tolist()} deg, "
            f"{'flipped' if info['flipped'] else 'not flipped'}, shift {info['shift_vox']} voxels "
            f"({changed} voxels changed)"
        )
        return changed
