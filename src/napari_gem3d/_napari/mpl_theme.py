"""Matplotlib figures in napari's theme colours: figure and axes background, text, ticks, spines, legend."""

from __future__ import annotations

# curve colours readable on both napari themes' backgrounds (dark #23242b, light #ebe7e6)
CURVES = ("#f28e2b", "#3b9ad9")
NAMES = ("background", "foreground", "primary", "highlight", "text", "icon", "warning")


def theme_colours(viewer) -> dict[str, str]:
    """Hex colours of the viewer's current napari theme (``"system"`` resolves to light or dark)."""
    from napari.utils.theme import get_theme

    theme = get_theme(viewer.theme)
    return {name: getattr(theme, name).as_hex() for name in NAMES}


def style_figure(figure, colours: dict[str, str], fontsize: float = 8) -> None:
    """Paint ``figure`` and its axes with the theme ``colours`` (from :func:`theme_colours`)."""
    text = colours["text"]
    figure.set_facecolor(colours["background"])
    for ax in figure.axes:
        ax.set_facecolor(colours["background"])
        for spine in ax.spines.values():
            spine.set_color(colours["highlight"])
        ax.tick_params(colors=colours["icon"], labelcolor=text, labelsize=fontsize)
        for label in (ax.xaxis.label, ax.yaxis.label, ax.title):
            label.set_color(text)
            label.set_fontsize(fontsize)
        legend = ax.get_legend()
        if legend is not None:
            legend.get_frame().set_facecolor(colours["foreground"])
            legend.get_frame().set_edgecolor(colours["primary"])
            for entry in legend.get_texts():
                entry.set_color(text)
