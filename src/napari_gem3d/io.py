"""Reading and writing volumes (NIfTI via nibabel, NRRD via pynrrd), atomically and with provenance.

Rules (ARCHITECTURE.md wall 5):

- geometry is never lost: the affine (voxel -> world RAS+ mm) always travels with the data; a Volume read
  from NIfTI and written back keeps its qform/sform (codes and matrices) exactly;
- writes are atomic: data goes to a temporary file in the target folder, is fsynced, then
  ``os.replace``-d over the target, so a failed write leaves any old file intact;
- the file a Volume was read from is never overwritten unless ``overwrite=True``.

Header facts land in ``Volume.header`` as plain Python values. NIfTI: ``format``, ``source``, ``zooms``,
``dtype`` (on disk), ``qform_code``, ``sform_code``, ``xyzt_units``, ``descrip``, ``scl_slope`` /
``scl_inter`` (when the data are scaled), ``axcodes`` and ``provenance``; the raw nibabel header is kept
under the private key ``_nifti_header`` so that writing back reproduces it. NRRD: ``format``, ``source``,
``space`` (as stored), ``zooms``, ``dtype``, ``encoding``, ``axcodes`` and ``provenance``.

Provenance (a JSON-safe dict) is stored in NIfTI as a header extension with code 6 ("comment") whose text
starts with :data:`PROVENANCE_MARKER`, and in NRRD as the key/value field ``gem3d_provenance``.

A Volume built from scratch is written with both qform and sform set to the affine, both with code 1
("scanner"), and xyz units of mm.
"""

from __future__ import annotations

import gzip
import json
import os
import secrets
import struct
import warnings
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import nibabel as nib
import numpy as np

from .volume import Volume

NIFTI_SUFFIXES = (".nii", ".nii.gz")
NRRD_SUFFIXES = (".nrrd", ".nhdr")
READ_SUFFIXES = NIFTI_SUFFIXES + NRRD_SUFFIXES
WRITE_SUFFIXES = (".nii", ".nii.gz", ".nrrd")

PROVENANCE_MARKER = b"napari-gem3d provenance "
NRRD_PROVENANCE_KEY = "gem3d_provenance"
NIFTI_COMMENT_CODE = 6
NEW_FILE_XFORM_CODE = 1  # "scanner": qform and sform code for volumes built from scratch

# NRRD space -> sign flips that take its coordinates to RAS+.
_NRRD_SPACE_TO_RAS = {
    "right-anterior-superior": (1.0, 1.0, 1.0),
    "ras": (1.0, 1.0, 1.0),
    "left-anterior-superior": (-1.0, 1.0, 1.0),
    "las": (-1.0, 1.0, 1.0),
    "left-posterior-superior": (-1.0, -1.0, 1.0),
    "lps": (-1.0, -1.0, 1.0),
}
_NRRD_SPATIAL_KINDS = {"domain", "space"}


# ------------------------------------------------------------------------------------------- helpers
def volume_suffix(path: str | os.PathLike[str]) -> str:
    """The volume suffix of a file name (``.nii.gz``, ``.nii``, ``.nrrd``, ``.nhdr``) or ``""``."""
    name = Path(path).name.lower()
    return next((s for s in (".nii.gz", ".nii", ".nrrd", ".nhdr") if name.endswith(s)), "")


def _suffix(path: Path) -> str:
    return volume_suffix(path) or "".join(path.suffixes[-2:]).lower() or "(none)"


def _unsupported(path: Path, supported: tuple[str, ...], action: str) -> ValueError:
    return ValueError(
        f"Cannot {action} {path.name!r}: unsupported file type {_suffix(path)!r}. "
        f"Supported: {', '.join(supported)}."
    )


def _native(array: np.ndarray) -> np.ndarray:
    """The array in native byte order (big-endian files come back native)."""
    return array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))


def _check_3d(shape: tuple[int, ...], path: Path) -> tuple[int, int, int]:
    """The 3-D shape to use for ``shape`` (trailing singleton axes dropped), or a clear error."""
    extra = shape[3:]
    if len(shape) < 3:
        raise ValueError(
            f"{path.name} holds a {len(shape)}-D image of shape {shape}; a 3-D volume is needed."
        )
    if any(n != 1 for n in extra):
        raise ValueError(
            f"{path.name} holds a {len(shape)}-D image of shape {shape}; GEM-3D works on one 3-D volume. "
            f"Extract one volume first, e.g. in Python `nibabel.load(path).slicer[..., 0]` then "
            "`nibabel.save(img, 'volume0.nii.gz')`, or `fslroi in.nii.gz volume0.nii.gz 0 1`."
        )
    return tuple(int(n) for n in shape[:3])  # type: ignore[return-value]


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"provenance must be JSON-serialisable; got a {type(obj).__name__}: {obj!r}")


def _provenance_text(provenance: Mapping[str, Any]) -> str:
    if not isinstance(provenance, Mapping):
        raise TypeError(f"provenance must be a dict, got {type(provenance).__name__}.")
    return json.dumps(dict(provenance), default=_json_default, sort_keys=True, allow_nan=True)


def _parse_provenance(text: bytes | str, path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        warnings.warn(f"{path.name}: ignoring unreadable provenance JSON.", stacklevel=3)
        return None
    return value if isinstance(value, dict) else None


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether ``a`` and ``b`` name one file: the same inode, or the same path after resolving links."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return Path(a).resolve() == Path(b).resolve()


def _fsync_path(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some platforms/filesystems refuse fsync on read-only or directory descriptors
        pass
    finally:
        os.close(fd)


#: Deflate's largest compression ratio (a stream of one repeated byte): a gzip file of ``n`` bytes cannot
#: hold more than about ``1032 * n`` bytes of data, whatever its header claims.
DEFLATE_MAX_RATIO = 1032

#: What a broken or foreign file makes the readers raise (nibabel, pynrrd, gzip, zlib, numpy).
_READ_ERRORS = (OSError, EOFError, ValueError, struct.error, zlib.error, gzip.BadGzipFile, IndexError, KeyError)


def available_memory() -> int | None:
    """Bytes of memory this machine can still hand out (Linux ``MemAvailable``), or None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _gib(n: float) -> str:
    """A byte count for people: 512 bytes, 3.2 MiB, 1.5 GiB, 49.1 TiB."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} bytes"


def check_data_size(path: Path, shape: tuple[int, ...], dtype: np.dtype, offset: int, compressed: bool) -> None:
    """Refuse, before reading any data, a header whose voxel count cannot be in the file or in memory.

    Uncompressed data must fit between ``offset`` and the end of the file; gzip data cannot exceed
    :data:`DEFLATE_MAX_RATIO` times the file size. Reading needs the data plus a float32 working copy.
    """
    voxels = int(np.prod([int(n) for n in shape], dtype=object))
    nbytes = voxels * int(dtype.itemsize)
    size = path.stat().st_size
    shown = " x ".join(str(int(n)) for n in shape)
    room = DEFLATE_MAX_RATIO * size if compressed else size - int(offset)
    if nbytes > room:
        how = f"a {_gib(size)} gzip file holds at most {_gib(room)}" if compressed else (
            f"the file holds only {_gib(max(room, 0))} after its header")
        raise ValueError(
            f"{path.name}: the header declares {shown} voxels of {dtype.name} ({_gib(nbytes)}) but {how}: "
            "the file is truncated or its header is wrong; re-export the volume from its source."
        )
    needed = nbytes + voxels * 4
    free = available_memory()
    if free is not None and needed > free:
        raise ValueError(
            f"{path.name}: {shown} voxels of {dtype.name} need about {_gib(needed)} of memory to read and "
            f"only {_gib(free)} is available; crop or downsample the volume, or use a machine with more memory."
        )


def _broken(path: Path, what: str, exc: BaseException) -> ValueError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if path.exists() and path.stat().st_size == 0:
        reason = "the file is empty"
    return ValueError(
        f"{path.name} is not a readable {what} file ({reason}); it may be truncated, corrupt or of another "
        "type: re-export it from its source (e.g. 3D Slicer, ITK-SNAP or dcm2niix)."
    )


# ------------------------------------------------------------------------------------- atomic writes
def _temp_sibling(path: Path) -> Path:
    """Hidden temporary path in the same folder, keeping the (possibly double) suffix."""
    suffix = _suffix(path) if _suffix(path) != "(none)" else ""
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    return path.with_name(f".{stem}.{secrets.token_hex(6)}.tmp{suffix}")


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync it and ``os.replace`` it onto ``path``.

    On any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"Folder {path.parent} does not exist; create it before writing {path.name}.")
    tmp = _temp_sibling(path)
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"Nothing was written to the temporary file for {path}.")
        _fsync_path(tmp)
        os.replace(tmp, path)
        _fsync_path(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` for writing; replace ``path`` with it only on success.

    ``mode`` is ``"wb"`` (binary) or ``"w"`` (UTF-8 text). The file is flushed and fsynced before
    ``os.replace``; on error the temporary file is removed and ``path`` is untouched.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}.")
    with atomic_path(path) as tmp:
        xmode = "xb" if mode == "wb" else "x"
        encoding = None if mode == "wb" else "utf-8"
        with open(tmp, xmode, encoding=encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


# ----------------------------------------------------------------------------------------------- read
def read_volume(path: str | os.PathLike[str]) -> Volume:
    """Read a 3-D volume from ``.nii``, ``.nii.gz`` (nibabel) or ``.nrrd`` / ``.nhdr`` (pynrrd).

    4-D files with a singleton last axis are squeezed; true 4-D files raise a ValueError.
    Data come back in native byte order; scaled NIfTI data (scl_slope) come back as floats.
    """
    path = Path(path)
    suffix = _suffix(path)
    if suffix not in READ_SUFFIXES:
        raise _unsupported(path, READ_SUFFIXES, "read")
    if not path.exists():
        raise FileNotFoundError(f"No such file: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a volume file; give one .nii.gz, .nii or .nrrd file")
    if suffix in NIFTI_SUFFIXES:
        return _read_nifti(path)
    return _read_nrrd(path)


def _read_nifti(path: Path) -> Volume:
    try:
        img = nib.load(path, mmap=False)  # the header only; data are read below
    except (nib.filebasedimages.ImageFileError, *_READ_ERRORS) as exc:
        raise _broken(path, "NIfTI", exc) from None
    if not isinstance(img, nib.Nifti1Image):  # Nifti2Image subclasses Nifti1Image
        raise ValueError(f"{path.name} is not a NIfTI image (nibabel read it as {type(img).__name__}).")
    hdr = img.header
    shape = _check_3d(tuple(img.shape), path)  # before loading any data
    check_data_size(path, tuple(img.shape), np.dtype(hdr.get_data_dtype()),
                    int(getattr(img.dataobj, "offset", hdr.get_data_offset())),  # 352 when the header says 0
                    compressed=path.name.lower().endswith(".gz"))
    try:
        array = _native(np.asarray(img.dataobj)).reshape(shape)
    except (MemoryError, *_READ_ERRORS) as exc:
        raise _broken(path, "NIfTI", exc) from None
    # nibabel moves scl_slope/scl_inter from the header into the array proxy on load
    slope = float(getattr(img.dataobj, "slope", 1.0))
    inter = float(getattr(img.dataobj, "inter", 0.0))
    disk_dtype = np.dtype(hdr.get_data_dtype())
    header: dict[str, Any] = {
        "format": "nifti2" if isinstance(hdr, nib.Nifti2Header) else "nifti1",
        "source": str(path.resolve()),
        "zooms": tuple(float(z) for z in hdr.get_zooms()[:3]),
        "dtype": disk_dtype.newbyteorder("=").name,
        "qform_code": int(hdr["qform_code"]),
        "sform_code": int(hdr["sform_code"]),
        "xyzt_units": tuple(hdr.get_xyzt_units()),
        "descrip": bytes(hdr["descrip"].item()).split(b"\x00", 1)[0].decode("latin-1"),
        "axcodes": tuple(nib.aff2axcodes(img.affine)),
        "_nifti_header": hdr.copy(),
    }
    if (slope, inter) != (1.0, 0.0):
        header["scl_slope"], header["scl_inter"] = slope, inter
    for ext in hdr.extensions:
        content = ext.get_content()
        if (ext.get_code() == NIFTI_COMMENT_CODE and isinstance(content, bytes)
                and content.startswith(PROVENANCE_MARKER)):
            prov = _parse_provenance(content[len(PROVENANCE_MARKER) :].rstrip(b"\x00"), path)
            if prov is not None:
                header["provenance"] = prov
    return Volume(array, img.affine, header)


def _read_nrrd(path: Path) -> Volume:
    import nrrd

    try:
        with open(path, "rb") as fh:
            hdr = nrrd.read_header(fh)
            offset = fh.tell()
        sizes = tuple(int(n) for n in hdr["sizes"])
        # the voxel type decides the byte count; an unknown type counts as one byte (a lower bound)
        determine = getattr(nrrd.reader, "_determine_datatype", None)
        dtype = np.dtype(determine(hdr)) if determine is not None else np.dtype(np.uint8)
    except (nrrd.NRRDError, *_READ_ERRORS) as exc:
        raise _broken(path, "NRRD", exc) from None
    encoding = str(hdr.get("encoding", "raw")).lower()
    data_file = path
    if "data file" in hdr or "datafile" in hdr:  # detached data (.nhdr)
        data_file, offset = path.parent / str(hdr.get("data file", hdr.get("datafile"))), 0
        if not data_file.is_file():
            raise ValueError(f"{path.name}: its data file {data_file.name} is missing; keep it next to the header.")
    if encoding in ("raw", "gzip", "gz"):
        check_data_size(data_file, sizes, dtype, offset, compressed=encoding != "raw")
    try:
        data, hdr = nrrd.read(str(path))  # index order "F": axes as listed in the header (x fastest)
    except (MemoryError, nrrd.NRRDError, *_READ_ERRORS) as exc:
        raise _broken(path, "NRRD", exc) from None
    data = _native(np.asarray(data))
    ndim = int(hdr.get("dimension", data.ndim))
    kinds = [str(k).lower() for k in hdr.get("kinds", ["domain"] * ndim)]
    directions = hdr.get("space directions")
    if directions is not None:
        directions = np.asarray(directions, dtype=float)
        spatial = [i for i in range(ndim) if np.all(np.isfinite(directions[i]))]
    else:
        spatial = [i for i, k in enumerate(kinds) if k in _NRRD_SPATIAL_KINDS] or list(range(ndim))
    other = [i for i in range(ndim) if i not in spatial]
    if len(spatial) != 3 or any(data.shape[i] != 1 for i in other):
        raise ValueError(
            f"{path.name} holds an image of shape {data.shape} with kinds {kinds}; "
            "GEM-3D needs one 3-D volume "
            "(3 spatial axes, any other axis of size 1). Extract one component or time point first, e.g. "
            "with 3D Slicer or `nrrd.read` + indexing, and save it as a 3-D file."
        )
    data = data.reshape([data.shape[i] for i in spatial]) if other else data
    affine = np.eye(4)
    space = hdr.get("space")
    if directions is not None:
        if space is None or str(space).lower() not in _NRRD_SPACE_TO_RAS:
            raise ValueError(
                f"{path.name}: NRRD space {space!r} is not supported; supported spaces are "
                "right-anterior-superior, left-anterior-superior and left-posterior-superior. "
                "Re-save the file in one of these spaces (e.g. with 3D Slicer)."
            )
        to_ras = np.diag([*_NRRD_SPACE_TO_RAS[str(space).lower()], 1.0])
        affine[:3, :3] = directions[spatial].T
        origin = hdr.get("space origin")
        affine[:3, 3] = np.zeros(3) if origin is None else np.asarray(origin, dtype=float)
        affine = to_ras @ affine
    else:
        spacings = np.asarray(hdr.get("spacings", [1.0] * ndim), dtype=float)[spatial]
        spacings = np.where(np.isfinite(spacings), spacings, 1.0)
        affine[:3, :3] = np.diag(spacings)
        warnings.warn(
            f"{path.name} has no 'space directions'; assuming RAS+ axes with spacing {spacings.tolist()} mm.",
            stacklevel=3,
        )
    header: dict[str, Any] = {
        "format": "nrrd",
        "source": str(path.resolve()),
        "space": None if space is None else str(space),
        "zooms": tuple(float(z) for z in np.linalg.norm(affine[:3, :3], axis=0)),
        "dtype": data.dtype.name,
        "encoding": str(hdr.get("encoding", "raw")),
        "axcodes": tuple(nib.aff2axcodes(affine)),
    }
    if NRRD_PROVENANCE_KEY in hdr:
        prov = _parse_provenance(str(hdr[NRRD_PROVENANCE_KEY]), path)
        if prov is not None:
            header["provenance"] = prov
    return Volume(data, affine, header)


# ---------------------------------------------------------------------------------------------- write
_INT_CANDIDATES = (np.uint8, np.int16, np.int32)


def _prepare_array(array: np.ndarray, dtype: Any) -> np.ndarray:
    """Array in the dtype to store: ``dtype`` if given (checked to be lossless for integers), else a
    widely supported dtype close to the array's own (bool -> uint8, 64-bit ints -> the smallest of
    uint8/int16/int32 that holds the values, float16 -> float32)."""
    array = _native(np.asarray(array))
    if dtype is not None:
        target = np.dtype(dtype)
        if target == np.bool_:
            target = np.dtype(np.uint8)
        if target.kind in "iu" and array.dtype != target and array.size:
            lo, hi = np.min(array), np.max(array)
            info = np.iinfo(target)
            integral = array.dtype.kind in "iub" or bool(np.all(np.mod(array, 1) == 0))
            if not integral or lo < info.min or hi > info.max:
                raise ValueError(
                    f"Cannot store this {array.dtype} array as {target} without changing its values "
                    f"(range {lo}..{hi}, integral={integral}); choose a wider or float dtype."
                )
        return array.astype(target, copy=False)
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype.kind in "iu" and array.dtype.itemsize == 8:
        lo, hi = (np.min(array), np.max(array)) if array.size else (0, 0)
        for candidate in _INT_CANDIDATES:
            info = np.iinfo(candidate)
            if info.min <= lo and hi <= info.max:
                return array.astype(candidate)
        return array
    if array.dtype == np.float16:
        return array.astype(np.float32)
    return array


def write_volume(
    volume: Volume,
    path: str | os.PathLike[str],
    *,
    dtype: Any = None,
    provenance: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    description: str | None = None,
) -> Path:
    """Write ``volume`` to ``.nii``, ``.nii.gz`` or ``.nrrd`` atomically; return the path written.

    ``provenance`` defaults to ``volume.header['provenance']``. Refuses to overwrite the file the volume
    was read from unless ``overwrite=True``. Data are written unscaled, in ``dtype`` when given.
    ``description`` replaces the NIfTI ``descrip`` field (80 bytes) or sets the NRRD ``content`` field.
    """
    path = Path(path)
    suffix = _suffix(path)
    if suffix not in WRITE_SUFFIXES:
        extra = ""
        if suffix == ".nhdr":
            extra = " (.nhdr is read-only here: write an attached-header .nrrd instead)"
        raise ValueError(str(_unsupported(path, WRITE_SUFFIXES, "write")) + extra)
    source = volume.header.get("source")
    if source and not overwrite and same_file(source, path):
        raise FileExistsError(
            f"Refusing to overwrite {path}: it is the file this volume was read from. "
            "Write to a new path, or pass overwrite=True to replace the original on purpose."
        )
    if provenance is None:
        provenance = volume.header.get("provenance")
    prov_text = None if provenance is None else _provenance_text(provenance)
    array = _prepare_array(volume.array, dtype)
    if suffix in NIFTI_SUFFIXES:
        _write_nifti(volume, array, path, prov_text, description)
    else:
        _write_nrrd(volume, array, path, prov_text, description)
    return path


def _nifti_header_for(volume: Volume, array: np.ndarray) -> nib.Nifti1Header:
    source = volume.header.get("_nifti_header")
    affine = volume.affine
    if isinstance(source, nib.Nifti1Header):
        hdr = source.copy()
        if not np.array_equal(hdr.get_best_affine(), affine):  # geometry changed: set both forms
            hdr.set_qform(affine, code=int(hdr["qform_code"]) or NEW_FILE_XFORM_CODE)
            hdr.set_sform(affine, code=int(hdr["sform_code"]) or NEW_FILE_XFORM_CODE)
    else:
        hdr = nib.Nifti1Header()
        hdr.set_qform(affine, code=NEW_FILE_XFORM_CODE)
        hdr.set_sform(affine, code=NEW_FILE_XFORM_CODE)
        hdr.set_xyzt_units(xyz="mm")
    hdr.set_data_shape(array.shape)
    hdr.set_data_dtype(array.dtype)
    hdr.set_slope_inter(np.nan, np.nan)  # data are stored unscaled
    hdr["cal_min"], hdr["cal_max"] = 0.0, 0.0  # display range of the source may not fit the new data
    return hdr


def _write_nifti(volume: Volume, array: np.ndarray, path: Path, prov_text: str | None,
                 description: str | None = None) -> None:
    hdr = _nifti_header_for(volume, array)
    if description is not None:
        hdr["descrip"] = description.encode("ascii", "replace")[:80]
    ours = [
        e
        for e in hdr.extensions
        if e.get_code() == NIFTI_COMMENT_CODE
        and isinstance(e.get_content(), bytes)
        and e.get_content().startswith(PROVENANCE_MARKER)
    ]
    for ext in ours:
        hdr.extensions.remove(ext)
    if prov_text is not None:
        content = PROVENANCE_MARKER + prov_text.encode("utf-8")
        hdr.extensions.append(nib.nifti1.Nifti1Extension(NIFTI_COMMENT_CODE, content))
    image_class = nib.Nifti2Image if isinstance(hdr, nib.Nifti2Header) else nib.Nifti1Image
    img = image_class(array, volume.affine, header=hdr)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)


def _write_nrrd(volume: Volume, array: np.ndarray, path: Path, prov_text: str | None,
                description: str | None = None) -> None:
    import nrrd

    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ volume.affine  # RAS+ -> LPS (the usual NRRD space)
    header: dict[str, Any] = {
        "space": "left-posterior-superior",
        "space directions": lps[:3, :3].T,
        "space origin": lps[:3, 3],
        "kinds": ["domain"] * 3,
        "encoding": "gzip",
    }
    if prov_text is not None:
        header[NRRD_PROVENANCE_KEY] = prov_text
    if description is not None:
        header["content"] = description.replace("\n", " ")
    with atomic_path(path) as tmp, open(tmp, "xb") as fh:
        nrrd.write(fh, array, header, compression_level=1, index_order="F")


__all__ = [
    "NIFTI_SUFFIXES",
    "NRRD_SUFFIXES",
    "PROVENANCE_MARKER",
    "READ_SUFFIXES",
    "WRITE_SUFFIXES",
    "atomic_path",
    "atomic_write",
    "available_memory",
    "check_data_size",
    "read_volume",
    "same_file",
    "volume_suffix",
    "write_volume",
]
