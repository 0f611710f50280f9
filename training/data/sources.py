"""Raw cases from the three supported layouts: MSD/BraTS, image/mask folders, a CSV of paths."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from napari_gem3d.cases import pair_cases, volume_files
from napari_gem3d.io import read_volume
from napari_gem3d.volume import Volume

from ..config import Config, SourceConfig


@dataclass(frozen=True)
class RawCase:
    name: str
    image: Path
    mask: Path
    modality: int | None = None
    label_map: tuple[tuple[int, int], ...] = ()


def _msd_cases(root: Path, modality: int | None) -> list[tuple[str, Path, Path]]:
    images, labels = root / "imagesTr", root / "labelsTr"
    if not images.is_dir() or not labels.is_dir():
        raise FileNotFoundError(f"{root}: an MSD/BraTS dataset needs imagesTr/ and labelsTr/ folders")
    by_name = {p.name: p for p in volume_files(labels)}
    out = []
    for img in volume_files(images):
        name = img.name
        mask = by_name.get(name)
        if mask is None and "_0000" in name:  # nnU-Net style split modalities: case_0000.nii.gz
            if modality is not None and not name.replace(".nii.gz", "").endswith(f"_{modality:04d}"):
                continue
            mask = by_name.get(name.rsplit("_", 1)[0] + ".nii.gz")
        if mask is None:
            raise FileNotFoundError(f"{img}: no label file {labels / name}")
        out.append((name.split(".")[0], img, mask))
    if (root / "dataset.json").is_file() and modality is not None:
        meta = json.loads((root / "dataset.json").read_text())
        mods = meta.get("modality") or meta.get("channel_names") or {}
        if mods and str(modality) not in {str(k) for k in mods}:
            raise ValueError(f"{root}: modality {modality} not in dataset.json modalities {mods}")
    return out


def raw_cases(cfg: Config) -> list[RawCase]:
    """Every case of every configured source (names must be unique across sources)."""
    cases: list[RawCase] = []
    for src in cfg.data.sources:
        cases.extend(_source_cases(cfg, src))
    names = [c.name for c in cases]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"case names must be unique across data sources; duplicated: {dupes[:10]}")
    if not cases:
        raise ValueError("no training cases: add data.sources to the config")
    return cases


def _source_cases(cfg: Config, src: SourceConfig) -> list[RawCase]:
    lm = tuple(sorted((int(k), int(v)) for k, v in (src.label_map or {}).items()))
    if src.kind == "msd":
        found = _msd_cases(cfg.path(src.root), src.modality)
    else:
        pairs = pair_cases(masks=cfg.path(src.masks), images=cfg.path(src.images)) if src.kind == "pairs" \
            else pair_cases(pairs=cfg.path(src.path))
        found = []
        for c in pairs:
            if c.image is None:
                raise ValueError(f"case {c.name}: training needs an image for every mask")
            found.append((c.name, c.image, c.mask))
    return [RawCase(n, Path(i), Path(m), src.modality, lm) for n, i, m in found]


def read_image(path: Path, modality: int | None) -> Volume:
    """A 3-D image; for a 4-D file (MSD multi-modal) the ``modality`` channel of the last axis."""
    img = nib.load(str(path)) if str(path).endswith((".nii", ".nii.gz")) else None
    if img is not None and len(img.shape) == 4:
        if modality is None:
            raise ValueError(f"{path} is 4-D with {img.shape[3]} channels: set the source's modality (0..)")
        if not 0 <= modality < img.shape[3]:
            raise ValueError(f"{path}: modality {modality} outside [0, {img.shape[3]})")
        arr = np.asarray(img.dataobj[..., modality], dtype=np.float32)
        return Volume(arr, img.affine, {"source": str(path), "modality": modality})
    return read_volume(path)


def read_mask(path: Path, label_map: tuple[tuple[int, int], ...]) -> Volume:
    vol = read_volume(path)
    arr = np.asarray(vol.array)
    if arr.dtype.kind == "f":
        rounded = np.rint(arr)
        if not np.array_equal(rounded, arr):
            raise ValueError(f"{path}: the mask holds non-integer values")
        arr = rounded
    arr = arr.astype(np.int16)
    if label_map:
        out = arr.copy()
        for src, dst in label_map:
            out[arr == src] = dst
        arr = out
    return vol.with_array(arr)
