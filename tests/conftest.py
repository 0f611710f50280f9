"""Shared fixtures and marker handling."""

from __future__ import annotations

import json
import os
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
            cache[name] = (load_file(str(GOLDEN / f"{name}.safetensors")), json.loads((GOLDEN / f"{name}.json").read_text()))
        return cache[name]

    return load


def require_data(path: Path) -> Path:
    """Return ``path`` if present; skip (or fail when GEM3D_REQUIRE_DATA is set, as in CI)."""
    if path.exists():
        return path
    if os.environ.get("GEM3D_REQUIRE_DATA", "") not in ("", "0"):
        pytest.fail(f"required offline data is missing: {path} (.ci/run installs it; GEM3D_REQUIRE_DATA is set)")
    pytest.skip(f"offline data not installed: {path} (.ci/run installs it; GEM3D_REQUIRE_DATA=1 makes this fail)")
