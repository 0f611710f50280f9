"""Shared fixtures and marker handling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "gem3d_official"


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def golden():
    """Load a golden case: ``golden(name) -> (tensors, sidecar)``."""
    from safetensors.torch import load_file

    cache = {}

    def load(name: str):
        if name not in cache:
            sidecar = json.loads((GOLDEN / f"{name}.json").read_text())
            cache[name] = (load_file(str(GOLDEN / f"{name}.safetensors")), sidecar)
        return cache[name]

    return load


@pytest.fixture(scope="session")
def golden_volume_unet(golden):
    """``golden_volume_unet() -> (model, tensors)``: a fresh volume UNet carrying the official golden weights."""
    from napari_gem3d.models.official import from_official

    def build():
        t, meta = golden("unet_volume_tiny")
        weights = {k: v for k, v in t.items() if k.startswith("model.")}
        return from_official("volume", weights, meta["constructor_kwargs"]), t

    return build


@pytest.fixture(scope="session")
def demo_config():
    """The bundled demo model's config (its card included), read without loading the networks."""
    from napari_gem3d import demo_model_path
    from napari_gem3d.models import BundleConfig

    return BundleConfig.from_dict(json.loads((demo_model_path() / "config.json").read_text()))


@pytest.fixture(scope="session")
def demo_pair():
    """The bundled demo case: (image, mask) Volumes."""
    from napari_gem3d import demo_case

    return demo_case()
