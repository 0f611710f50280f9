"""The napari manifest: valid for npe2, every python_name importable, and nothing imports torch early."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "src" / "napari_gem3d" / "napari.yaml"


def _python_names() -> list[str]:
    data = yaml.safe_load(MANIFEST.read_text())
    return [c["python_name"] for c in data["contributions"]["commands"]]


def test_root_manifest_is_the_packaged_one():
    root = ROOT / "napari.yaml"
    assert root.is_symlink() and root.resolve() == MANIFEST.resolve()


@pytest.mark.parametrize("python_name", _python_names())
def test_every_python_name_imports_without_torch(python_name):
    module, attr = python_name.split(":")
    code = (
        "import importlib, sys\n"
        f"obj = getattr(importlib.import_module({module!r}), {attr!r})\n"
        "assert callable(obj)\n"
        "assert 'torch' not in sys.modules, 'the manifest import pulled in torch'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_npe2_validate_with_imports():
    done = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "napari-gem3d", "--imports"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "valid" in done.stdout
