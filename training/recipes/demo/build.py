"""Case pairs for the demo recipe (written once as NIfTI image/mask pairs) and the bundled demo case.

Training: each training subject gives ``VARIANTS`` volumes: variant 0 as it is (brain1 keeps its real
tumour), the others with 1-3 synthetic tumours at random places (a fixed seed per subject and variant).
With ``warped`` > 0 each subject also gives that many new anatomies (``{subject}_w{k}``): the subject
warped and re-contrasted (:mod:`training.data.anatomy_variants`), then 0-3 synthetic tumours.
Held out: Colin27 as it is and with one synthetic tumour.
Demo case: the ITK KmeansTest T1 (Apache-2.0) with one synthetic tumour, cropped to the brain plus a margin.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from napari_gem3d.io import write_volume
from napari_gem3d.volume import Volume

from ...data.anatomy_variants import anatomy_variant
from ...data.preprocess import crop_box, crop_volume
from . import subjects
from .tumours import add_tumours

VARIANTS = 8
BRAIN1_SLICES = (7, 25)  # brain1's lower slices are skull base and neck: the heuristic mask fails there
DEMO_CASE_NAME = "itk_t1 (ITK KmeansTest T1) with one synthetic tumour"
VERSION = 3  # 3: warped variants with a random monotone contrast curve
STAMP = "done.json"  # written last: what was built


def _subject_volumes(subject: subjects.Subject) -> tuple[Volume, np.ndarray]:
    image, tissue = subject.image, subject.tissue
    if subject.name == "brain1":
        box = (slice(None), slice(None), slice(*BRAIN1_SLICES))
        image, tissue = crop_volume(image, box), np.ascontiguousarray(tissue[box])
    return image, tissue


def _write_pair(raw: Path, name: str, image: Volume, labels: np.ndarray) -> None:
    write_volume(image.with_array(image.array.astype(np.float32)), raw / "images" / f"{name}.nii.gz", overwrite=True)
    write_volume(image.with_array(labels.astype(np.int16)), raw / "masks" / f"{name}.nii.gz", overwrite=True)


def built_cases(raw: Path) -> dict:
    """What :func:`build_cases` wrote under ``raw`` (version, warped copies per subject, the case listing),
    or {} when it has not finished there."""
    stamp = raw / STAMP
    return json.loads(stamp.read_text()) if stamp.is_file() else {}


def build_cases(raw: Path, warped: int = 0) -> Path:
    """Write every training and held-out pair under ``raw/{images,masks}`` (skipped when up to date)."""
    done = built_cases(raw)
    if done:
        if done.get("warped", 0) != warped:  # stale pairs would stay in the folder and be trained on
            for old in raw.glob("*/*_w*.nii.gz"):
                old.unlink()
        elif done.get("version") == VERSION:
            return raw
    (raw / "images").mkdir(parents=True, exist_ok=True)
    (raw / "masks").mkdir(parents=True, exist_ok=True)
    listing = {}
    for s_index, subject in enumerate(subjects.training_subjects()):
        image, tissue = _subject_volumes(subject)
        for v in range(VARIANTS):
            rng = np.random.default_rng([17, s_index, v])
            count = 0 if v == 0 else int(rng.integers(1, 4))
            img, lab = add_tumours(np.asarray(image.array, np.float32), tissue, image.spacing, rng, count)
            name = f"{subject.name}_v{v}"
            _write_pair(raw, name, image.with_array(img), lab)
            listing[name] = {"subject": subject.name, "synthetic_tumours": count, "source": subject.source}
        for k in range(warped):
            rng = np.random.default_rng([19, s_index, k])
            img, lab = anatomy_variant(np.asarray(image.array, np.float32), tissue, image.affine, rng)
            count = int(rng.integers(0, 4))
            img, lab = add_tumours(img, lab, image.spacing, rng, count)
            name = f"{subject.name}_w{k}"
            _write_pair(raw, name, image.with_array(img), lab)
            listing[name] = {"subject": subject.name, "synthetic_tumours": count, "source": subject.source,
                             "warped": True}
    held = subjects.heldout_subject()
    _write_pair(raw, "colin27", held.image, held.tissue)
    img, lab = add_tumours(np.asarray(held.image.array, np.float32), held.tissue, held.image.spacing,
                           np.random.default_rng([17, 99]), 1)
    _write_pair(raw, "colin27_tumour", held.image.with_array(img), lab)
    listing["colin27"] = {"subject": "colin27", "synthetic_tumours": 0, "held_out": True}
    listing["colin27_tumour"] = {"subject": "colin27", "synthetic_tumours": 1, "held_out": True}
    (raw / STAMP).write_text(json.dumps({"version": VERSION, "warped": warped, "cases": listing}, indent=1))
    return raw


def demo_case_volumes() -> tuple[Volume, Volume]:
    """The demo case: ITK KmeansTest T1 + one synthetic tumour, cropped to the brain + 3 voxels."""
    subject = subjects.itk_t1()
    img, lab = add_tumours(np.asarray(subject.image.array, np.float32), subject.tissue, subject.image.spacing,
                           np.random.default_rng([17, 2024]), 1)
    box = crop_box(img, lab, "labels", 3, 0)
    image = crop_volume(subject.image.with_array(np.rint(img).astype(np.int16)), box)
    mask = crop_volume(subject.image.with_array(lab.astype(np.uint8)), box)
    return image, mask


def write_demo_case(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    image, mask = demo_case_volumes()
    prov = {"source": "ITK KmeansTest_T1UCharRaw.nii.gz (Apache-2.0), tissue by multi-Otsu in the shipped "
                      "skull-strip mask, one synthetic tumour (training/recipes/demo)", "labels": "demo_labels()"}
    write_volume(image, folder / "image.nii.gz", provenance=prov, overwrite=True)
    write_volume(mask, folder / "mask.nii.gz", provenance=prov, overwrite=True)
