"""What the commands promise about outputs: never an input, stored type, provenance, seeds, early checks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from napari_gem3d import __version__, demo_case
from napari_gem3d import io as gio
from napari_gem3d.cli import main
from napari_gem3d.files import file_sha256
from napari_gem3d.io import read_volume, write_volume
from napari_gem3d.outputs import cast_output, check_output_file, check_output_folder, output_dtype
from napari_gem3d.sampling.denoise import SeededNoise
from napari_gem3d.sampling.device import effective_precision
from napari_gem3d.volume import Volume, require_finite


# ------------------------------------------------------------------------------------ output paths
@pytest.fixture
def pair(tmp_path):
    image, mask = demo_case()
    paths = {}
    for name, vol in (("image", image), ("mask", mask)):
        paths[name] = write_volume(vol.with_array(vol.array, source=None), tmp_path / f"{name}.nii.gz")
    return paths


@pytest.mark.parametrize("link", ["same", "symlink", "hardlink", "dotted"])
def test_an_input_is_never_an_output_even_with_overwrite(pair, tmp_path, link):
    target = pair["image"]
    if link == "symlink":
        target = tmp_path / "alias.nii.gz"
        target.symlink_to(pair["image"])
    elif link == "hardlink":
        target = tmp_path / "hard.nii.gz"
        os.link(pair["image"], target)
    elif link == "dotted":
        target = tmp_path / "sub" / ".." / "image.nii.gz"
        (tmp_path / "sub").mkdir()
    with pytest.raises(FileExistsError, match="it is the input --image"):
        check_output_file(target, inputs=[("--image", pair["image"])], overwrite=True)
    # an earlier output, not an input, may be replaced with overwrite
    other = tmp_path / "earlier.nii.gz"
    other.write_bytes(b"x")
    assert check_output_file(other, inputs=[("--image", pair["image"])], overwrite=True) == other


def test_output_folder_must_not_hold_an_input(pair, tmp_path):
    with pytest.raises(FileExistsError, match="holds the input"):
        check_output_folder(tmp_path, inputs=[("--mask", pair["mask"])])
    assert check_output_folder(tmp_path / "new" / "deeper", inputs=[("--mask", pair["mask"])])
    assert not (tmp_path / "new").exists()  # checking creates nothing


def test_unwritable_or_odd_outputs_fail_before_any_work(tmp_path):
    with pytest.raises(PermissionError, match="cannot write"):
        check_output_file(Path("/proc/gen.nii.gz"))
    with pytest.raises(FileNotFoundError, match="mkdir -p"):
        check_output_file(tmp_path / "missing" / "gen.nii.gz")
    with pytest.raises(IsADirectoryError, match="folder"):
        check_output_file(tmp_path, overwrite=True)
    with pytest.raises(ValueError, match=r"'\.png'"):
        check_output_file(tmp_path / "gen.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the probes leave nothing behind


# ----------------------------------------------------------------------------------- stored type
def test_output_dtype_follows_an_integer_reference_only(tmp_path):
    arr = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    plain = Volume(arr, np.eye(4), {"dtype": "int16"})
    assert output_dtype("auto", plain) == np.int16
    assert output_dtype("auto", Volume(arr, np.eye(4), {"dtype": "int16", "scl_slope": 0.5})) == np.float32
    assert output_dtype("auto", Volume(arr.astype(np.float32), np.eye(4), {"dtype": "float32"})) == np.float32
    assert output_dtype("auto", None) == np.float32
    assert output_dtype("uint8", plain) == np.uint8
    with pytest.raises(ValueError, match="choose one of"):
        output_dtype("float16", plain)


def test_cast_output_rounds_to_nearest_and_counts_what_it_clips():
    values = np.array([-40000.0, -1.5, -0.4, 0.5, 2.49, 2.51, 40000.0], dtype=np.float32)
    stored, note = cast_output(values, np.int16)
    assert stored.dtype == np.int16
    assert stored.tolist() == [-32768, -2, 0, 0, 2, 3, 32767]  # numpy rint: halves to even
    assert note == {"dtype": "int16", "rounded": "to nearest", "clipped_to": [-32768, 32767], "clipped_voxels": 2}
    as_float, note = cast_output(values, np.float32)
    assert as_float.dtype == np.float32 and np.array_equal(as_float, values) and note == {"dtype": "float32"}


# ---------------------------------------------------------------------- one real run of `gem3d sample`
def _sample(pair, out, *extra):
    argv = ["sample", "--mask", str(pair["mask"]), "--image", str(pair["image"]), "--out", str(out),
            "--steps", "1", *extra]
    assert main(argv) == 0
    return read_volume(out)


def test_sample_writes_the_source_type_and_private_provenance(pair, tmp_path):
    image = read_volume(pair["image"])
    auto = _sample(pair, tmp_path / "auto.nii.gz")
    as_float = _sample(pair, tmp_path / "float.nii.gz", "--dtype", "float32")
    assert image.array.dtype == auto.array.dtype == np.int16
    assert as_float.array.dtype == np.float32
    # the same generation, stored two ways: int16 is the float result rounded to nearest
    assert np.array_equal(auto.array, np.rint(as_float.array).astype(np.int16))
    prov = auto.header["provenance"]
    assert prov["output"]["dtype"] == "int16" and prov["output"]["clipped_voxels"] == 0
    assert prov["package_version"] == __version__
    assert prov["command"].startswith("gem3d sample --mask mask.nii.gz --image image.nii.gz")
    assert prov["inputs"]["image"] == {"file": "image.nii.gz", "sha256": file_sha256(pair["image"])}
    assert prov["inputs"]["mask"] == {"file": "mask.nii.gz", "sha256": file_sha256(pair["mask"])}
    assert str(tmp_path) not in json.dumps(prov)  # no folder names unless asked
    recorded = _sample(pair, tmp_path / "paths.nii.gz", "--record-paths").header["provenance"]
    assert recorded["inputs"]["image"]["path"] == str(pair["image"].resolve())
    assert str(tmp_path) in recorded["command"]


def test_distinct_seeds_give_distinct_volumes_and_the_recorded_seed_is_used(pair, tmp_path):
    zero = _sample(pair, tmp_path / "s0.nii.gz", "--seed", "0", "--dtype", "float32")
    big = _sample(pair, tmp_path / "s32.nii.gz", "--seed", str(2**32), "--dtype", "float32")
    assert big.header["provenance"]["seed"] == 2**32
    assert not np.array_equal(zero.array, big.array)


def test_seeds_are_64_bit_and_seeds_below_2_32_draw_what_they_always_drew():
    draw = lambda seed: SeededNoise(seed, 3).draw("x_T", (8,))  # noqa: E731
    assert torch.equal(draw(7), draw(7))
    assert not torch.equal(draw(0), draw(2**32)) and not torch.equal(draw(2**32), draw(2**64 - 1))
    # the former rule masked the seed to 32 bits: below 2**32 the stream is unchanged
    state = np.random.SeedSequence([7, 3]).generate_state(2)
    old = torch.Generator("cpu").manual_seed(int(state[0]) << 32 | int(state[1]))
    assert torch.equal(draw(7), torch.randn((8,), generator=old))
    for bad in (-1, 2**64, 1.5, True):
        with pytest.raises(ValueError, match="2\\*\\*64"):
            SeededNoise(bad, 0)


def test_half_precision_is_refused_on_the_cpu_not_faked():
    assert effective_precision("fp32", torch.device("cpu")) == "fp32"
    for precision in ("bf16", "fp16"):
        with pytest.raises(ValueError, match="use fp32"):
            effective_precision(precision, torch.device("cpu"))


# ------------------------------------------------------------------------------ inputs refused early
def test_non_finite_values_are_counted_and_located():
    arr = np.zeros((3, 4, 5), np.float32)
    arr[1, 2, 3], arr[2, 0, 0] = np.nan, -np.inf
    shown = r"2 non-finite value\(s\) \(1 NaN, 1 infinite; the first at voxel \(1, 2, 3\)"
    with pytest.raises(ValueError, match=shown):
        require_finite(arr, "the image")
    require_finite(np.zeros(3, np.int16), "labels")  # integers cannot be non-finite


def test_a_header_larger_than_its_file_is_refused_before_any_data_are_read(tmp_path, monkeypatch):
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((30000, 30000, 30000))
    hdr.set_data_dtype(np.int16)
    hdr["vox_offset"] = 352  # data would start after the header and its 4-byte extension flag
    path = tmp_path / "huge.nii"
    path.write_bytes(hdr.binaryblock + b"\0" * 4 + b"\1" * 1000)

    def no_data(*args, **kw):  # pragma: no cover - reached only if the check is missing
        raise AssertionError("the data were read")

    monkeypatch.setattr(nib.arrayproxy.ArrayProxy, "__array__", no_data)
    shown = r"30000 x 30000 x 30000 voxels of int16 \(49.1 TiB\) but the file holds only 1000 bytes after its header"
    with pytest.raises(ValueError, match=shown):
        read_volume(path)


def test_a_volume_that_cannot_fit_in_memory_is_refused_with_the_numbers(tmp_path, monkeypatch):
    path = write_volume(Volume(np.zeros((64, 64, 64), np.float32), np.eye(4)), tmp_path / "v.nii.gz")
    monkeypatch.setattr(gio, "available_memory", lambda: 2**20)
    with pytest.raises(ValueError, match=r"64 x 64 x 64 voxels of float32 need about 2 MiB .* only 1 MiB"):
        read_volume(path)
    monkeypatch.setattr(gio, "available_memory", lambda: None)  # unknown: read as usual
    assert read_volume(path).shape == (64, 64, 64)
