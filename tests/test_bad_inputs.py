"""Bad inputs through the ``gem3d`` CLI (in-process) and the napari reader: refused early, clearly, safely.

Every CLI case must
- exit with status 2 (130 when interrupted),
- print exactly one non-empty line to stderr that names the problem (case-specific keywords), and no
  traceback anywhere,
- fail BEFORE any generation (the sampler is replaced by a stub that records being reached),
- leave every input and pre-existing file byte-identical and nothing new behind (no output, no hidden
  ``.<stem>.<12 hex>.tmp<suffix>`` file, no new folder).

Keywords are regular expressions checked case-insensitively (``"a|b"`` accepts either) against the message
without the test folder and the file names in it; all entries of a case must appear.
The fixtures are tiny (24 x 24 x 12) and the demo model is loaded once per module, so the file runs in
seconds.
"""

from __future__ import annotations

import gzip
import os
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bad_input_cases import (
    INFORMED_INDEX,
    SHAPE,
    Workspace,
    missing_keywords,
    run_cli,
    save_nifti,
    snapshot,
    snapshot_problems,
    with_value,
)

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def demo_bundle():
    import torch

    from napari_gem3d import demo_model_path
    from napari_gem3d.models import load_bundle

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield demo_model_path().resolve(), load_bundle(demo_model_path())
    torch.set_num_threads(threads)


@pytest.fixture
def cached_demo_model(monkeypatch, demo_bundle):
    """Loading the demo bundle takes ~1.5 s: reuse one copy; any other --model goes to the real loader."""
    import napari_gem3d.models as models_pkg
    import napari_gem3d.models.bundle as bundle_mod

    demo_path, bundle = demo_bundle
    real = bundle_mod.load_bundle

    def load_bundle(path, device="cpu"):
        try:
            same = Path(path).resolve() == demo_path
        except (TypeError, OSError):
            same = False
        return bundle if same and str(device) == "cpu" else real(path, device=device)

    monkeypatch.setattr(models_pkg, "load_bundle", load_bundle)
    monkeypatch.setattr(bundle_mod, "load_bundle", load_bundle)


@dataclass
class Stub:
    calls: list
    interrupt: bool = False


@pytest.fixture
def sampler_stub(monkeypatch, cached_demo_model):
    """Replace the sampler (volume and informed-slice generation) by a recorder."""
    import napari_gem3d.sampling.informed as informed_mod
    import napari_gem3d.sampling.propagate as propagate_mod

    stub = Stub(calls=[])

    def fake_generate(bundle, request, *args, **kwargs):
        stub.calls.append("generate")
        if stub.interrupt:
            raise KeyboardInterrupt
        raise RuntimeError("test stub: the sampler was reached")
        yield  # a generator, like the real one

    def fake_generate_informed(bundle, position, *args, **kwargs):
        stub.calls.append("generate_informed")
        if stub.interrupt:
            raise KeyboardInterrupt
        raise RuntimeError("test stub: the informed-slice generator was reached")

    monkeypatch.setattr(propagate_mod, "generate", fake_generate)
    monkeypatch.setattr(informed_mod, "generate_informed", fake_generate_informed)
    return stub


@pytest.fixture
def ws(tmp_path, monkeypatch):
    w = Workspace(tmp_path)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # stray relative writes land in the snapshot too
    return w


# ---------------------------------------------------------------------------------------- argv makers
SAMPLING = ["--steps", "2", "--device", "cpu"]


def sample(ws: Workspace, *extra, mask=None, image="default", informed=None, out=None) -> list[str]:
    argv = ["sample", "--mask", str(mask or ws.mask)]
    image = ws.image if image == "default" else image
    if image is not None:
        argv += ["--image", str(image)]
    if informed is not None:
        argv += ["--informed-from", str(informed)]
    return argv + ["--out", str(out or ws.out / "gen.nii.gz"), *SAMPLING, *map(str, extra)]


def counterfactual(ws: Workspace, *extra, mask=None, informed="default", image=None, out=None) -> list[str]:
    argv = ["counterfactual", "--mask", str(mask or ws.mask)]
    if image is not None:
        argv += ["--image", str(image)]
    argv += ["--out", str(out or ws.out / "cf"), *SAMPLING, *map(str, extra)]
    informed = ws.other if informed == "default" else informed
    if informed is not None:
        argv += ["--informed-from", str(informed)]
    return argv


def enhance(ws: Workspace, *extra, images=None, masks=None, out=None) -> list[str]:
    return ["enhance", "--images", str(images or ws.images), "--masks", str(masks or ws.masks),
            "--out", str(out or ws.out / "enhanced"), *SAMPLING, *map(str, extra)]


def harmonize(ws: Workspace, *extra, informed=None, masks=None, out=None) -> list[str]:
    return ["harmonize", "--informed-from", str(informed or ws.other), "--masks", str(masks or ws.masks),
            "--out", str(out or ws.out / "harmonized"), *SAMPLING, *map(str, extra)]


def demo(ws: Workspace, *extra, out=None) -> list[str]:
    return ["demo", "--out", str(out or ws.out / "demo"), *SAMPLING, *map(str, extra)]


def evaluate(ws: Workspace, *extra, real=None, generated=None, out=None) -> list[str]:
    if generated is None:
        generated = ws.root / "generated"
        save_nifti(ws.image_arr, generated / "case1_gen1.nii.gz")
    return ["evaluate", "--real", str(real or ws.images), "--generated", str(generated),
            "--out", str(out or ws.out / "metrics"), "--device", "cpu", *map(str, extra)]


def convert(ws: Workspace, *extra, volume=None, out=None) -> list[str]:
    if volume is None:
        volume = ws.file("ckpt/gem3d.ckpt", b"not a checkpoint, just bytes\n" * 4)
    return ["convert-official", "--volume", str(volume), "--out", str(out or ws.out / "bundle"),
            *map(str, extra)]


# --------------------------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    argv: Callable[[Workspace], list[str]]
    keywords: tuple[str, ...]
    exit: int = 2
    interrupt: bool = False  # the sampler stub raises KeyboardInterrupt (it may be reached)
    skip_if_root: bool = False


def case(id_: str, argv, *keywords: str, **kw) -> pytest.param:
    return pytest.param(Case(argv, tuple(keywords), **kw), id=id_)


def _symlink(ws: Workspace, target: Path, name: str) -> Path:
    link = ws.out / name
    link.symlink_to(target)
    return link


def _hardlink(ws: Workspace, target: Path, name: str) -> Path:
    link = ws.out / name
    os.link(target, link)
    return link


def _pairs_csv(ws: Workspace) -> Path:
    return ws.file("data/pairs.csv", b"case,image,mask\ncase1,images/case1.nii.gz,masks/case1.nii.gz\n")


def _readonly_folder(ws: Workspace) -> Path:
    folder = ws.root / "r0"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


def _nonempty(ws: Workspace, name: str) -> Path:
    folder = ws.out / name
    folder.mkdir()
    (folder / "keep.txt").write_text("earlier results\n")
    return folder


def _mask_with(ws: Workspace, name: str, array) -> Path:
    return ws.volume(name, array)


INPUT = "input"
NAN, INF = r"\bnan\b", r"\binf\b|infinit"
WRITE = "writ|permission|read-only"
FOLDER = "folder|directory"
EXT = r"\.nii"

DATA_LOSS = [
    case("sample-out-is-image-overwrite", lambda w: sample(w, "--overwrite", out=w.image), INPUT),
    case("sample-out-is-image", lambda w: sample(w, out=w.image), INPUT),
    case("sample-out-is-mask-overwrite", lambda w: sample(w, "--overwrite", out=w.mask), INPUT),
    case("sample-out-is-informed-from-overwrite",
         lambda w: sample(w, "--overwrite", image=None, informed=w.other, out=w.other), INPUT),
    case("sample-out-symlink-to-image-overwrite",
         lambda w: sample(w, "--overwrite", out=_symlink(w, w.image, "link.nii.gz")), INPUT),
    case("sample-out-symlink-to-mask-overwrite",
         lambda w: sample(w, "--overwrite", out=_symlink(w, w.mask, "mlink.nii.gz")), INPUT),
    case("sample-out-hardlink-to-image-overwrite",
         lambda w: sample(w, "--overwrite", out=_hardlink(w, w.image, "hard.nii.gz")), INPUT),
    case("sample-out-hardlink-to-mask-overwrite",
         lambda w: sample(w, "--overwrite", out=_hardlink(w, w.mask, "hardm.nii.gz")), INPUT),
    case("sample-out-image-via-dotdot-overwrite",
         lambda w: sample(w, "--overwrite", out=w.data / ".." / "data" / "image.nii.gz"), INPUT),
    case("sample-out-relative-path-to-image-overwrite",
         lambda w: sample(w, "--overwrite", out="../data/image.nii.gz"), INPUT),
    case("sample-out-in-symlinked-folder-is-image-overwrite",
         lambda w: sample(w, "--overwrite", out=_symlink(w, w.data, "alias") / "image.nii.gz"), INPUT),
    case("counterfactual-out-holds-mask-overwrite", lambda w: counterfactual(w, "--overwrite", out=w.data), INPUT),
    case("counterfactual-out-holds-image-overwrite",
         lambda w: counterfactual(w, "--overwrite", image=w.image, mask=w.masks / "case1.nii.gz",
                                  informed=w.images / "case1.nii.gz", out=w.data), INPUT),
    case("counterfactual-out-is-ancestor-overwrite",
         lambda w: counterfactual(w, "--overwrite", out=w.root), INPUT),
    case("counterfactual-out-holds-only-informed-from-overwrite",
         lambda w: counterfactual(w, "--overwrite", informed=w.volume("ref/v90.nii.gz", w.image_arr),
                                  out=w.bad / "ref"), INPUT),
    case("enhance-out-holds-inputs", lambda w: enhance(w, out=w.data), INPUT),
    case("enhance-out-symlink-to-data", lambda w: enhance(w, out=_symlink(w, w.data, "alias")), INPUT),
    case("enhance-out-is-images-folder", lambda w: enhance(w, out=w.images), INPUT),
    case("enhance-out-is-masks-folder", lambda w: enhance(w, out=w.masks), INPUT),
    case("enhance-pairs-out-holds-inputs",
         lambda w: ["enhance", "--pairs", str(_pairs_csv(w)), "--out", str(w.data), *SAMPLING], INPUT),
    case("harmonize-out-holds-inputs", lambda w: harmonize(w, out=w.data), INPUT),
    case("harmonize-out-is-masks-folder", lambda w: harmonize(w, out=w.masks), INPUT),
    case("harmonize-out-holds-only-informed-from",
         lambda w: harmonize(w, informed=w.volume("ref/v91.nii.gz", w.image_arr), out=w.bad / "ref"), INPUT),
    case("convert-out-is-checkpoint-folder-overwrite",
         lambda w: convert(w, "--overwrite", out=w.root / "ckpt"), INPUT),
]

SILENT_WRONG = [
    case("sample-image-nan-at-informed-slice",
         lambda w: sample(w, image=w.volume("v09.nii.gz", with_value(w.image_arr, (12, 12, INFORMED_INDEX), np.nan))),
         NAN),
    case("sample-image-nan-elsewhere",
         lambda w: sample(w, image=w.volume("v10.nii.gz", with_value(w.image_arr, (2, 3, 1), np.nan))), NAN),
    case("sample-image-inf-at-informed-slice",
         lambda w: sample(w, image=w.volume("v04.nii.gz", with_value(w.image_arr, (12, 12, INFORMED_INDEX), np.inf))),
         INF),
    case("sample-image-minus-inf-elsewhere",
         lambda w: sample(w, image=w.volume("v13.nii.gz", with_value(w.image_arr, (20, 3, 10), -np.inf))), INF),
    case("sample-mask-nan",
         lambda w: sample(w, mask=w.volume("v08.nii.gz", with_value(w.mask_arr, (12, 12, 6), np.nan))), NAN),
    case("sample-informed-from-nan",
         lambda w: sample(w, image=None, informed=w.volume(
             "v06.nii.gz", with_value(w.image_arr, (12, 12, INFORMED_INDEX), np.nan))), NAN),
    case("sample-informed-from-inf-elsewhere",
         lambda w: sample(w, image=None, informed=w.volume(
             "v05.nii.gz", with_value(w.image_arr, (1, 1, 1), np.inf))), INF),
    case("counterfactual-informed-from-nan",
         lambda w: counterfactual(w, informed=w.volume(
             "v01.nii.gz", with_value(w.image_arr, (12, 12, INFORMED_INDEX), np.nan))), NAN),
    case("counterfactual-image-nan",
         lambda w: counterfactual(w, image=w.volume("v00.nii.gz", with_value(w.image_arr, (5, 5, 5), np.nan))),
         NAN),
    case("harmonize-informed-from-nan",
         lambda w: harmonize(w, informed=w.volume(
             "v03.nii.gz", with_value(w.image_arr, (12, 12, INFORMED_INDEX), np.nan))), NAN),
    case("sample-seed-negative", lambda w: sample(w, "--seed", "-1"), "seed"),
    case("sample-seed-2**64", lambda w: sample(w, "--seed", str(2**64)), "seed"),
    case("sample-seed-2**70", lambda w: sample(w, "--seed", str(2**70)), "seed"),
    case("counterfactual-seed-negative", lambda w: counterfactual(w, "--seed", "-1"), "seed"),
    case("counterfactual-generate-seed-overflow",
         lambda w: counterfactual(w, "--generate", "2", "--seed", str(2**64 - 1), informed=None), "seed"),
    case("enhance-seed-2**64", lambda w: enhance(w, "--seed", str(2**64)), "seed"),
    case("harmonize-seed-negative", lambda w: harmonize(w, "--seed", "-5"), "seed"),
    case("demo-seed-2**70", lambda w: demo(w, "--seed", str(2**70)), "seed"),
    case("sample-mask-all-zero",
         lambda w: sample(w, mask=w.volume("v15.nii.gz", np.zeros(SHAPE, np.uint8))), "empty|background|no label"),
    case("counterfactual-mask-all-zero",
         lambda w: counterfactual(w, mask=w.volume("v15.nii.gz", np.zeros(SHAPE, np.uint8))),
         "empty|background|no label"),
]

#: the broken-file kinds of tests/bad_input_cases.BROKEN and what their message must say
BROKEN_KEYWORDS = {
    "empty-nii-gz": ("empty",),
    "empty-nii": ("empty",),
    "truncated-gz": ("truncated",),
    "truncated-nii": ("truncated",),
    "text-as-nii-gz": ("nifti|gzip",),
    "gzip-of-garbage": ("nifti",),
    "huge-header-nii": ("truncated|memory",),
    "huge-header-nii-gz": ("truncated|memory",),
    "wrong-magic": ("nifti|magic",),
    "4d-two-volumes": ("3-d|4-d",),
    "2d-image": ("3-d|2-d",),
    "nrrd-garbage-header": ("nrrd",),
    "nrrd-text": ("nrrd",),
    "nrrd-huge": ("truncated|memory",),
    "nrrd-huge-gzip": ("truncated|memory",),
    "nrrd-truncated-raw": ("truncated",),
    "nhdr-missing-data": ("missing|no such|not found",),
}
IN_ALL_ROLES = ["empty-nii-gz", "empty-nii", "truncated-gz", "text-as-nii-gz", "huge-header-nii",
                "huge-header-nii-gz", "wrong-magic", "4d-two-volumes", "2d-image", "nrrd-garbage-header",
                "nrrd-huge"]
ROLES = {
    "image": lambda kind: lambda w: sample(w, image=w.broken(kind)),
    "mask": lambda kind: lambda w: sample(w, mask=w.broken(kind)),
    "informed-from": lambda kind: lambda w: sample(w, image=None, informed=w.broken(kind)),
}
BROKEN_FILES = [
    case(f"sample-{role}-{kind}", make(kind), *BROKEN_KEYWORDS[kind])
    for kind in IN_ALL_ROLES
    for role, make in ROLES.items()
] + [
    case(f"sample-image-{kind}", ROLES["image"](kind), *BROKEN_KEYWORDS[kind])
    for kind in BROKEN_KEYWORDS
    if kind not in IN_ALL_ROLES
] + [
    case("counterfactual-informed-from-truncated-gz",
         lambda w: counterfactual(w, informed=w.broken("truncated-gz")), "truncated"),
    case("counterfactual-mask-empty-nii", lambda w: counterfactual(w, mask=w.broken("empty-nii")), "empty"),
    case("harmonize-informed-from-huge-header-nii-gz",
         lambda w: harmonize(w, informed=w.broken("huge-header-nii-gz")), "truncated|memory"),
    case("harmonize-informed-from-4d", lambda w: harmonize(w, informed=w.broken("4d-two-volumes")), "3-d|4-d"),
]

LATE_ERRORS = [
    case("sample-out-folder-missing", lambda w: sample(w, out=w.root / "nope" / "deeper" / "gen.nii.gz"),
         FOLDER),
    case("sample-out-readonly-folder", lambda w: sample(w, out=_readonly_folder(w) / "gen.nii.gz"), WRITE,
         skip_if_root=True),
    case("sample-out-in-proc", lambda w: sample(w, out="/proc/gem3d_gen.nii.gz"), WRITE),
    case("sample-out-in-sys", lambda w: sample(w, out="/sys/gem3d_gen.nii.gz"), WRITE),
    case("sample-out-png", lambda w: sample(w, out=w.out / "gen.png"), EXT),
    case("sample-out-no-extension", lambda w: sample(w, out=w.out / "generated"), EXT),
    case("sample-out-nhdr", lambda w: sample(w, out=w.out / "gen.nhdr"), r"\.nrrd|\.nii"),
    case("sample-out-existing-folder", lambda w: sample(w, out=w.out), FOLDER),
    case("sample-out-existing-folder-overwrite", lambda w: sample(w, "--overwrite", out=w.out), FOLDER),
    case("sample-out-existing-file", lambda w: sample(w, out=w.file("out/old.nii.gz", b"earlier result")),
         "overwrite"),
    case("counterfactual-out-is-file", lambda w: counterfactual(w, out=w.file("out/f0.txt")), FOLDER),
    case("counterfactual-out-not-empty", lambda w: counterfactual(w, out=_nonempty(w, "cf")), "overwrite|empty"),
    case("counterfactual-out-in-proc", lambda w: counterfactual(w, out="/proc/gem3d_cf"), WRITE),
    case("counterfactual-out-readonly", lambda w: counterfactual(w, out=_readonly_folder(w) / "cf"), WRITE,
         skip_if_root=True),
    case("enhance-out-is-file", lambda w: enhance(w, out=w.file("out/f0.nii.gz")), FOLDER),
    case("enhance-out-in-proc", lambda w: enhance(w, out="/proc/gem3d_enhanced"), WRITE),
    case("harmonize-out-in-sys", lambda w: harmonize(w, out="/sys/gem3d_harmonized"), WRITE),
    case("harmonize-out-under-a-file", lambda w: harmonize(w, out=w.file("out/f0") / "sub"), FOLDER + "|file"),
    case("demo-out-is-file", lambda w: demo(w, out=w.file("out/f0.txt")), FOLDER),
    case("demo-out-in-proc", lambda w: demo(w, out="/proc/gem3d_demo"), WRITE),
    case("demo-out-readonly", lambda w: demo(w, out=_readonly_folder(w) / "demo"), WRITE, skip_if_root=True),
    case("evaluate-out-is-file", lambda w: evaluate(w, out=w.file("out/f0.txt")), FOLDER),
    case("evaluate-out-in-proc", lambda w: evaluate(w, out="/proc/gem3d_metrics"), WRITE),
    case("convert-out-exists", lambda w: convert(w, out=_nonempty(w, "bundle")), "overwrite"),
]

OTHER = [
    case("sample-device-tpu", lambda w: sample(w, "--device", "tpu"), "device"),
    case("sample-device-cuda7", lambda w: sample(w, "--device", "cuda:7"), "cuda"),
    case("sample-device-garbage", lambda w: sample(w, "--device", "gpu please"), "device"),
    case("sample-precision-bf16-cpu", lambda w: sample(w, "--precision", "bf16"), "fp32"),
    case("sample-precision-fp16-cpu", lambda w: sample(w, "--precision", "fp16"), "fp32"),
    case("sample-steps-0", lambda w: sample(w, "--steps", "0"), "steps"),
    case("sample-steps-negative", lambda w: sample(w, "--steps", "-3"), "steps"),
    case("sample-eta-negative", lambda w: sample(w, "--eta", "-1"), "eta"),
    case("sample-eta-nan", lambda w: sample(w, "--eta", "nan"), "eta"),
    case("sample-position-1.5", lambda w: sample(w, "--position", "1.5"), "position"),
    case("sample-position-negative", lambda w: sample(w, "--position", "-0.1"), "position"),
    case("sample-position-nan", lambda w: sample(w, "--position", "nan"), "position"),
    case("sample-decode-chunk-0", lambda w: sample(w, "--decode-chunk", "0"), "decode"),
    case("sample-model-unknown-folder", lambda w: sample(w, "--model", w.root / "m404"), "model|bundle"),
    case("sample-model-without-config",
         lambda w: sample(w, "--model", w.file("model/vae.safetensors", b"\x00" * 16).parent), "config.json"),
    case("sample-model-is-checkpoint-file",
         lambda w: sample(w, "--model", w.file("model.ckpt", b"\x00" * 16)), "bundle|convert"),
    case("sample-mask-image-shape-mismatch",
         lambda w: sample(w, mask=w.volume("v14.nii.gz", w.mask_arr[:, :, :10])), "shape|geometry"),
    case("sample-mask-label-out-of-range",
         lambda w: sample(w, mask=w.volume("v12.nii.gz", np.where(w.mask_arr == 1, 9, w.mask_arr).astype(np.uint8))),
         "label"),
    case("sample-mask-label-negative",
         lambda w: sample(w, mask=w.volume("v11.nii.gz", np.where(w.mask_arr == 1, -1, w.mask_arr.astype(np.int16)))),
         "label"),
    case("sample-mask-non-integer",
         lambda w: sample(w, mask=w.volume("v02.nii.gz", w.mask_arr.astype(np.float32) * 0.5)), "integer"),
    case("sample-dtype-unknown", lambda w: sample(w, "--dtype", "float128"), "dtype"),
    case("sample-no-informed-slice", lambda w: sample(w, image=None), "informed|image"),
    case("sample-image-missing-file", lambda w: sample(w, image=w.data / "nope.nii.gz"), "no such|not found|exist"),
    case("sample-mask-missing-file", lambda w: sample(w, mask=w.data / "nope.nii.gz"), "no such|not found|exist"),
    case("sample-mask-is-folder", lambda w: sample(w, mask=w.masks), FOLDER + "|.nii"),
    case("sample-mask-folder-named-nii-gz",
         lambda w: sample(w, mask=(w.root / "d0.nii.gz").mkdir() or (w.root / "d0.nii.gz")), FOLDER),
    case("sample-image-png", lambda w: sample(w, image=w.file("data/photo.png", b"\x89PNG\r\n\x1a\n")), EXT),
    case("sample-image-gz-without-nii", lambda w: sample(w, image=w.file("data/image.gz", gzip.compress(b"x"))), EXT),
    case("counterfactual-mode-baseline",
         lambda w: counterfactual(w, "--mode", "baseline"), "gem3d"),
    case("counterfactual-no-informed", lambda w: counterfactual(w, informed=None), "informed-from|generate"),
    case("counterfactual-generate-negative", lambda w: counterfactual(w, "--generate", "-2", informed=None),
         "generate"),
    case("counterfactual-informed-steps-0",
         lambda w: counterfactual(w, "--generate", "1", "--informed-steps", "0", informed=None), "steps"),
    case("counterfactual-device-tpu", lambda w: counterfactual(w, "--device", "tpu"), "device"),
    case("counterfactual-precision-fp16-cpu", lambda w: counterfactual(w, "--precision", "fp16"), "fp32"),
    case("counterfactual-steps-0", lambda w: counterfactual(w, "--steps", "0"), "steps"),
    case("enhance-times-0", lambda w: enhance(w, "--times", "0"), "times"),
    case("enhance-position-range-reversed", lambda w: enhance(w, "--position-range", "0.8", "0.2"), "range"),
    case("enhance-position-1.5", lambda w: enhance(w, "--position", "1.5"), "position"),
    case("enhance-images-folder-missing", lambda w: enhance(w, images=w.root / "nope"), FOLDER + "|exist"),
    case("enhance-images-folder-empty",
         lambda w: enhance(w, images=(w.root / "e0").mkdir() or (w.root / "e0")), "no volume|empty"),
    case("enhance-unpaired",
         lambda w: enhance(w, masks=w.volume("m/other_case.nii.gz", w.mask_arr).parent), "pair"),
    case("enhance-steps-0", lambda w: enhance(w, "--steps", "0"), "steps"),
    case("enhance-device-cuda7", lambda w: enhance(w, "--device", "cuda:7"), "cuda"),
    case("enhance-precision-bf16-cpu", lambda w: enhance(w, "--precision", "bf16"), "fp32"),
    case("enhance-dtype-unknown", lambda w: enhance(w, "--dtype", "complex64"), "dtype"),
    case("enhance-pairs-csv-bad-header",
         lambda w: ["enhance", "--pairs", str(w.file("p.csv", b"a,b\n1,2\n")), "--out", str(w.out / "e"),
                    *SAMPLING], "case,image,mask|header"),
    case("harmonize-no-masks", lambda w: [a for a in harmonize(w) if a not in ("--masks", str(w.masks))], "masks"),
    case("harmonize-eta-negative", lambda w: harmonize(w, "--eta", "-1"), "eta"),
    case("harmonize-decode-chunk-0", lambda w: harmonize(w, "--decode-chunk", "0"), "decode"),
    case("harmonize-model-without-config",
         lambda w: harmonize(w, "--model", w.file("model/vae.safetensors", b"\x00" * 16).parent), "config.json"),
    case("demo-device-tpu", lambda w: demo(w, "--device", "tpu"), "device"),
    case("demo-steps-0", lambda w: demo(w, "--steps", "0"), "steps"),
    case("demo-precision-fp16-cpu", lambda w: demo(w, "--precision", "fp16"), "fp32"),
    case("demo-position-nan", lambda w: demo(w, "--position", "nan"), "position"),
    case("demo-model-unknown-folder", lambda w: demo(w, "--model", w.root / "m404"), "model|bundle"),
    case("evaluate-real-missing", lambda w: evaluate(w, real=w.root / "nope"), FOLDER + "|exist"),
    case("evaluate-slice-stride-0", lambda w: evaluate(w, "--slice-stride", "0"), "stride"),
    case("evaluate-radimagenet-without-weights", lambda w: evaluate(w, "--extractor", "radimagenet"), "weights"),
    case("evaluate-device-tpu", lambda w: evaluate(w, "--device", "tpu"), "device"),
    case("evaluate-generated-truncated",
         lambda w: evaluate(w, generated=write_into(w, "gen_bad", "truncated-gz", "case1_gen.nii.gz")), "truncated"),
    case("convert-no-checkpoints", lambda w: ["convert-official", "--out", str(w.out / "bundle")], "volume"),
    case("convert-volume-missing-file", lambda w: convert(w, volume=w.root / "nope.ckpt"), "no such|not found|exist"),
    case("convert-volume-not-a-checkpoint", lambda w: convert(w), "checkpoint"),
    case("convert-params-bad-json",
         lambda w: convert(w, "--params", w.file("params.json", b"{not json")), "json"),
]

INTERRUPTS = [
    case("sample-interrupted", lambda w: sample(w), "interrupt", exit=130, interrupt=True),
    case("sample-overwrite-interrupted",
         lambda w: sample(w, "--overwrite", out=w.file("out/old.nii.gz", b"earlier result")), "interrupt",
         exit=130, interrupt=True),
    case("counterfactual-interrupted", lambda w: counterfactual(w), "interrupt", exit=130, interrupt=True),
    case("counterfactual-generate-interrupted", lambda w: counterfactual(w, "--generate", "1", informed=None),
         "interrupt", exit=130, interrupt=True),
    case("enhance-interrupted", lambda w: enhance(w), "interrupt", exit=130, interrupt=True),
    case("harmonize-interrupted", lambda w: harmonize(w), "interrupt", exit=130, interrupt=True),
    case("demo-interrupted", lambda w: demo(w), "interrupt", exit=130, interrupt=True),
]


def write_into(ws: Workspace, folder: str, kind: str, name: str) -> Path:
    path = ws.broken(kind)
    target = ws.root / folder / name
    target.parent.mkdir(parents=True, exist_ok=True)
    path.rename(target)
    return target.parent


CLI_CASES = DATA_LOSS + SILENT_WRONG + BROKEN_FILES + LATE_ERRORS + OTHER + INTERRUPTS


@pytest.mark.parametrize("c", CLI_CASES)
def test_cli_bad_input(c: Case, ws: Workspace, sampler_stub: Stub, capsys):
    if c.skip_if_root and IS_ROOT:
        pytest.skip("root ignores file permissions (the /proc and /sys cases cover unwritable folders)")
    argv = c.argv(ws)
    sampler_stub.interrupt = c.interrupt
    before = snapshot(ws.root)

    run = run_cli(argv, capsys)

    lines = [line for line in run.err.splitlines() if line.strip()]
    first = lines[0] if lines else ""
    problems = []
    if run.escaped:
        last = run.escaped.strip().splitlines()[-1]
        problems.append(f"TRACEBACK escaped main(): {last}")
    elif "Traceback" in run.err or "Traceback" in run.out:
        problems.append("TRACEBACK printed")
    if run.code != c.exit:
        problems.append(f"EXIT {run.code} (expected {c.exit})")
    if len(lines) != 1:
        problems.append(f"STDERR has {len(lines)} non-empty lines (expected 1)")
    missing = missing_keywords(first, c.keywords, ws.root)
    if missing:
        problems.append(f"MESSAGE lacks {missing}")
    if sampler_stub.calls and not c.interrupt:
        problems.append(f"GENERATION reached ({sampler_stub.calls})")
    if c.interrupt and not sampler_stub.calls:
        problems.append("the interrupt stub was never reached (the good inputs were refused?)")
    problems += snapshot_problems(before, snapshot(ws.root), ws.root, allow_new_dirs=c.interrupt)

    assert not problems, " | ".join(problems) + f"\n  stderr[0]: {first!r}\n  argv: {argv}\n  stderr:\n{run.err}"


# ------------------------------------------------------------------------------------- good controls
# The cases above differ from these by one defect each: these must get as far as the sampler.
CONTROLS = [
    pytest.param(lambda w: sample(w), id="sample"),
    pytest.param(lambda w: sample(w, image=None, informed=w.other), id="sample-informed-from"),
    pytest.param(lambda w: counterfactual(w, image=w.image), id="counterfactual"),
    pytest.param(lambda w: enhance(w), id="enhance"),
    pytest.param(lambda w: harmonize(w), id="harmonize"),
    pytest.param(lambda w: demo(w), id="demo"),
]


@pytest.mark.parametrize("argv", CONTROLS)
def test_good_inputs_reach_the_sampler(argv, ws: Workspace, sampler_stub: Stub, capsys):
    run = run_cli(argv(ws), capsys)
    assert sampler_stub.calls, f"good inputs were refused before generation: exit {run.code}\n{run.err}"
    assert "Traceback" not in run.err


# ---------------------------------------------------------------------------------------- the reader
GET_READER_ARGS = [
    pytest.param(lambda w: 123, id="int"),
    pytest.param(lambda w: None, id="None"),
    pytest.param(lambda w: [], id="empty-list"),
    pytest.param(lambda w: [123], id="list-of-int"),
    pytest.param(lambda w: [str(w.image), 123], id="list-path-and-int"),
    pytest.param(lambda w: [str(w.image), None], id="list-path-and-None"),
    pytest.param(lambda w: 3.5, id="float"),
    pytest.param(lambda w: {"path": str(w.image)}, id="dict"),
    pytest.param(lambda w: object(), id="object"),
    pytest.param(lambda w: b"/tmp/volume.nii.gz", id="bytes-path"),
    pytest.param(lambda w: str(w.data), id="directory"),
    pytest.param(lambda w: w.data, id="directory-Path"),
    pytest.param(lambda w: str(w.file("photo.png", b"\x89PNG\r\n\x1a\n")), id="png"),
    pytest.param(lambda w: str(w.root / "missing.nii.gz"), id="missing-nii-gz"),
    pytest.param(lambda w: "", id="empty-string"),
    pytest.param(lambda w: "\x00.nii.gz", id="nul-in-path"),
    pytest.param(lambda w: iter([str(w.image)]), id="iterator"),
]


@pytest.mark.parametrize("make", GET_READER_ARGS)
def test_napari_get_reader_never_raises(make, ws: Workspace):
    from napari_gem3d._napari.reader import napari_get_reader

    value = make(ws)
    result = napari_get_reader(value)
    assert result is None or callable(result)


def _broken_path(kind: str):
    return lambda w: w.broken(kind)


READER_FILES = [
    pytest.param(_broken_path(kind), kws, id=kind) for kind, kws in BROKEN_KEYWORDS.items()
] + [
    pytest.param(lambda w: w.root / "missing.nii.gz", ("no such|not found|exist",), id="missing-file"),
    pytest.param(lambda w: (w.root / "d0.nii.gz").mkdir() or (w.root / "d0.nii.gz"), (FOLDER,),
                 id="directory-named-nii-gz"),
    pytest.param(lambda w: [w.image, w.broken("truncated-gz")], ("truncated",), id="list-good-and-truncated"),
]


@pytest.mark.parametrize("make, keywords", READER_FILES)
def test_napari_reader_broken_file(make, keywords, ws: Workspace):
    import nrrd  # noqa: F401 - imported before the clock starts

    import napari_gem3d._napari.layers  # noqa: F401
    import napari_gem3d.io  # noqa: F401
    from napari_gem3d._napari.reader import napari_get_reader

    target = make(ws)
    paths = target if isinstance(target, list) else [target]
    arg = [str(p) for p in paths] if isinstance(target, list) else str(target)
    reader = napari_get_reader(arg)
    assert callable(reader), "a file with a NIfTI/NRRD name must get the reader (which then explains the problem)"

    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        reader(arg)
    except BaseException as exc:  # noqa: BLE001 - judged below
        error = exc
    else:
        error = None
    finally:
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()

    assert error is not None, "the reader accepted a broken file"
    message = str(error).strip()
    problems = []
    if not isinstance(error, (ValueError, OSError)):
        problems.append(f"raised {type(error).__module__}.{type(error).__name__} (not a ValueError/OSError)")
    if not message:
        problems.append(f"{type(error).__name__} with an empty message")
    if Path(paths[-1]).name not in message:
        problems.append(f"message does not name the file {Path(paths[-1]).name!r}")
    missing = missing_keywords(message.splitlines()[0] if message else "", keywords, ws.root)
    if missing:
        problems.append(f"message lacks {missing}")
    if elapsed > 1.0:
        problems.append(f"took {elapsed:.2f} s")
    if peak > 256 * 2**20:
        problems.append(f"allocated {peak / 2**20:.0f} MiB")
    assert not problems, " | ".join(problems) + f"\n  {type(error).__name__}: {message!r}"


def test_napari_reader_reads_the_good_fixture(ws: Workspace):
    from napari_gem3d._napari.reader import napari_get_reader

    reader = napari_get_reader([str(ws.image), str(ws.mask)])
    layers = reader([str(ws.image), str(ws.mask)])
    assert [kind for _, _, kind in layers] == ["image", "labels"]
