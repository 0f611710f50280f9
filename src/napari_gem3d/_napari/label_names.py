"""Label names for the viewer: the label scheme of the loaded model (else of the bundled demo model, read from
its config.json without loading weights), which labels are lesion parts, and naming a Labels layer's values.

A Labels layer is named through its ``features`` table (an ``index`` column of label values and a ``name``
column): napari then shows e.g. "necrotic tumour core" in the status bar beside the value under the cursor.
The layer's data is never touched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

LESION_WORDS = ("tumour", "tumor", "oedema", "edema", "lesion", "necro", "enhanc")
UNNAMED = "unnamed label"
OUR_COLUMNS = ["index", "name"]


@dataclass(frozen=True)
class LabelScheme:
    """Label value -> name, the values that are lesion parts, and the body region the labels cover."""

    names: dict[int, str]
    lesion: tuple[int, ...]
    region: str = "labelled region"

    def name(self, value: int) -> str:
        return self.names.get(int(value), f"label {int(value)}")


GENERIC = LabelScheme({0: "background", 1: "label 1"}, (1,))


def _scheme(names: dict[int, str], card: dict[str, Any] | None) -> LabelScheme:
    names = {int(k): str(v) for k, v in names.items()}
    lesion = tuple(int(v) for v in (card or {}).get("lesion_labels", ()) if int(v) in names)
    if not lesion:  # no model card: guess the lesion parts from their names
        lesion = tuple(k for k, v in names.items() if any(w in v.lower() for w in LESION_WORDS))
    region = str((card or {}).get("body_region") or "unknown")
    region = "labelled region" if region == "unknown" else region
    return LabelScheme(names, lesion or (max(names),), region)


def demo_scheme() -> LabelScheme:
    """The bundled demo model's scheme from its config.json (no weights, no torch); generic if missing."""
    from .session import default_model_path

    folder = default_model_path()
    return GENERIC if folder is None else _read_scheme(folder / "config.json")


@lru_cache(maxsize=4)
def _read_scheme(path: Path) -> LabelScheme:
    from ..masks import LabelSpec

    config = json.loads(path.read_text())
    return _scheme(LabelSpec.from_dict(config["labels"]).names, config.get("card"))


def scheme_of(bundle) -> LabelScheme:
    """The loaded model's scheme, else the demo model's."""
    if bundle is None:
        return demo_scheme()
    card = bundle.config.card
    return _scheme(dict(bundle.config.labels.names), card.to_dict() if card is not None else None)


def has_our_names(layer) -> bool:
    """The layer's features are empty or were written by :func:`name_labels` (so they may be replaced)."""
    features = layer.features
    return features.shape[1] == 0 or list(features.columns) == OUR_COLUMNS


def present_values(data) -> np.ndarray:
    """The label values in ``data`` (a fast count for uint8 masks)."""
    data = np.asarray(data)
    if data.dtype == np.uint8:
        return np.flatnonzero(np.bincount(data.ravel(), minlength=256))
    return np.unique(data)


def label_features(scheme: LabelScheme, present) -> dict[str, Any]:
    """A Labels ``features`` table naming the scheme's values and the ``present`` ones (those the scheme lacks
    are called "unnamed label")."""
    index = sorted(set(scheme.names) | {int(v) for v in np.asarray(present).ravel()})
    return {"index": np.asarray(index, dtype=np.int64), "name": [scheme.names.get(v, UNNAMED) for v in index]}


def name_labels(layer, scheme: LabelScheme) -> bool:
    """Name ``layer``'s label values with ``scheme``, unless the user set its features (returns False).
    The data is not modified."""
    if not has_our_names(layer):
        return False
    if names_of(layer).items() >= scheme.names.items():  # named already: skip scanning the data
        return True
    layer.features = label_features(scheme, present_values(layer.data))
    return True


def viewer_scheme(viewer=None) -> LabelScheme:
    """The scheme of the model loaded in ``viewer`` (default: napari's current viewer), else the demo's."""
    from .session import get_session

    if viewer is None:
        import napari

        viewer = napari.current_viewer()
    return scheme_of(get_session(viewer).bundle if viewer is not None else None)


def names_of(layer) -> dict[int, str]:
    """Label value -> name from a layer's features ({} when it has none)."""
    features = layer.features
    if "index" not in features or "name" not in features:
        return {}
    return {int(i): str(n) for i, n in zip(features["index"], features["name"], strict=True)}


def colour_of(layer, value: int) -> str:
    """The layer's display colour of ``value`` as a Qt style sheet colour: "#rrggbb", or "transparent"."""
    rgba = np.asarray(layer.colormap.map(np.asarray([value], dtype=layer.data.dtype)), float).reshape(-1)
    if rgba.size < 4 or rgba[3] == 0:
        return "transparent"
    return "#" + "".join(f"{int(round(c * 255)):02x}" for c in rgba[:3])
