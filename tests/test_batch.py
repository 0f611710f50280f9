"""Dataset runner: pairing, torchrun sharding (2 CPU processes), resuming, provenance; enhance/harmonize."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_gem3d import batch, distributed
from napari_gem3d import cases as pairing
from napari_gem3d.cli import main
from napari_gem3d.files import file_sha256
from napari_gem3d.io import read_volume, write_volume
from napari_gem3d.volume import Volume

AFFINE = np.diag([1.5, 1.5, 2.0, 1.0])
CASES = ("brainA", "brainB", "brainC")
FAST = ["--steps", "1", "--device", "cpu"]


def _case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.zeros((20, 20, 10), np.uint8)
    mask[3:17, 3:17, 1:9] = 2
    mask[7:12, 7:12, 3:7] = 3
    image = (mask * 40 + rng.normal(0, 5, mask.shape)).astype(np.float32)
    return image, mask


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from napari_gem3d.models import build_bundle, save_bundle
    from napari_gem3d.models.presets import small_config

    root = tmp_path_factory.mktemp("dataset")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for i, name in enumerate(CASES):
        image, mask = _case(i)
        write_volume(Volume(image, AFFINE), root / "images" / f"{name}.nii.gz")
        write_volume(Volume(mask, AFFINE), root / "masks" / f"{name}.nii.gz")
    save_bundle(build_bundle(small_config(32)), root / "bundle")
    return root


@pytest.fixture(scope="module")
def torchrun_enhanced(dataset):
    """gem3d enhance --times 2 over 3 cases, launched with torchrun on 2 CPU processes."""
    out = dataset / "enhanced"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "napari_gem3d.cli",
        "enhance",
        "--images",
        str(dataset / "images"),
        "--masks",
        str(dataset / "masks"),
        "--out",
        str(out),
        "--times",
        "2",
        "--model",
        str(dataset / "bundle"),
        *FAST,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return out, proc.stdout + proc.stderr


@pytest.fixture
def single_process(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)


# -------------------------------------------------------------------------------------------- pairing
def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"")


def test_pairing_rules(tmp_path):
    _touch(tmp_path / "a" / "img", "x.nii.gz", "y_image.nii.gz", "z_0000.nrrd", ".x.0123456789ab.tmp.nii.gz")
    _touch(tmp_path / "a" / "msk", "x.nii.gz", "y_mask.nii.gz", "z.nii")
    cases = pairing.pair_cases(tmp_path / "a" / "msk", tmp_path / "a" / "img")
    assert [(c.name, c.image.name, c.mask.name) for c in cases] == [
        ("x", "x.nii.gz", "x.nii.gz"),
        ("y", "y_image.nii.gz", "y_mask.nii.gz"),
        ("z", "z_0000.nrrd", "z.nii"),
    ]
    assert batch.output_suffix(cases[2]) == ".nrrd"
    masks_only = pairing.pair_cases(tmp_path / "a" / "msk")
    assert [c.image for c in masks_only] == [None, None, None]

    _touch(tmp_path / "b" / "img", "p.nii.gz", "q.nii.gz")
    _touch(tmp_path / "b" / "msk", "p.nii.gz", "r_seg.nii.gz")
    with pytest.raises(
        ValueError, match=r"masks without image \['r_seg.nii.gz'\].*images without mask \['q.nii.gz'\]"
    ):
        pairing.pair_cases(tmp_path / "b" / "msk", tmp_path / "b" / "img")
    _touch(tmp_path / "c" / "msk", "p.nii.gz", "p_mask.nii.gz")
    with pytest.raises(ValueError, match="two mask files map to case 'p'"):
        pairing.pair_cases(tmp_path / "c" / "msk")

    csv_path = tmp_path / "b" / "pairs.csv"
    csv_path.write_text("case,image,mask\nfirst,img/q.nii.gz,msk/p.nii.gz\n", encoding="utf-8")
    (case,) = pairing.pair_cases(pairs=csv_path)
    assert (case.name, case.image, case.mask) == (
        "first",
        tmp_path / "b/img/q.nii.gz",
        tmp_path / "b/msk/p.nii.gz",
    )
    csv_path.write_text("case,image,mask\nfirst,img/nope.nii.gz,msk/p.nii.gz\n", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="nope.nii.gz"):
        pairing.pair_cases(pairs=csv_path)


def test_generated_pairs_with_longest_case_name():
    real = [Path("r/a.nii.gz"), Path("r/a_b_image.nii.gz")]
    gen = [Path("g/a.nii.gz"), Path("g/a_gen01.nii.gz"), Path("g/a_b_gen02.nii.gz")]
    pairs = pairing.pair_generated(real, gen)
    assert [(r.name, g.name) for r, g in pairs] == [
        ("a.nii.gz", "a.nii.gz"),
        ("a.nii.gz", "a_gen01.nii.gz"),
        ("a_b_image.nii.gz", "a_b_gen02.nii.gz"),
    ]
    with pytest.raises(ValueError, match="ab.nii.gz"):
        pairing.pair_generated(real, [Path("g/ab.nii.gz")])


def test_shard_and_env(monkeypatch):
    items = list(range(11))
    parts = [distributed.shard(items, r, 3) for r in range(3)]
    assert sorted(x for p in parts for x in p) == items
    assert parts[1] == [1, 4, 7, 10]
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.dist_env() == (1, 2, 1)
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="invalid RANK=2"):
        distributed.dist_env()
    assert batch.job_seed(0, "a", 1) == batch.job_seed(0, "a", 1) != batch.job_seed(0, "a", 2)


# -------------------------------------------------------------------------------- sharded enhancement
def _records(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (out / "provenance").glob("*.json")}


def test_torchrun_two_processes_cover_every_job_once(torchrun_enhanced, dataset):
    out, log = torchrun_enhanced
    names = [f"{c}_gen{k:02d}" for c in CASES for k in (1, 2)]  # the sorted job order
    records = _records(out)
    assert sorted(records) == sorted(names)
    for i, name in enumerate(names):
        rec = records[name]
        assert rec["world_size"] == 2 and rec["rank"] == i % 2
        assert log.count(f"{name}: written") == 1
        for role in ("image", "mask"):
            path = out / rec["outputs"][role]["file"]
            assert file_sha256(path) == rec["outputs"][role]["sha256"]
        gen = read_volume(out / "images" / f"{name}.nii.gz")
        src = read_volume(dataset / "images" / f"{name.split('_gen')[0]}.nii.gz")
        assert gen.shape == src.shape and np.allclose(gen.affine, src.affine)
        prov = gen.header["provenance"]
        assert prov["seed"] == rec["job"]["seed"] and prov["batch"]["command"] == "enhance"
        assert prov["informed"]["kind"] == "picked" and prov["steps"] == 1
    assert "rank 0/2: 3 written" in log and "rank 1/2: 3 written" in log
    seeds = {r["job"]["seed"] for r in records.values()}
    assert len(seeds) == 6  # every replicate has its own seed


def test_resume_skips_finished_and_redoes_partial(
    torchrun_enhanced, dataset, tmp_path, capsys, single_process
):
    out = tmp_path / "out"
    shutil.copytree(torchrun_enhanced[0], out)
    args = [
        "enhance",
        "--images",
        str(dataset / "images"),
        "--masks",
        str(dataset / "masks"),
        "--out",
        str(out),
        "--times",
        "2",
        "--model",
        str(dataset / "bundle"),
        *FAST,
    ]
    assert main(args) == 0
    assert "0 written, 6 already finished" in capsys.readouterr().out

    before = {p.name: file_sha256(p) for p in (out / "images").iterdir()}
    (out / "provenance" / "brainA_gen01.json").unlink()  # killed before the JSON: partial
    (out / "images" / "brainB_gen02.nii.gz").write_bytes(b"truncated")  # output changed after the JSON
    (out / "provenance" / "brainC_gen01.json").unlink()
    stale = out / "images" / ".brainC_gen01.0123456789ab.tmp.nii.gz"
    stale.write_bytes(b"half a file")
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "3 written, 3 already finished" in printed
    for name in ("brainA_gen01", "brainB_gen02", "brainC_gen01"):
        assert f"{name}: written" in printed
    assert not stale.exists()
    after = {p.name: file_sha256(p) for p in (out / "images").iterdir()}
    assert set(after) == set(before)
    for name in ("brainA_gen02", "brainB_gen01", "brainC_gen02"):
        assert after[f"{name}.nii.gz"] == before[f"{name}.nii.gz"]  # untouched
    records = _records(out)
    for name, rec in records.items():
        job = batch.Job(name, pairing.Case(name, Path("m")), rec["job"])
        assert batch.is_finished(out, job)
    rec = records["brainA_gen01"]
    changed = batch.Job("brainA_gen01", pairing.Case("brainA", Path("m")), {**rec["job"], "seed": 1})
    assert not batch.is_finished(out, changed)  # other settings: not finished


def test_harmonize_one_informed_slice_for_every_case(dataset, tmp_path, capsys, single_process):
    out = tmp_path / "harm"
    informed = dataset / "images" / "brainB.nii.gz"
    args = [
        "harmonize",
        "--informed-from",
        str(informed),
        "--masks",
        str(dataset / "masks"),
        "--images",
        str(dataset / "images"),
        "--out",
        str(out),
        "--model",
        str(dataset / "bundle"),
        *FAST,
    ]
    assert main(args) == 0
    assert "3 written" in capsys.readouterr().out
    records = _records(out)
    assert sorted(records) == list(CASES)
    informed_sources = set()
    for name, rec in records.items():
        vol = read_volume(out / "images" / f"{name}.nii.gz")
        mask = read_volume(dataset / "masks" / f"{name}.nii.gz")
        assert vol.shape == mask.shape and np.allclose(vol.affine, mask.affine)
        prov = vol.header["provenance"]
        informed_sources.add((prov["informed"]["volume"], prov["informed"]["index"]))
        assert rec["job"]["informed"]["file"] == "brainB.nii.gz"
        np.testing.assert_array_equal(read_volume(out / "masks" / f"{name}.nii.gz").array, mask.array)
    assert informed_sources == {(informed.name, 5)}  # brainB's slice 5 of 10 (p = 0.5), by file name only
    assert main(args) == 0
    assert "0 written, 3 already finished" in capsys.readouterr().out
