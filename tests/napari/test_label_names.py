"""Label names for the viewer: the demo model's scheme read without weights, lesion parts, naming a layer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_gem3d._napari import label_names
from napari_gem3d._napari.label_names import (
    UNNAMED,
    demo_scheme,
    label_features,
    name_labels,
    names_of,
    scheme_of,
)


def test_the_demo_scheme_comes_from_config_json_without_loading_weights(monkeypatch):
    import napari_gem3d
    import napari_gem3d.models.bundle as bundle_module

    def no_weights(*args, **kwargs):
        raise AssertionError("the label names must not load model weights")

    monkeypatch.setattr(bundle_module, "load_bundle", no_weights)
    monkeypatch.setattr(bundle_module, "_read_tensors", no_weights)
    config = json.loads((napari_gem3d.demo_model_path() / "config.json").read_text())
    scheme = demo_scheme()
    assert scheme.names == {int(k): v for k, v in config["labels"]["names"].items()}
    assert scheme.lesion == tuple(config["card"]["lesion_labels"])
    assert scheme.region == config["card"]["body_region"]
    assert scheme_of(None) == scheme


def test_without_a_model_card_lesion_parts_are_found_by_name(bundle, monkeypatch):
    from napari_gem3d._napari import session as session_module

    scheme = scheme_of(bundle)  # the tiny bundle's card lists no lesion labels
    assert bundle.config.card is None or not bundle.config.card.lesion_labels
    names = bundle.config.labels.names
    assert [names[v] for v in scheme.lesion] == [n for n in names.values() if "tumour" in n or "oedema" in n]
    assert scheme.region == "labelled region"
    monkeypatch.setattr(session_module, "default_model_path", lambda: None)
    assert demo_scheme() == label_names.GENERIC


@pytest.mark.parametrize("dtype", [np.uint8, np.int32])
def test_naming_a_layer_keeps_its_data_and_respects_the_users_own_features(make_napari_viewer, dtype):
    viewer = make_napari_viewer()
    scheme = demo_scheme()
    data = np.zeros((3, 4, 5), dtype)
    data[1, 1:3, 1:4] = 6
    data[2, 0, 0] = 9  # a value the scheme does not name
    layer = viewer.add_labels(data.copy())
    assert name_labels(layer, scheme)
    assert layer.data.dtype == data.dtype and layer.data.tobytes() == data.tobytes()
    assert names_of(layer) == {**scheme.names, 9: UNNAMED}
    status = layer.get_status((1, 1, 1))["value"]
    assert scheme.names[6] in status and scheme.names[0] not in status

    own = viewer.add_labels(data.copy(), features={"index": [0, 6], "grade": ["none", "high"]})
    assert not name_labels(own, scheme)
    assert list(own.features.columns) == ["index", "grade"]
    features = label_features(scheme, [0, 6])
    assert dict(zip(features["index"], features["name"], strict=True)) == scheme.names
