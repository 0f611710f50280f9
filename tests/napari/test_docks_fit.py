"""All five GEM-3D docks at 1500x900: each fits alone and opened together (a shared tab group, each at the
full height), with every section unfolded, and a tooltip on every control. Widget geometry, not pixels."""

from __future__ import annotations

import pytest
from dock_helpers import overflow, show_docked, visible_height, without_tooltip

from napari_gem3d._napari.widget_gallery import GalleryWidget
from napari_gem3d._napari.widget_informed import InformedSliceWidget
from napari_gem3d._napari.widget_inspector import InspectorWidget
from napari_gem3d._napari.widget_mask_editor import MaskEditorWidget
from napari_gem3d._napari.widget_sampling import SamplingWidget

DOCKS = [MaskEditorWidget, InformedSliceWidget, SamplingWidget, GalleryWidget, InspectorWidget]


def _unfold(qtbot, widget):
    from superqt import QCollapsible

    for box in widget.inner.findChildren(QCollapsible):
        box.expand(animate=False)
    qtbot.wait(50)


@pytest.mark.parametrize("cls", DOCKS, ids=lambda c: c.__name__)
def test_each_dock_fits_alone_with_every_section_open(viewer_case, qtbot, cls):
    viewer, _, _ = viewer_case
    widget = cls(viewer)
    show_docked(viewer, widget, cls.__name__, qtbot)
    assert overflow(widget) == []
    _unfold(qtbot, widget)
    assert overflow(widget) == []
    assert without_tooltip(widget) == []


def test_all_docks_open_together_share_the_full_height(viewer_case, qtbot):
    viewer, _, _ = viewer_case
    widgets = []
    for cls in DOCKS:
        widget = cls(viewer)
        show_docked(viewer, widget, cls.__name__, qtbot)
        widgets.append(widget)
    window = viewer.window._qt_window
    for widget in widgets:
        dock = widget.parent()
        while dock is not None and not hasattr(dock, "isFloating"):
            dock = dock.parent()
        dock.raise_()
        qtbot.wait(50)
        others = {d.widget() for d in window.tabifiedDockWidgets(dock)}
        assert set(widgets) - {widget} <= others, type(widget).__name__
        assert visible_height(widget) >= 600, type(widget).__name__  # not squeezed to a few rows
        assert overflow(widget) == [], type(widget).__name__
