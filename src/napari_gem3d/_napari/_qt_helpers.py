"""Small Qt/magicgui helpers shared by the GEM-3D dock widgets (qtpy only)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from qtpy.QtWidgets import QLabel, QScrollArea, QVBoxLayout, QWidget


class DockWidget(QWidget):
    """A dock body: content in a vertical layout inside a QScrollArea (tall docks never break napari).

    Subclasses add widgets to ``self.body`` and may register layer combo boxes with ``self.track``.
    Layer choices refresh on layer insert/remove/rename; ``close()`` cancels this widget's job and
    disconnects from the viewer.
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
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        inner = QWidget()
        self.body = QVBoxLayout(inner)
        self.body.setContentsMargins(6, 6, 6, 6)
        scroll.setWidget(inner)
        outer.addWidget(scroll)
        if title:
            heading = QLabel(f"<b>{title}</b>")
            heading.setWordWrap(True)
            self.body.addWidget(heading)
        events = viewer.layers.events
        for emitter in (events.inserted, events.removed, events.moved):
            emitter.connect(self._layers_changed)
        for layer in viewer.layers:
            self._watch_name(layer)
        self._closed = False

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


def note(text: str) -> QLabel:
    """A small wrapped grey label."""
    label = QLabel(text)
    label.setWordWrap(True)
    label.setStyleSheet("color: grey;")
    return label
