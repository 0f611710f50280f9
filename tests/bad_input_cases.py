"""Fixtures for tests/test_bad_inputs.py: a tiny valid case on disk, broken files, and the CLI harness.

Everything is written into one ``root`` folder (pytest's tmp_path) so that one snapshot of that folder
tells whether a refused command changed an input or left an output or a temporary file behind.
"""

from __future__ import annotations

import gzip
import os
import re
import signal
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from napari_gem3d.files import file_sha256
from study_helpers import synthetic_mask

SHAPE = (24, 24, 12)  # the last stored axis is S (RAS affine): 12 model slices of 24 x 24 -> 64 x 64
AFFINE = np.diag([2.0, 2.0, 3.0, 1.0])
AFFINE[:3, 3] = (-24.0, -24.0, -18.0)
INFORMED_INDEX = 6  # int(0.5 * 12): the informed slice at the default --position 0.5
HUGE = (30000, 30000, 30000)


# ------------------------------------------------------------------------------------------ volumes
def mask_array(shape=SHAPE) -> np.ndarray:
    """Labels 0..3 of the demo model's scheme (outside, CSF, grey, white): nested ellipsoids, no tumour."""
    mask = synthetic_mask(shape)
    return np.where(mask >= 4, 3, mask).astype(np.uint8)


def image_array(mask: np.ndarray, seed: int = 0) -> np.ndarray:
    lut = np.array([0.0, 300.0, 600.0, 800.0], np.float32)
    rng = np.random.default_rng(seed)
    return np.rint(lut[mask] + rng.normal(0, 20, mask.shape)).astype(np.int16)


def save_nifti(array: np.ndarray, path: Path, affine=AFFINE) -> Path:
    img = nib.Nifti1Image(np.asarray(array), affine)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    img.header.set_xyzt_units(xyz="mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def with_value(array: np.ndarray, index: tuple[int, int, int], value: float) -> np.ndarray:
    out = np.asarray(array, dtype=np.float32).copy()
    out[index] = value
    return out


# -------------------------------------------------------------------------------------- broken files
def _huge_header_bytes() -> bytes:
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(HUGE)
    hdr.set_data_dtype(np.int16)
    hdr.set_qform(AFFINE, code=1)
    hdr.set_sform(AFFINE, code=1)
    hdr["vox_offset"] = 352
    hdr["magic"] = b"n+1"
    return hdr.binaryblock + b"\x00\x00\x00\x00"  # no extensions; the data that should follow are absent


_NRRD_GARBAGE = (
    b"NRRD0004\n"
    b"type: banana\n"
    b"dimension: three\n"
    b"sizes: a b c\n"
    b"this line is not a field at all\n"
    b"encoding: ???\n\n"
    b"\x00\x01\x02"
)

_NRRD_HUGE = (
    b"NRRD0004\n"
    b"type: short\n"
    b"dimension: 3\n"
    b"space: left-posterior-superior\n"
    b"sizes: 30000 30000 30000\n"
    b"space directions: (1,0,0) (0,1,0) (0,0,1)\n"
    b"kinds: domain domain domain\n"
    b"endian: little\n"
    b"encoding: raw\n"
    b"space origin: (0,0,0)\n\n"
) + b"\x00" * 64

_NRRD_HUGE_GZIP = _NRRD_HUGE.replace(b"encoding: raw", b"encoding: gzip").split(b"\n\n")[0] + b"\n\n" + gzip.compress(
    b"\x00" * 64
)

_NRRD_TRUNCATED_RAW = (
    b"NRRD0004\n"
    b"type: short\n"
    b"dimension: 3\n"
    b"space: left-posterior-superior\n"
    b"sizes: 24 24 12\n"
    b"space directions: (2,0,0) (0,2,0) (0,0,3)\n"
    b"kinds: domain domain domain\n"
    b"endian: little\n"
    b"encoding: raw\n"
    b"space origin: (0,0,0)\n\n"
) + b"\x00" * 100

_NHDR_MISSING_DATA = (
    b"NRRD0004\n"
    b"type: short\n"
    b"dimension: 3\n"
    b"space: left-posterior-superior\n"
    b"sizes: 24 24 12\n"
    b"space directions: (2,0,0) (0,2,0) (0,0,3)\n"
    b"kinds: domain domain domain\n"
    b"endian: little\n"
    b"encoding: raw\n"
    b"data file: b17.raw\n\n"
)


def _valid_nii_bytes(gz: bool) -> bytes:
    img = nib.Nifti1Image(image_array(mask_array()), AFFINE)
    raw = img.to_bytes()
    return gzip.compress(raw) if gz else raw


def _wrong_magic() -> bytes:
    raw = bytearray(_valid_nii_bytes(gz=False))
    raw[344:348] = b"XYZ\x00"
    return bytes(raw)


def _truncated_gz() -> bytes:
    data = _valid_nii_bytes(gz=True)
    return data[: len(data) // 2]


def _truncated_nii() -> bytes:
    data = _valid_nii_bytes(gz=False)
    return data[: 352 + 100]


#: kind -> (file name, bytes or a callable building an array to save as NIfTI). The names say nothing
#: about the defect, so a message cannot pass a keyword check by quoting the file name.
BROKEN: dict[str, tuple[str, object]] = {
    "empty-nii-gz": ("b01.nii.gz", b""),
    "empty-nii": ("b02.nii", b""),
    "truncated-gz": ("b03.nii.gz", _truncated_gz),
    "truncated-nii": ("b04.nii", _truncated_nii),
    "text-as-nii-gz": ("b05.nii.gz", b"this is a text file, not a NIfTI volume\n"),
    "gzip-of-garbage": ("b06.nii.gz", lambda: gzip.compress(b"garbage " * 200)),
    "huge-header-nii": ("b07.nii", _huge_header_bytes),
    "huge-header-nii-gz": ("b08.nii.gz", lambda: gzip.compress(_huge_header_bytes())),
    "wrong-magic": ("b09.nii", _wrong_magic),
    "4d-two-volumes": ("b10.nii.gz", "4d"),
    "2d-image": ("b11.nii.gz", "2d"),
    "nrrd-garbage-header": ("b12.nrrd", _NRRD_GARBAGE),
    "nrrd-text": ("b13.nrrd", b"just some text, no NRRD magic\n"),
    "nrrd-huge": ("b14.nrrd", _NRRD_HUGE),
    "nrrd-huge-gzip": ("b15.nrrd", _NRRD_HUGE_GZIP),
    "nrrd-truncated-raw": ("b16.nrrd", _NRRD_TRUNCATED_RAW),
    "nhdr-missing-data": ("b17.nhdr", _NHDR_MISSING_DATA),
}


def write_broken(kind: str, folder: Path) -> Path:
    name, content = BROKEN[kind]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if content == "4d":
        a = image_array(mask_array())
        return save_nifti(np.stack([a, a], axis=-1), path)
    if content == "2d":
        return save_nifti(image_array(mask_array())[:, :, 0], path, affine=np.eye(4))
    data = content() if callable(content) else content
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------------------------- workspace
@dataclass
class Workspace:
    """A valid tiny case in ``root/data`` plus an empty output folder ``root/out``."""

    root: Path

    def __post_init__(self):
        self.data = self.root / "data"
        self.out = self.root / "out"
        self.bad = self.root / "bad"
        self.out.mkdir(parents=True)
        mask = mask_array()
        self.mask_arr, self.image_arr = mask, image_array(mask)
        self.mask = save_nifti(mask, self.data / "mask.nii.gz")
        self.image = save_nifti(self.image_arr, self.data / "image.nii.gz")
        self.other = save_nifti(image_array(mask, seed=3) + 50, self.data / "other.nii.gz")
        self.images = self.data / "images"
        self.masks = self.data / "masks"
        save_nifti(self.image_arr, self.images / "case1.nii.gz")
        save_nifti(mask, self.masks / "case1.nii.gz")

    # a broken or odd input file, written on demand
    def broken(self, kind: str) -> Path:
        return write_broken(kind, self.bad)

    def volume(self, name: str, array: np.ndarray, affine=AFFINE) -> Path:
        return save_nifti(array, self.bad / name, affine)

    def file(self, name: str, content: bytes = b"x") -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return path


# ------------------------------------------------------------------------------------------ snapshot
def snapshot(root: Path) -> dict[str, str]:
    """relative path -> 'dir' | 'link:<target>' | '<sha256>' for everything under ``root``."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                target = os.readlink(p)
                digest = file_sha256(p) if p.is_file() else "-"
                out[rel] = f"link:{target}:{digest}"
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = file_sha256(p)
    return out



def snapshot_problems(before: dict[str, str], after: dict[str, str], root: Path, allow_new_dirs: bool) -> list[str]:
    problems = []
    changed = sorted(k for k in before if k in after and before[k] != after[k])
    removed = sorted(k for k in before if k not in after)
    new = sorted(k for k in after if k not in before)
    new_files = [k for k in new if after[k] != "dir"]
    new_dirs = [k for k in new if after[k] == "dir"]
    if changed:
        problems.append(f"inputs / pre-existing files CHANGED: {changed}")
    if removed:
        problems.append(f"pre-existing files REMOVED: {removed}")
    if new_files:
        temps = [k for k in new_files if ".tmp" in Path(k).name]
        problems.append(f"files LEFT BEHIND: {new_files}" + (f" (temporary: {temps})" if temps else ""))
    if new_dirs and not allow_new_dirs:
        problems.append(f"new (empty) folders LEFT BEHIND: {new_dirs}")
    return problems


# ------------------------------------------------------------------------------------------ messages
def words_of(message: str, root: Path) -> str:
    """``message`` lower-cased, without the test folder and without the names of the files in it: what
    keywords are matched against. pytest names tmp_path after the test (``test_cli_bad_input_...``) and
    a message must not pass a keyword check by quoting a path or a file name (``x.nrrd``, ``params.json``)."""
    for prefix in sorted({str(root.resolve()), str(root)}, key=len, reverse=True):
        message = message.replace(prefix, "<tmp>")
    names = {p.name for p in root.rglob("*") if "." in p.name and not p.is_dir()}
    for name in sorted(names, key=len, reverse=True):
        message = message.replace(name, "<file>")
    return message.lower()


def missing_keywords(message: str, keywords: tuple[str, ...], root: Path) -> list[str]:
    """Entries of ``keywords`` not found in ``message``; each entry is ``regex|regex|...`` (any one)."""
    text = words_of(message, root)
    return [k for k in keywords if not re.search(k, text, re.IGNORECASE)]


# ------------------------------------------------------------------------------------------- harness
class CaseTimeout(BaseException):
    pass


@dataclass
class CliRun:
    code: int | None
    out: str
    err: str
    escaped: str = ""  # a traceback that escaped main() (the real CLI would print it to stderr)


def _python_default_filters() -> None:
    """The warning filters of a plain ``python`` run (so warnings show as they would in a terminal)."""
    warnings.resetwarnings()
    warnings.simplefilter("default")
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.filterwarnings("ignore", category=category)


def run_cli(argv: list[str], capsys, timeout_s: float = 30.0) -> CliRun:
    """``napari_gem3d.cli.main(argv)`` as the ``gem3d`` process would behave: exit status (SystemExit
    included), stdout, stderr, warnings printed to stderr, an escaping exception as a traceback."""
    from napari_gem3d.cli import main

    def on_alarm(signum, frame):
        raise CaseTimeout(f"the command ran for more than {timeout_s} s")

    capsys.readouterr()
    escaped = ""
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    with warnings.catch_warnings(record=True) as caught:
        _python_default_filters()
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except CaseTimeout:
            raise
        except BaseException:  # noqa: BLE001 - the real CLI would die with this traceback
            code = 1
            escaped = traceback.format_exc()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
    captured = capsys.readouterr()
    err = captured.err
    for w in caught:
        err += warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line)
    err += escaped
    return CliRun(code, captured.out, err, escaped)
