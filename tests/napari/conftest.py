"""Fixtures for the napari tests (run them under Xvfb: ``xvfb-run -a pytest tests/napari``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/ helpers (sampler_helpers, ...)


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    mine = [item for item in items if here in Path(str(item.fspath)).parents]
    for item in mine:
        item.add_marker(pytest.mark.napari)
    if (
        sys.platform.startswith("linux")
        and not os.environ.get("DISPLAY")
        and not os.environ.get("WAYLAND_DISPLAY")
    ):
        skip = pytest.mark.skip(reason="needs a display: run under `xvfb-run -a pytest ...`")
        for item in mine:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """The test machine is small and shared: oversubscribed torch threads are 10x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    os.environ["GEM3D_THREADS"] = "1"  # the docks choose threads by idle cores: pin them here
    yield
    os.environ.pop("GEM3D_THREADS", None)
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def bundle_path(tmp_path_factory):
    """A tiny random-weight bundle (window 8) saved to disk, so 'Load model' works from a path."""
    from napari_gem3d.models import save_bundle
    from sampler_helpers import tiny_bundle

    return save_bundle(tiny_bundle(window=8), tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="session")
def bundle(bundle_path):
    from napari_gem3d.models import load_bundle

    return load_bundle(bundle_path)


@pytest.fixture
def case():
    from study_helpers import synthetic_case

    return synthetic_case()


@pytest.fixture
def viewer_case_without_model(make_napari_viewer, case):
    """A shown viewer with the synthetic image + mask as layers and no model loaded yet (first use)."""
    from napari_gem3d._napari.layers import volume_to_layer

    viewer = make_napari_viewer(show=True)
    image, mask = case
    data, kwargs = volume_to_layer(image, "image", name="image")
    image_layer = viewer.add_image(data, **kwargs)
    data, kwargs = volume_to_layer(mask, "labels", name="mask")
    mask_layer = viewer.add_labels(data, **kwargs)
    return viewer, image_layer, mask_layer


@pytest.fixture
def viewer_case(viewer_case_without_model, bundle, bundle_path):
    """A shown viewer with the synthetic image + mask as layers and the tiny model in its session."""
    from napari_gem3d._napari.session import get_session

    viewer, image_layer, mask_layer = viewer_case_without_model
    get_session(viewer).set_bundle(bundle, str(Path(bundle_path).resolve()))
    return viewer, image_layer, mask_layer
