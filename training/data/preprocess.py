"""Raw case -> cached model-grid arrays (no nnU-Net).

Steps, in order:

1. read the image (4-D: the chosen modality) and the mask (labels mapped by ``label_map``);
2. optionally add the outside-body label (``napari_gem3d.masks.outside_from_image``);
3. crop the source volume to the non-zero / body / labelled (not outside) region plus a margin (the
   affine follows the crop);
4. fit the intensity window on the cropped image as the sampler does on its input
   (``IntensityNorm.fit(image.array)``), so a volume cropped the same way sees the same [-1, 1] scale
   at inference;
5. reorient to the model slice axis and resize in-plane, keeping z (``napari_gem3d.volume.model_grid`` /
   ``to_model``: the one implementation the sampler uses), then normalise;
6. write ``image.npy`` (float32, [-1, 1]), ``mask.npy`` (int16) and ``meta.json`` to
   ``cache_dir/<key>/`` atomically. The key is a sha256 of the input files' contents and every setting,
   so a changed file or setting gives a new entry and an unchanged one is read back.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from napari_gem3d.files import file_sha256
from napari_gem3d.masks import LabelSpec, body_region, outside_from_image
from napari_gem3d.volume import IntensityNorm, ModelGrid, Volume, model_frame_affine, model_grid, to_model

from ..config import Config
from .sources import RawCase, read_image, read_mask

CACHE_VERSION = 2


@dataclass(frozen=True)
class Settings:
    """Everything besides the input files that changes the cached arrays."""

    image_size: int
    slice_axis: str
    crop: str
    crop_margin: int
    intensity: tuple[tuple[str, object], ...]
    outside: str
    outside_label: int
    body_label: int

    @classmethod
    def from_config(cls, cfg: Config) -> Settings:
        d = cfg.data
        return cls(d.image_size, d.slice_axis, d.crop, d.crop_margin, tuple(sorted(d.intensity.items())),
                   d.outside, d.outside_label, d.body_label)

    @property
    def norm(self) -> IntensityNorm:
        return IntensityNorm.from_dict(dict(self.intensity))


@dataclass
class CachedCase:
    """One preprocessed case: ``image`` (Z, h, w) float32 in [-1, 1], ``mask`` (Z, h, w) int16."""

    name: str
    folder: Path
    meta: dict

    @cached_property
    def image(self) -> np.ndarray:
        return np.load(self.folder / "image.npy", mmap_mode="r")

    @cached_property
    def mask(self) -> np.ndarray:
        return np.load(self.folder / "mask.npy", mmap_mode="r")

    @property
    def num_slices(self) -> int:
        return int(self.meta["model_shape"][0])

    def grid(self) -> ModelGrid:
        """The model grid of the cropped source volume (rebuilt from the recorded geometry)."""
        src = self.meta["cropped"]
        ref = Volume(np.zeros(src["shape"], np.uint8), np.asarray(src["affine"]))
        return model_grid(ref, self.meta["image_size"], self.meta["slice_axis"])


def cache_key(case: RawCase, settings: Settings) -> str:
    payload = {
        "version": CACHE_VERSION,
        "image": file_sha256(case.image),
        "mask": file_sha256(case.mask),
        "modality": case.modality,
        "label_map": list(case.label_map),
        "settings": [list(x) if isinstance(x, tuple) else x for x in settings.__dict__.values()],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


def crop_box(image: np.ndarray, mask: np.ndarray, how: str, margin: int, outside_label: int) -> tuple[slice, ...]:
    """Bounding box of the region to keep, with a margin: ``nonzero`` image voxels, the ``body``
    (largest Otsu component) or the ``labels`` that are not ``outside_label``; labelled voxels always."""
    if how == "none":
        return tuple(slice(0, n) for n in image.shape)
    labelled = (mask != outside_label) & (mask != 0)
    keep = {"nonzero": lambda: image != 0, "body": lambda: body_region(image), "labels": lambda: labelled}[how]()
    keep = keep | labelled
    if not keep.any():
        raise ValueError("nothing to keep when cropping: the image is empty (all zero); use data.crop: none")
    idx = np.nonzero(keep)
    return tuple(slice(max(0, int(i.min()) - margin), min(n, int(i.max()) + 1 + margin))
                 for i, n in zip(idx, image.shape, strict=False))


def crop_volume(volume: Volume, box: tuple[slice, ...]) -> Volume:
    """The sub-volume ``box`` with its affine moved to the new first voxel (geometry kept)."""
    box = tuple(slice(*s.indices(n)[:2]) for s, n in zip(box, volume.shape, strict=False))
    shift = np.eye(4)
    shift[:3, 3] = [s.start for s in box]
    return Volume(np.ascontiguousarray(volume.array[box]), volume.affine @ shift, dict(volume.header))


def preprocess_case(case: RawCase, settings: Settings, labels: LabelSpec) -> tuple[dict[str, np.ndarray], dict]:
    """Arrays and metadata for one case (no caching)."""
    image = read_image(case.image, case.modality)
    mask = read_mask(case.mask, case.label_map)
    if image.shape != mask.shape or not np.allclose(image.affine, mask.affine, atol=1e-3):
        raise ValueError(
            f"case {case.name}: image {image.shape} and mask {mask.shape} do not share one geometry "
            "(shape and affine); resample the mask onto the image first"
        )
    img = np.asarray(image.array, dtype=np.float32)
    m = np.asarray(mask.array)
    if settings.outside == "from_image":
        m = outside_from_image(img, m, outside_label=settings.outside_label, body_label=settings.body_label)
        mask = mask.with_array(m)
    labels.validate(m)
    box = crop_box(img, m, settings.crop, settings.crop_margin, settings.outside_label)
    cimg, cmask = crop_volume(image.with_array(img), box), crop_volume(mask, box)
    fitted = settings.norm.fit(np.asarray(cimg.array))
    grid = model_grid(cimg, settings.image_size, settings.slice_axis)
    raw = to_model(cimg, grid, "image", pad_value=float(fitted.lo))
    model_image = fitted.forward(raw)
    model_mask = to_model(cmask, grid, "labels", pad_value=settings.outside_label).astype(np.int16)
    meta = {
        "name": case.name,
        "image_path": str(case.image),
        "mask_path": str(case.mask),
        "modality": case.modality,
        "source": {"shape": list(image.shape), "affine": image.affine.tolist()},
        "crop_box": [[s.start, s.stop] for s in box],
        "cropped": {"shape": list(cimg.shape), "affine": cimg.affine.tolist()},
        "image_size": settings.image_size,
        "slice_axis": settings.slice_axis,
        "model_shape": list(model_image.shape),
        "model_affine": model_frame_affine(grid).tolist(),
        "intensity": fitted.to_dict(),
        "labels_present": sorted(int(v) for v in np.unique(model_mask)),
    }
    return {"image": model_image.astype(np.float32), "mask": model_mask}, meta


def _write_entry(folder: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", arr)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            os.replace(tmp, folder)
        except OSError:
            if not (folder / "meta.json").is_file():  # another process won the race: keep its entry
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def cached_case(case: RawCase, settings: Settings, labels: LabelSpec, cache_dir: Path) -> CachedCase:
    """Preprocess ``case`` unless its cache entry exists; return the cached case."""
    folder = Path(cache_dir) / f"{case.name}-{cache_key(case, settings)}"
    if not (folder / "meta.json").is_file():
        arrays, meta = preprocess_case(case, settings, labels)
        _write_entry(folder, arrays, meta)
    meta = json.loads((folder / "meta.json").read_text())
    return CachedCase(case.name, folder, meta)


def prepare_cases(cfg: Config, labels: LabelSpec) -> list[CachedCase]:
    """All configured cases, preprocessed and cached (in config order)."""
    from .sources import raw_cases

    settings = Settings.from_config(cfg)
    cache = cfg.path(cfg.data.cache_dir)
    return [cached_case(c, settings, labels, cache) for c in raw_cases(cfg)]
