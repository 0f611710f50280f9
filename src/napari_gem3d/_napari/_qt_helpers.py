"""Small Qt/magicgui helpers shared by the GEM-3D dock widgets (qtpy only)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QEvent, Qt
from qtpy.QtWidgets import QDockWidget, QLabel, QScrollArea, QSizePolicy, QVBoxLayout, QWidget

NARROW = 4  # characters a combo box asks room for: long layer names elide instead of widening the dock
WIDEST = 340  # px a dock asks for at most (of a 1500 px wide window)


class DockWidget(QWidget):
    """A dock body: content in a vertical layout inside a vertical-only QScrollArea.

    - It fits the dock's width: no horizontal scroll bar; combo boxes and labels shrink or wrap
      (:func:`narrow`), so a dock at napari's default width shows every control.
    - GEM-3D docks opened beside each other share one tab group instead of splitting the height: each
      keeps the full height of the dock area (stacked docks were squeezed to a few rows).
    - Subclasses add widgets to ``self.body`` and may register layer combo boxes with ``self.track``.
      Layer choices refresh on layer insert/remove/rename.
    - Closing the dock (its X, ``close()``, or ``viewer.window.remove_dock_widget``) cancels this
      widget's job and disconnects from the viewer.
    """

    def __init__(self, viewer, title: str = ""):
        super().__init__()
        from .session import get_session

        self.viewer = viewer
        self.session = get_session(viewer)
        self._tracked: list[Any] = []
        self._layer_callbacks: list[tuple[Any, Callable]] = []
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = self.scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        inner = self.inner = QWidget()
        inner.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)  # width follows the dock
        self.body = QVBoxLayout(inner)
        self.body.setContentsMargins(6, 6, 6, 6)
        scroll.setWidget(inner)
        outer.addWidget(scroll)
        self.setWindowTitle(title)  # (napari's dock title bar names the dock: no heading repeats it)
        events = viewer.layers.events
        for emitter in (events.inserted, events.removed, events.moved):
            emitter.connect(self._layers_changed)
        for layer in viewer.layers:
            self._watch_name(layer)
        self._closed = False
        self._docked = False

    # -------------------------------------------------------------------------------- layer choices
    def track(self, widget) -> Any:
        """Keep a magicgui widget's (or Container's) choices in sync with the layer list."""
        self._tracked.append(widget)
        return widget

    def reset_choices(self, event=None) -> None:
        for widget in self._tracked:
            with contextlib.suppress(RuntimeError):  # a Qt object already deleted
                widget.reset_choices()

    def _watch_name(self, layer) -> None:
        layer.events.name.connect(self.reset_choices)

    def _layers_changed(self, event=None) -> None:
        if self._closed:
            return
        value = getattr(event, "value", None)
        if event is not None and getattr(event, "type", "") == "inserted" and value is not None:
            self._watch_name(value)
        self.reset_choices()

    # ----------------------------------------------------------------------------------- lifecycle
    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        self.shutdown()
        super().closeEvent(event)

    def event(self, event) -> bool:
        """napari removes a dock by un-parenting its widget (no close event): treat that as closing."""
        if event.type() == QEvent.Type.ParentChange:
            if self.parent() is not None:
                self._docked = True
            elif self._docked:
                self.shutdown()
        return super().event(event)

    def showEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().showEvent(event)
        self._align_labels()
        if not getattr(self, "_tabbed", False):
            self._tabbed = True
            tab_with_other_docks(self)

    def _align_labels(self) -> None:
        """One label width for every field of the dock, measured in napari's font (magicgui measures each
        container's labels before the theme applies, so the fields started at ragged positions)."""
        labeled = [w._labeled_widget() for container in self._tracked for w in container
                   if hasattr(w, "_labeled_widget")]
        labels = [lw for lw in labeled if lw is not None]
        widths = [lw.native.findChild(QLabel).sizeHint().width() for lw in labels]
        for lw in labels:
            lw.label_width = max(widths, default=0)

    def sizeHint(self):  # noqa: N802 - Qt API
        """Ask for the width the controls need, collapsed sections included (they do not count in Qt's hint,
        so the dock would squeeze their labels), up to WIDEST px."""
        from qtpy.QtWidgets import QScrollBar

        hint = super().sizeHint()
        margins = self.body.contentsMargins()
        scroll = QScrollBar().sizeHint().width()
        items = (self.body.itemAt(i).widget() for i in range(self.body.count()))
        need = max((item.sizeHint().width() for item in items if item is not None), default=0)
        hint.setWidth(max(hint.width(), min(WIDEST, need + margins.left() + margins.right() + scroll)))
        return hint

    def shutdown(self) -> None:
        """Cancel this widget's running job and stop listening to the viewer."""
        if self._closed:
            return
        self._closed = True
        self.cancel_own_job()
        events = self.viewer.layers.events
        for emitter in (events.inserted, events.removed, events.moved):
            emitter.disconnect(self._layers_changed)
        for layer in self.viewer.layers:
            layer.events.name.disconnect(self.reset_choices)

    def cancel_own_job(self) -> None:
        job = self.session.job
        if job is not None and getattr(job, "owner", None) is self and job.running:
            job.cancel()


def layer_choices(viewer, kind, ndim: int | None = 3) -> Callable:
    """magicgui ``choices`` callable: ``(name, layer)`` for every ``ndim``-D layer of type ``kind``."""

    def choices(widget=None):
        return [
            (layer.name, layer)
            for layer in viewer.layers
            if isinstance(layer, kind) and (ndim is None or layer.ndim == ndim)
        ]

    return choices


def scan_choices(viewer):
    """magicgui ``choices``: the 3-D image layers that are scans (GEM-3D results are not offered)."""
    import napari

    from .layers import is_generated

    every = layer_choices(viewer, napari.layers.Image)

    def choices(widget=None):
        return [(name, layer) for name, layer in every(widget) if not is_generated(layer)]

    return choices


def same_geometry(a, b) -> bool:
    """Two layers on one voxel grid (shape and voxel -> scanner affine)."""
    import numpy as np

    from .layers import layer_affine

    return a.data.shape == b.data.shape and np.allclose(layer_affine(a), layer_affine(b), atol=1e-3)


def dock_of(widget) -> QDockWidget | None:
    """The QDockWidget that holds ``widget`` (napari may wrap it in a container), or None."""
    parent = widget.parent()
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parent()
    return parent


def tab_with_other_docks(widget) -> None:
    """Put ``widget``'s dock in one tab group with the other visible GEM-3D docks of its dock area."""
    dock = dock_of(widget)
    window = dock.parent() if dock is not None else None
    if dock is None or window is None or not hasattr(window, "tabifyDockWidget") or dock.isFloating():
        return
    area = window.dockWidgetArea(dock)
    for other in window.findChildren(QDockWidget):
        if (
            other is not dock
            and isinstance(other.widget(), DockWidget)
            and other.isVisible()
            and not other.isFloating()
            and window.dockWidgetArea(other) == area
        ):
            window.tabifyDockWidget(other, dock)
            dock.show()
            dock.raise_()  # the new dock is the tab shown
            # the tab group is as wide as its first dock: widen it to what the widest member asks for
            want = max(widget.sizeHint().width(), other.widget().sizeHint().width())
            if other.width() < want:
                window.resizeDocks([dock], [want], Qt.Orientation.Horizontal)
            return


def narrow(container) -> None:
    """Let a magicgui container's combo boxes, line edits and sliders shrink with the dock (long choices
    elide instead of widening the dock past the screen), and give each control inside a magicgui widget
    (a slider's read-out, say) that widget's tooltip."""
    from qtpy.QtWidgets import QAbstractSpinBox, QComboBox, QLineEdit, QSlider

    root = getattr(container, "native", container)
    for widget in getattr(container, "__iter__", lambda: iter(()))():
        tip = getattr(widget, "tooltip", None)
        for child in widget.native.findChildren(QWidget) if tip else ():
            if not child.toolTip():
                child.setToolTip(tip)
    for combo in root.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(NARROW)
    for kind in (QLineEdit, QSlider, QAbstractSpinBox):
        for w in root.findChildren(kind):
            w.setMinimumWidth(max(0, min(w.minimumSizeHint().width(), 60)))


def section(title: str, *widgets, tooltip: str, expanded: bool = False) -> QWidget:
    """A collapsible section (superqt's QCollapsible) holding magicgui or Qt widgets; ``tooltip`` goes on
    its header button."""
    from qtpy.QtWidgets import QAbstractButton
    from superqt import QCollapsible

    box = QCollapsible(title)
    for widget in widgets:
        box.addWidget(getattr(widget, "native", widget))
    for button in box.findChildren(QAbstractButton):
        if not button.toolTip():
            button.setToolTip(tooltip)
    if expanded:
        box.expand(animate=False)
    else:
        box.collapse(animate=False)
    return box


def grey_out_devices(combo) -> str:
    """Grey out the devices this torch cannot use in a device combo box (each says why in its tooltip);
    returns the how-to for CUDA when it is unavailable, else ""."""
    from .session import available_devices

    available = available_devices()
    native = getattr(combo, "native", combo)
    hint = ""
    for i in range(native.count()):
        reason = available.get(native.itemText(i))
        item = native.model().item(i)
        if reason and item is not None:
            item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEnabled)
            item.setToolTip(reason)
            if native.itemText(i) == "cuda":
                hint = "GPU: " + reason
    return hint


def note(text: str) -> QLabel:
    """A small wrapped grey label."""
    label = QLabel(text)
    label.setWordWrap(True)
    label.setStyleSheet("color: grey;")
    return label
