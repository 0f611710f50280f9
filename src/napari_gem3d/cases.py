"""Which files make a case: images paired with masks by name or by a CSV, and generated volumes with real ones.

Pairing images and masks (:func:`pair_cases`)
    1. ``--pairs CSV`` with the header ``case,image,mask`` (paths absolute or relative to the CSV's folder;
       ``image`` may be empty where no image is needed); otherwise
    2. by file name. A file's *key* is its name without ``.nii.gz`` / ``.nii`` / ``.nrrd`` / ``.nhdr``;
       one role suffix is removed: images ``_image``, ``_img``, ``_0000`` (nnU-Net channel 0); masks
       ``_mask``, ``_seg``, ``_label``, ``_labels``. Files with equal keys form a case named by the key
       (``brain7.nii.gz`` + ``brain7.nii.gz``, ``brain7_image.nii.gz`` + ``brain7_mask.nii.gz``,
       ``brain7_0000.nii.gz`` + ``brain7.nii.gz``). Hidden files (``.*``, e.g. unfinished temporary
       files) are ignored. Any file without a partner is an error that names it.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .io import READ_SUFFIXES, volume_suffix

IMAGE_ROLES = ("_image", "_img", "_0000")
MASK_ROLES = ("_mask", "_seg", "_labels", "_label")


# ------------------------------------------------------------------------------------------------ files
def case_key(path: str | Path, roles: Sequence[str] = ()) -> str:
    """File name without its volume suffix and without one trailing role suffix from ``roles``."""
    name = Path(path).name
    key = name[: len(name) - len(volume_suffix(name))]
    for role in roles:
        if key.endswith(role) and len(key) > len(role):
            return key[: -len(role)]
    return key


def volume_files(folder: str | Path) -> list[Path]:
    """Volume files (NIfTI/NRRD) directly in ``folder``, sorted, hidden files excluded."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"not a folder: {folder}")
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and volume_suffix(p) in READ_SUFFIXES
    )
    if not files:
        raise ValueError(f"no volume files (.nii.gz, .nii, .nrrd, .nhdr) in {folder}")
    return files


def _keyed(files: Iterable[Path], roles: Sequence[str], what: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in files:
        key = case_key(f, roles)
        if key in out:
            raise ValueError(
                f"two {what} files map to case {key!r}: {out[key].name} and {f.name}; rename one"
            )
        out[key] = f
    return out


@dataclass(frozen=True)
class Case:
    name: str
    mask: Path
    image: Path | None = None


def _pairs_from_csv(path: Path) -> list[Case]:
    base = path.parent
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not {"case", "mask"} <= set(rows[0]):
        raise ValueError(f"{path}: a pairs CSV needs the header case,image,mask")

    def resolve(text: str | None) -> Path | None:
        return None if not text else (Path(text) if Path(text).is_absolute() else base / text)

    cases = [Case(r["case"], resolve(r["mask"]), resolve(r.get("image"))) for r in rows]  # type: ignore[arg-type]
    for c in cases:
        for p in (c.mask, c.image):
            if p is not None and not p.is_file():
                raise FileNotFoundError(f"{path}: case {c.name}: no such file {p}")
    if len({c.name for c in cases}) != len(cases):
        raise ValueError(f"{path}: case names must be unique")
    return sorted(cases, key=lambda c: c.name)


def pair_cases(
    masks: str | Path | None = None, images: str | Path | None = None, pairs: str | Path | None = None
) -> list[Case]:
    """Cases from a pairs CSV, or masks (and images) paired by name (see the module docstring)."""
    if pairs is not None:
        return _pairs_from_csv(Path(pairs))
    if masks is None:
        raise ValueError("give a masks folder or a pairs CSV")
    mask_map = _keyed(volume_files(masks), MASK_ROLES, "mask")
    if images is None:
        return [Case(k, p) for k, p in sorted(mask_map.items())]
    image_map = _keyed(volume_files(images), IMAGE_ROLES, "image")
    lonely_masks = sorted(set(mask_map) - set(image_map))
    lonely_images = sorted(set(image_map) - set(mask_map))
    if lonely_masks or lonely_images:
        raise ValueError(
            "cannot pair images and masks by name: masks without image "
            f"{[mask_map[k].name for k in lonely_masks][:5]}, "
            f"images without mask {[image_map[k].name for k in lonely_images][:5]}. Name them alike "
            "(case.nii.gz in both folders, or case_image / case_mask), or pass --pairs CSV (case,image,mask)."
        )
    return [Case(k, mask_map[k], image_map[k]) for k in sorted(mask_map)]


def case_inputs(cases: Sequence[Case], pairs: str | Path | None = None) -> list[tuple[str, Path]]:
    """Every input file of ``cases`` (and the pairs CSV) as (label, path), for the output-folder check."""
    files = [("--pairs", Path(pairs))] if pairs is not None else []
    for c in cases:
        files += [(f"case {c.name} mask", c.mask)] + ([(f"case {c.name} image", c.image)] if c.image else [])
    return files


def pair_generated(real: Sequence[Path], generated: Sequence[Path]) -> list[tuple[Path, Path]]:
    """(real, generated) pairs: generated ``<case>`` or ``<case>_<anything>`` pairs with real ``<case>``.

    The real case key drops an image role suffix (``_image``, ``_img``, ``_0000``); the longest matching
    case name wins. A generated file that matches no real file is an error.
    """
    real_map = _keyed(real, IMAGE_ROLES, "real")
    names = sorted(real_map, key=len, reverse=True)
    pairs, lonely = [], []
    for g in generated:
        key = case_key(g)
        match = next((n for n in names if key == n or key.startswith(n + "_")), None)
        if match is None:
            lonely.append(g.name)
        else:
            pairs.append((real_map[match], g))
    if lonely:
        raise ValueError(
            f"generated files with no real volume of the same case: {lonely[:5]}; name them <case>.nii.gz or "
            "<case>_<anything>.nii.gz after the real <case>.nii.gz"
        )
    return pairs
