"""read_volume / write_volume / atomic_write: formats, geometry round trips, provenance, safety."""

from __future__ import annotations

import gzip
import os
import shutil
import struct
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest

from data_files import require_data
from napari_gem3d import io as gio
from napari_gem3d.io import PROVENANCE_MARKER, atomic_write, read_volume, write_volume
from napari_gem3d.volume import Volume

NIB_DATA = Path(os.path.dirname(nib.__file__)) / "tests" / "data"
ITK_DATA = Path("/usr/share/doc/insighttoolkit5-examples/examples/Data")


def leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


# ------------------------------------------------------------------------------------------- NIfTI read
def test_read_big_endian_las_anatomical():
    path = NIB_DATA / "anatomical.nii"
    ref = nib.load(path)
    assert ref.header.endianness == ">"
    vol = read_volume(path)
    assert vol.array.dtype == np.dtype("int16") and vol.array.dtype.isnative
    assert np.array_equal(vol.array, np.asarray(ref.dataobj))
    assert np.array_equal(vol.affine, ref.affine)
    assert vol.axcodes == ("L", "A", "S") == vol.header["axcodes"]
    h = vol.header
    assert h["format"] == "nifti1" and h["source"] == str(path.resolve())
    assert h["zooms"] == (2.0, 2.0, 2.0) and h["dtype"] == "int16"
    assert (h["qform_code"], h["sform_code"]) == (2, 2)
    assert h["xyzt_units"] == ("mm", "sec") and h["descrip"] == "spm - 3D normalized"
    assert "scl_slope" not in h and "provenance" not in h


def test_true_4d_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\(128, 96, 24, 2\)") as info:
        read_volume(NIB_DATA / "example4d.nii.gz")
    assert "slicer[..., 0]" in str(info.value)


def test_singleton_4d_is_squeezed(tmp_path):
    data = np.arange(60, dtype=np.int16).reshape(3, 4, 5, 1)
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 3.0, 4.0, 1.0])), tmp_path / "s.nii.gz")
    vol = read_volume(tmp_path / "s.nii.gz")
    assert vol.shape == (3, 4, 5)
    assert np.array_equal(vol.array, data[..., 0])
    assert vol.spacing == (2.0, 3.0, 4.0)


def test_scaled_nifti_reads_as_float(tmp_path):
    raw = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    path = tmp_path / "scaled.nii"
    nib.save(nib.Nifti1Image(raw, np.eye(4), dtype=np.int16), path)
    with open(path, "r+b") as fh:  # scl_slope / scl_inter live at bytes 112..119 of a NIfTI-1 header
        fh.seek(112)
        fh.write(struct.pack("<ff", 0.5, 10.0))
    vol = read_volume(path)
    assert vol.array.dtype.kind == "f"
    assert np.allclose(vol.array, raw * 0.5 + 10.0)
    assert vol.header["scl_slope"] == 0.5 and vol.header["scl_inter"] == 10.0


def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_volume(tmp_path / "nope.nii.gz")
    (tmp_path / "x.mha").write_bytes(b"")
    with pytest.raises(ValueError, match=r"\.nii\.gz.*\.nrrd"):
        read_volume(tmp_path / "x.mha")
    vol = Volume(np.zeros((2, 2, 2)), np.eye(4))
    with pytest.raises(ValueError, match=r"Supported: \.nii, \.nii\.gz, \.nrrd"):
        write_volume(vol, tmp_path / "x.mha")
    with pytest.raises(ValueError, match="nhdr"):
        write_volume(vol, tmp_path / "x.nhdr")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_volume(vol, tmp_path / "no" / "such" / "dir.nii.gz")


# ------------------------------------------------------------------------------------ NIfTI round trips
def _forms(path: Path):
    h = nib.load(path).header
    q, qcode = h.get_qform(coded=True)
    s, scode = h.get_sform(coded=True)
    return q, int(qcode), s, int(scode)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_round_trip_keeps_geometry_bit_exact(tmp_path, suffix):
    src = NIB_DATA / "anatomical.nii"
    vol = read_volume(src)
    out = write_volume(vol, tmp_path / f"copy{suffix}")
    back = read_volume(out)
    assert np.array_equal(back.array, vol.array) and back.array.dtype == vol.array.dtype
    assert np.array_equal(back.affine, vol.affine)
    assert back.axcodes == vol.axcodes
    q0, qc0, s0, sc0 = _forms(src)
    q1, qc1, s1, sc1 = _forms(out)
    assert (qc1, sc1) == (qc0, sc0)
    assert np.array_equal(q1, q0) and np.array_equal(s1, s0)


@pytest.mark.data
def test_itk_kmeans_round_trip_keeps_distinct_qform_and_sform_codes(tmp_path):
    src = require_data(ITK_DATA / "KmeansTest_T1UCharRaw.nii.gz")
    vol = read_volume(src)
    assert vol.axcodes == ("L", "S", "A") and vol.spacing == (2.0, 2.0, 3.0)
    assert (vol.header["qform_code"], vol.header["sform_code"]) == (2, 1)
    out = write_volume(vol.with_array(vol.array.astype(np.float32) / 255), tmp_path / "gen.nii.gz")
    q0, qc0, s0, sc0 = _forms(src)
    q1, qc1, s1, sc1 = _forms(out)
    assert (qc1, sc1) == (2, 1)
    assert np.array_equal(q1, q0) and np.array_equal(s1, s0)
    back = read_volume(out)
    assert np.array_equal(back.affine, vol.affine) and back.array.dtype == np.float32


def test_new_volume_gets_scanner_qform_and_sform(tmp_path):
    affine = np.array([[0, 0, -1.5, 90], [2.0, 0, 0, -120], [0, -0.75, 0, 60.25], [0, 0, 0, 1]])
    vol = Volume(np.arange(60, dtype=np.float32).reshape(3, 4, 5), affine)
    out = write_volume(vol, tmp_path / "new.nii.gz")
    q, qcode, s, scode = _forms(out)
    assert (qcode, scode) == (1, 1)
    assert np.allclose(q, affine, atol=1e-5) and np.array_equal(s, affine)
    back = read_volume(out)
    assert np.array_equal(back.affine, affine) and np.array_equal(back.array, vol.array)
    assert back.header["xyzt_units"][0] == "mm"
    assert back.axcodes == vol.axcodes


def test_changed_geometry_is_written_not_the_stale_header_affine(tmp_path):
    vol = read_volume(NIB_DATA / "anatomical.nii")
    shifted = vol.affine.copy()
    shifted[:3, 3] += [1.0, -2.0, 0.5]
    moved = Volume(vol.array, shifted, vol.header)
    back = read_volume(write_volume(moved, tmp_path / "moved.nii.gz"))
    assert np.array_equal(back.affine, shifted)
    assert (back.header["qform_code"], back.header["sform_code"]) == (2, 2)


@pytest.mark.parametrize(
    "array, disk_dtype",
    [
        (np.array([True, False] * 12).reshape(2, 3, 4), np.uint8),
        (np.arange(24, dtype=np.int64).reshape(2, 3, 4), np.uint8),
        (np.arange(24, dtype=np.int64).reshape(2, 3, 4) - 300, np.int16),
        (np.arange(24, dtype=np.int64).reshape(2, 3, 4) * 100_000, np.int32),
        (np.linspace(0, 1, 24, dtype=np.float16).reshape(2, 3, 4), np.float32),
        (np.linspace(-1, 1, 24).reshape(2, 3, 4), np.float64),
    ],
)
def test_default_dtypes_are_portable_and_lossless(tmp_path, array, disk_dtype):
    back = read_volume(write_volume(Volume(array, np.eye(4)), tmp_path / "d.nii.gz"))
    assert back.array.dtype == disk_dtype
    assert np.array_equal(back.array, array.astype(disk_dtype))
    assert np.array_equal(back.array.astype(np.float64), array.astype(np.float64))


def test_explicit_dtype_is_checked(tmp_path):
    vol = Volume(np.array([0.0, 1.0, 2.0, 3.0]).reshape(1, 2, 2), np.eye(4))
    back = read_volume(write_volume(vol, tmp_path / "u8.nii.gz", dtype=np.uint8))
    assert back.array.dtype == np.uint8 and np.array_equal(back.array, vol.array)
    with pytest.raises(ValueError, match="without changing its values"):
        write_volume(vol.with_array(vol.array + 0.5), tmp_path / "bad.nii.gz", dtype=np.uint8)
    with pytest.raises(ValueError, match="without changing its values"):
        write_volume(vol.with_array(vol.array - 1), tmp_path / "bad.nii.gz", dtype=np.uint8)
    assert not (tmp_path / "bad.nii.gz").exists()


# ------------------------------------------------------------------------------------------- provenance
PROV = {"tool": "napari-gem3d", "seed": np.int64(7), "steps": [1, 2.5], "nested": {"mask_sha256": "ab" * 32}}
PROV_JSON = {"tool": "napari-gem3d", "seed": 7, "steps": [1, 2.5], "nested": {"mask_sha256": "ab" * 32}}


@pytest.mark.parametrize("name", ["p.nii.gz", "p.nii", "p.nrrd"])
def test_provenance_round_trip(tmp_path, name):
    vol = Volume(np.zeros((2, 3, 4), np.uint8), np.eye(4))
    back = read_volume(write_volume(vol, tmp_path / name, provenance=PROV))
    assert back.header["provenance"] == PROV_JSON
    # a volume carrying provenance writes it by default
    again = read_volume(write_volume(back, tmp_path / f"again_{name}"))
    assert again.header["provenance"] == PROV_JSON


def test_provenance_is_replaced_not_duplicated_and_other_extensions_kept(tmp_path):
    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4))
    img.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"someone else's comment"))
    nib.save(img, tmp_path / "ext.nii.gz")
    vol = read_volume(tmp_path / "ext.nii.gz")
    first = read_volume(write_volume(vol, tmp_path / "one.nii.gz", provenance={"step": 1}))
    second = write_volume(first, tmp_path / "two.nii.gz", provenance={"step": 2})
    contents = [e.get_content() for e in nib.load(second).header.extensions]
    ours = [c for c in contents if c.startswith(PROVENANCE_MARKER)]
    assert len(ours) == 1 and read_volume(second).header["provenance"] == {"step": 2}
    assert b"someone else's comment" in contents


def test_unserialisable_provenance_fails_before_writing(tmp_path):
    vol = Volume(np.zeros((2, 2, 2)), np.eye(4))
    with pytest.raises(TypeError, match="JSON"):
        write_volume(vol, tmp_path / "x.nii.gz", provenance={"bad": object()})
    assert leftovers(tmp_path, set()) == []


# ------------------------------------------------------------------------------------------------ NRRD
def _write_raw_nrrd(path: Path, data: np.ndarray, lines: list[str], endian: str = "little") -> None:
    dtype = data.dtype.newbyteorder("<" if endian == "little" else ">")
    header = "\n".join(["NRRD0004", f"type: {data.dtype.name}", f"dimension: {data.ndim}",
                        "sizes: " + " ".join(map(str, data.shape)), f"endian: {endian}", "encoding: raw",
                        *lines]) + "\n\n"  # fmt: skip
    path.write_bytes(header.encode() + data.astype(dtype).tobytes(order="F"))


def test_nrrd_lps_is_converted_to_ras(tmp_path):
    data = np.arange(4 * 5 * 3, dtype=np.int16).reshape(4, 5, 3)
    _write_raw_nrrd(tmp_path / "lps.nrrd", data, [
        "space: left-posterior-superior",
        "space directions: (0.78125,0,0) (0,0.78125,0) (0,0,6.5)",
        "kinds: domain domain domain",
        "space origin: (-99.609375,99.609375,-78)",
    ])  # fmt: skip
    vol = read_volume(tmp_path / "lps.nrrd")
    expected = np.array(
        [[-0.78125, 0, 0, 99.609375], [0, -0.78125, 0, -99.609375], [0, 0, 6.5, -78.0], [0, 0, 0, 1]]
    )
    assert np.array_equal(vol.affine, expected)
    assert vol.axcodes == ("L", "P", "S")
    assert np.array_equal(vol.array, data)
    assert vol.header["format"] == "nrrd" and vol.header["space"] == "left-posterior-superior"
    assert vol.header["zooms"] == (0.78125, 0.78125, 6.5)


@pytest.mark.parametrize(
    "space, flips",
    [("right-anterior-superior", (1, 1, 1)), ("RAS", (1, 1, 1)), ("left-anterior-superior", (-1, 1, 1))],
)
def test_nrrd_other_anatomical_spaces(tmp_path, space, flips):
    data = np.zeros((2, 3, 4), np.uint8)
    _write_raw_nrrd(tmp_path / "s.nrrd", data, [
        f"space: {space}", "space directions: (0,2,0) (1,0,0) (0,0,3)", "space origin: (5,6,7)",
    ])  # fmt: skip
    vol = read_volume(tmp_path / "s.nrrd")
    f = np.diag([*flips, 1])
    expected = f @ np.array([[0, 1, 0, 5], [2, 0, 0, 6], [0, 0, 3, 7], [0, 0, 0, 1.0]])
    assert np.array_equal(vol.affine, expected)


def test_nrrd_big_endian_and_unsupported_space(tmp_path):
    data = (np.arange(24, dtype=np.int16).reshape(2, 3, 4) - 12) * 1000
    lines = ["space: left-posterior-superior", "space directions: (1,0,0) (0,1,0) (0,0,1)"]
    _write_raw_nrrd(tmp_path / "be.nrrd", data, lines, endian="big")
    vol = read_volume(tmp_path / "be.nrrd")
    assert vol.array.dtype.isnative and np.array_equal(vol.array, data)
    _write_raw_nrrd(tmp_path / "sc.nrrd", data, ["space: scanner-xyz", *lines[1:]])
    with pytest.raises(ValueError, match="scanner-xyz"):
        read_volume(tmp_path / "sc.nrrd")


def test_nrrd_component_axis(tmp_path):
    nan = np.nan
    header = {
        "space": "left-posterior-superior",
        "kinds": ["vector", "domain", "domain", "domain"],
        "space directions": np.array([[nan] * 3, [1, 0, 0], [0, 1, 0], [0, 0, 1.0]]),
    }
    nrrd.write(str(tmp_path / "one.nrrd"), np.ones((1, 2, 3, 4), np.float32), header)
    assert read_volume(tmp_path / "one.nrrd").shape == (2, 3, 4)
    nrrd.write(str(tmp_path / "rgb.nrrd"), np.ones((3, 2, 3, 4), np.float32), header)
    with pytest.raises(ValueError, match=r"\(3, 2, 3, 4\)"):
        read_volume(tmp_path / "rgb.nrrd")


def test_nrrd_detached_header_reads(tmp_path):
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    header = {"space": "left-posterior-superior", "space directions": np.diag([1.0, 2.0, 3.0])}
    nrrd.write(str(tmp_path / "d.nhdr"), data, header, detached_header=True)
    vol = read_volume(tmp_path / "d.nhdr")
    assert np.array_equal(vol.array, data) and vol.spacing == (1.0, 2.0, 3.0)


def test_nrrd_write_is_lps_and_round_trips(tmp_path):
    vol = read_volume(NIB_DATA / "anatomical.nii")  # LAS NIfTI -> NRRD -> back
    out = write_volume(vol, tmp_path / "a.nrrd")
    _, raw_header = nrrd.read(str(out))
    assert raw_header["space"] == "left-posterior-superior"
    assert np.array_equal(raw_header["space directions"].T, (np.diag([-1, -1, 1, 1.0]) @ vol.affine)[:3, :3])
    back = read_volume(out)
    assert np.array_equal(back.affine, vol.affine) and np.array_equal(back.array, vol.array)
    assert back.array.dtype == np.int16


# -------------------------------------------------------------------------------- atomic writes / safety
@pytest.mark.parametrize("name", ["keep.nii.gz", "keep.nrrd"])
def test_failed_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch, name):
    target = tmp_path / name
    write_volume(Volume(np.zeros((2, 2, 2), np.uint8), np.eye(4)), target)
    before = target.read_bytes()
    seen = []
    if name.endswith(".nii.gz"):
        real_save = nib.save

        def failing_save(img, filename, *args, **kwargs):
            real_save(img, filename, *args, **kwargs)
            seen.append(Path(filename))
            raise OSError("disk full (simulated)")

        monkeypatch.setattr(nib, "save", failing_save)
    else:
        real_write = nrrd.write

        def failing_write(fh, *args, **kwargs):
            real_write(fh, *args, **kwargs)
            seen.append(Path(fh.name))
            raise OSError("disk full (simulated)")

        monkeypatch.setattr(nrrd, "write", failing_write)
    with pytest.raises(OSError, match="simulated"):
        write_volume(Volume(np.ones((3, 3, 3), np.uint8), np.eye(4)), target)
    assert seen and seen[0].parent == tmp_path and seen[0] != target  # it wrote a temp sibling...
    assert target.read_bytes() == before  # ...and the original is untouched
    assert leftovers(tmp_path, {name}) == []


def test_atomic_write_binary_text_and_failure(tmp_path):
    target = tmp_path / "notes.json"
    with atomic_write(target, "w") as fh:
        fh.write('{"a": "é"}')
    assert target.read_text(encoding="utf-8") == '{"a": "é"}'
    with pytest.raises(RuntimeError, match="boom"), atomic_write(target, "wb") as fh:
        fh.write(b"partial")
        raise RuntimeError("boom")
    assert target.read_text(encoding="utf-8") == '{"a": "é"}'
    assert leftovers(tmp_path, {"notes.json"}) == []
    with atomic_write(target) as fh:
        fh.write(b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    with pytest.raises(ValueError, match="mode"), atomic_write(target, "a"):
        pass


def test_refuses_to_overwrite_the_source_file(tmp_path):
    src = tmp_path / "mine.nii.gz"
    shutil.copy(NIB_DATA / "anatomical.nii", tmp_path / "mine.nii")
    write_volume(read_volume(tmp_path / "mine.nii"), src)
    before = src.read_bytes()
    vol = read_volume(src)
    edited = vol.with_array(vol.array + 1)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_volume(edited, src)
    (tmp_path / "sub").mkdir()
    with pytest.raises(FileExistsError):
        write_volume(edited, tmp_path / "sub" / ".." / "mine.nii.gz")
    assert src.read_bytes() == before
    write_volume(edited, src, overwrite=True)
    assert np.array_equal(read_volume(src).array, vol.array + 1)
    assert leftovers(tmp_path, {"mine.nii", "mine.nii.gz", "sub"}) == []


def test_written_gzip_is_valid_and_complete(tmp_path):
    vol = Volume(np.arange(1000, dtype=np.int16).reshape(10, 10, 10), np.eye(4))
    out = write_volume(vol, tmp_path / "z.nii.gz")
    raw = gzip.decompress(out.read_bytes())
    assert len(raw) >= 352 + vol.array.nbytes
    assert gio.WRITE_SUFFIXES == (".nii", ".nii.gz", ".nrrd")
