"""Output files and folders: checked before any work, never one of the inputs, in the type users expect.

Every command that writes checks its output first (:func:`check_output_file`, :func:`check_output_folder`),
so a wrong ``--out`` fails in a second instead of after a whole generation. An output that resolves to an
input (the same path after resolving links, or the same inode) is refused even with ``--overwrite``:
``--overwrite`` replaces earlier outputs, never the user's data.

Generated volumes are stored in the reference image's integer type when it has one (rounded, clipped to
the type's range, both recorded): a scanner's int16 volume comes back as int16 in the same units, at the
same size on disk (:func:`output_dtype`, :func:`cast_output`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .io import WRITE_SUFFIXES, same_file, volume_suffix
from .volume import Volume

#: ``--dtype`` choices: "auto" keeps the reference image's integer type (float32 for float images).
OUTPUT_DTYPES = ("auto", "float32", "int16", "uint16", "uint8", "int32")

Inputs = Iterable[tuple[str, "str | os.PathLike[str] | None"]]


def _named(inputs: Inputs) -> list[tuple[str, Path]]:
    return [(label, Path(p)) for label, p in inputs if p is not None]


def _probe_writable(folder: Path, what: str) -> None:
    """Create and remove a hidden file in ``folder``: the only test that also holds for root and /proc."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".gem3d-probe-"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise PermissionError(
            f"cannot write {what} in folder {folder} ({reason}); choose a folder you can write to"
        ) from None


def refuse_inputs(outputs: Iterable[str | os.PathLike[str]], inputs: Inputs, option: str = "--out") -> None:
    """Raise if any of ``outputs`` is one of ``inputs`` (same resolved path or same inode)."""
    named = _named(inputs)
    for out in map(Path, outputs):
        for label, path in named:
            if same_file(out, path):
                why = "--overwrite replaces earlier outputs, never an input" if option.startswith("--") else (
                    "an output never replaces an input")
                raise FileExistsError(
                    f"refusing to write {option + ' ' if option else ''}{out}: it is the input {label} ({path}); "
                    f"choose a new file name ({why})"
                )


def check_output_file(out: str | os.PathLike[str], *, inputs: Inputs = (), overwrite: bool = False,
                      option: str = "--out") -> Path:
    """``out`` as a path that may be written: refuse it now, with the fix, if it cannot or must not be."""
    out = Path(out)
    suffix = volume_suffix(out)
    if out.is_dir():
        raise IsADirectoryError(
            f"{option} {out} is a folder; give a file name inside it, e.g. {out / 'generated.nii.gz'}"
        )
    if suffix not in WRITE_SUFFIXES:
        found = f"the extension {''.join(out.suffixes[-2:])!r}" if out.suffixes else "no extension"
        raise ValueError(f"{option} {out.name} has {found}; name it .nii.gz, .nii or .nrrd")
    refuse_inputs([out], inputs, option)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it, or choose a new name")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"output folder {out.parent} does not exist; create it first (mkdir -p {out.parent})")
    _probe_writable(out.parent, out.name)
    return out


def check_output_folder(out: str | os.PathLike[str], *, inputs: Inputs = (), option: str = "--out") -> Path:
    """``out`` as a folder that may be created and written, holding none of the inputs."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{option} {out} is a file; give a folder (it is created if needed)")
    root = out.resolve()
    for label, path in _named(inputs):
        if path.resolve().is_relative_to(root):
            raise FileExistsError(
                f"refusing {option} {out}: it holds the input {label} {path}, which the outputs could replace; "
                "choose an output folder outside the inputs' folders"
            )
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        raise NotADirectoryError(f"{option} {out}: {existing} is a file, not a folder")
    _probe_writable(existing, "the outputs")
    return out


def output_dtype(requested: str, reference: Volume | None) -> np.dtype:
    """The type to store a generated volume in: ``requested``, or for "auto" the reference's integer type.

    A reference stored with a NIfTI scale (``scl_slope``) holds scaled floats, so it gives float32.
    """
    if requested not in OUTPUT_DTYPES:
        raise ValueError(f"unknown output type {requested!r}; choose one of {', '.join(OUTPUT_DTYPES)}")
    if requested != "auto":
        return np.dtype(requested)
    if reference is None or "scl_slope" in reference.header:
        return np.dtype(np.float32)
    disk = np.dtype(reference.header.get("dtype") or reference.array.dtype)
    return disk if disk.kind in "iu" and disk.itemsize <= 4 else np.dtype(np.float32)


def cast_output(array: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, dict[str, Any]]:
    """``array`` in ``dtype`` (integers: rounded to nearest, clipped to the type) and what was done."""
    dtype = np.dtype(dtype)
    array = np.asarray(array, dtype=np.float32)
    if dtype.kind == "f":
        return array.astype(dtype), {"dtype": dtype.name}
    info = np.iinfo(dtype)
    rounded = np.rint(array)
    clipped = int(np.count_nonzero((rounded < info.min) | (rounded > info.max)))
    stored = np.clip(rounded, info.min, info.max).astype(dtype)
    return stored, {"dtype": dtype.name, "rounded": "to nearest", "clipped_to": [int(info.min), int(info.max)],
                    "clipped_voxels": clipped}


__all__ = ["OUTPUT_DTYPES", "cast_output", "check_output_file", "check_output_folder", "output_dtype", "refuse_inputs"]
