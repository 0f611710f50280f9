"""Locating the offline real data that .ci/run installs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def require_data(path: Path) -> Path:
    """Return ``path`` if present; skip (or fail when GEM3D_REQUIRE_DATA is set, as in CI)."""
    if path.exists():
        return path
    if os.environ.get("GEM3D_REQUIRE_DATA", "") not in ("", "0"):
        pytest.fail(f"required offline data is missing: {path} (.ci/run installs it; GEM3D_REQUIRE_DATA is set)")
    pytest.skip(f"offline data not installed: {path} (.ci/run installs it; GEM3D_REQUIRE_DATA=1 makes this fail)")
