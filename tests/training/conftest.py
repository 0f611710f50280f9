"""Fixtures of the training tests; ``training/`` sits at the repository root, beside src/."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from train_helpers import write_pairs  # noqa: E402


@pytest.fixture(scope="session")
def pairs_data(tmp_path_factory) -> Path:
    return write_pairs(tmp_path_factory.mktemp("pairs"))
