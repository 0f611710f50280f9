"""File identity: a file's SHA-256, and the name + hash record that provenance keeps for an input."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

_HASHES: dict[tuple[Path, int, int], str] = {}


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def input_spec(path: str | os.PathLike[str] | None) -> dict[str, Any] | None:
    """``{"file": name, "sha256": ...}`` of an input, hashed once per process while it stays unchanged.

    The name without its folder is enough to find the data again with the hash, and keeps the user's
    folder names out of every output (``--record-paths`` adds them where wanted).
    """
    if path is None:
        return None
    path = Path(path).resolve()
    stat = path.stat()
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key not in _HASHES:
        _HASHES[key] = file_sha256(path)
    return {"file": path.name, "sha256": _HASHES[key]}


__all__ = ["file_sha256", "input_spec"]
