"""Geometry checks for the GEM-3D docks: does every control fit the dock's width, does every control have a
tooltip, how tall is the dock. They assert on widget geometry (Qt's layout), not on pixels."""

from __future__ import annotations

WINDOW = (1500, 900)  # the size a clinician's laptop screen gives napari


def show_docked(viewer, widget, name: str, qtbot=None):
    """Dock ``widget`` on the right of a 1500x900 window, shown and laid out; returns the QDockWidget."""
    from qtpy.QtWidgets import QApplication

    viewer.window._qt_window.resize(*WINDOW)
    dock = viewer.window.add_dock_widget(widget, name=name, area="right")
    for _ in range(5):
        QApplication.processEvents()
    if qtbot is not None:
        qtbot.waitExposed(widget)
        qtbot.wait(50)
    return dock


def _controls(widget):
    from qtpy.QtWidgets import QAbstractButton, QAbstractSlider, QAbstractSpinBox, QComboBox, QLineEdit

    kinds = (QAbstractButton, QComboBox, QAbstractSpinBox, QAbstractSlider, QLineEdit)
    out = []
    for kind in kinds:
        for child in widget.inner.findChildren(kind):
            parent = child.parent()
            if isinstance(parent, (QAbstractSpinBox, QComboBox)):  # a spin box's or combo box's own line edit
                continue
            out.append(child)
    return out


def describe(child) -> str:
    text = getattr(child, "text", None)
    text = text() if callable(text) else ""
    return f"{type(child).__name__}({text or child.objectName() or child.toolTip()[:30]!r})"


def overflow(widget) -> list[str]:
    """What in a GEM-3D dock does not fit its width: the layout's minimum, any visible widget whose right
    edge lies beyond the viewport, or a control squeezed narrower than it needs (its text cut off). Empty
    when the dock shows every control whole without a horizontal scroll."""
    from qtpy.QtCore import QPoint
    from qtpy.QtWidgets import QAbstractButton, QAbstractSpinBox, QComboBox, QLabel, QWidget

    width = widget.scroll.viewport().width()
    bad = []
    need = widget.inner.layout().minimumSize().width()
    if need > width:
        bad.append(f"the layout needs {need} px, the dock shows {width} px")
    for child in widget.inner.findChildren(QWidget):
        if not child.isVisibleTo(widget.inner) or child.isWindow():
            continue
        right = child.mapTo(widget.inner, QPoint(0, 0)).x() + child.width()
        if right > width + 1:
            bad.append(f"{describe(child)} ends at {right} px > {width} px")
        cut = isinstance(child, (QAbstractButton, QAbstractSpinBox, QComboBox)) or (
            isinstance(child, QLabel) and not child.wordWrap() and child.text())
        if cut and child.width() + 1 < child.minimumSizeHint().width():
            bad.append(f"{describe(child)} squeezed to {child.width()} px < {child.minimumSizeHint().width()} px")
    return bad


def without_tooltip(widget) -> list[str]:
    """Interactive controls with no tooltip on them or on the magicgui widget around them."""
    missing = []
    for child in _controls(widget):
        node, found = child, False
        while node is not None and node is not widget:
            if node.toolTip().strip():
                found = True
                break
            node = node.parent()
        if not found:
            missing.append(describe(child))
    return missing


def visible_height(widget) -> int:
    """Height of the dock's viewport on screen (a squeezed dock shows a few rows)."""
    return widget.scroll.viewport().height()


def record_windows(widget) -> list:
    """Every window update the sampling dock ``widget`` handles from now on (on the GUI thread), in order."""
    updates = []
    original = widget._on_window

    def record(update):
        original(update)
        updates.append(update)

    widget._on_window = record
    return updates
