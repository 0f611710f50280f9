"""Accuracy of ``gem3d make-mask`` on the offline real brains: prints ONE JSON line.

- brain masks: Dice of deepbet and of the fallback against the reference brain mask (Colin27 ch2 with
  ch2bet > 0, ITK KmeansTest T1 with its skull-strip mask, MNI152 2009a with its brain mask);
- tissue: Dice of CSF / GM / WM of :func:`napari_gem3d.make_mask.segment_tissue` inside the *reference*
  brain mask (so brain-mask errors do not enter) against the reference tissue maps of
  ``training/recipes/demo/subjects.py`` (MNI152: arg-max of the GM/WM probability maps, CSF = rest of
  the brain; ITK T1 and Colin27: 3-class multi-Otsu inside the brain mask), plus the same with the full
  pipeline (own brain mask) for MNI152;
- brain1 (pyradiomics, 6.5 mm slices, lesion-only label): make-mask with its lesion, voxel counts per
  label and the split, and a montage to ``--montage`` (docs/images/make_mask_brain1.png).

    python benchmarks/bench_make_mask.py --montage docs/images/make_mask_brain1.png

Colin27 is used at 1 mm (its own grid). Subjects whose data are missing are reported as missing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from napari_gem3d.make_mask import (  # noqa: E402
    brain_mask_deepbet,
    brain_mask_fallback,
    brain_mask_stripped,
    deepbet_weights,
    make_model_mask,
    segment_tissue,
)
from napari_gem3d.models.card import ModelCard  # noqa: E402
from napari_gem3d.volume import Volume  # noqa: E402

DEMO_NAMES = {0: "outside brain", 1: "CSF", 2: "grey matter", 3: "white matter", 4: "oedema",
              5: "enhancing tumour rim", 6: "necrotic tumour core"}
DEMO_CARD = ModelCard(modality="MR", contrast="T1", body_region="brain", tissue_labels=(1, 2, 3),
                      lesion_labels=(4, 5, 6), background_labels=(0,))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return round(2.0 * int((a & b).sum()) / s, 4) if s else float("nan")


def tissue_dice(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    return {name: dice(pred == k, ref == k) for k, name in ((1, "csf"), (2, "gm"), (3, "wm"))}


def subjects() -> dict[str, tuple[Volume, np.ndarray, np.ndarray, str]]:
    """name -> (image, reference brain mask, reference tissue 0..3, whether the image has a skull)."""
    from nibabel.processing import resample_to_output  # noqa: F401  (imported by subjects.colin27)
    from scipy import ndimage
    from training.recipes.demo import subjects as S

    out: dict = {}
    try:
        s = S.mni152()
        out["mni152"] = (s.image, s.brain, s.tissue, "skull-stripped")
    except Exception as exc:  # noqa: BLE001
        out["mni152"] = repr(exc)
    try:
        s = S.itk_t1()
        out["itk_t1"] = (s.image, s.brain, s.tissue, "with skull")
    except Exception as exc:  # noqa: BLE001
        out["itk_t1"] = repr(exc)
    try:
        import nibabel as nib

        ch2 = nib.load(str(S.MRICRON / "ch2.nii.gz"))
        bet = nib.load(str(S.MRICRON / "ch2bet.nii.gz"))
        img = np.asarray(ch2.dataobj, np.float32)
        brain = ndimage.binary_fill_holes(np.asarray(bet.dataobj) > 0)
        out["colin27"] = (Volume(img, ch2.affine), brain, S.tissue_by_otsu(img, brain), "with skull")
    except Exception as exc:  # noqa: BLE001
        out["colin27"] = repr(exc)
    return out


def run_brain1(montage: Path | None) -> dict:
    from training.recipes.demo.subjects import brain1_dir

    from napari_gem3d.io import read_volume

    d = brain1_dir()
    if not (d / "brain1_image.nrrd").is_file():
        return {"missing": str(d)}
    image = read_volume(d / "brain1_image.nrrd")
    lesion = read_volume(d / "brain1_label.nrrd")
    t = time.perf_counter()
    mask, report = make_model_mask(image, DEMO_CARD, DEMO_NAMES, lesion=lesion)
    seconds = time.perf_counter() - t
    if montage is not None:
        from napari_gem3d.montage import save_montage

        les = np.asarray(lesion.array) > 0
        centre = np.argwhere(les).mean(axis=0).round().astype(int)  # slices through the tumour
        index = _montage_index(image, centre)
        save_montage([("image", image), ("make-mask", mask)], montage, kinds=["image", "labels"],
                     labels_max=max(DEMO_NAMES),
                      title="brain1: gem3d make-mask (0 out, 1 CSF, 2 GM, 3 WM, 4 oedema, 5 rim, 6 core)",
                      index=index)
    return {"seconds": round(seconds, 1), "counts": report["counts"], "lesions": report["lesions"],
            "class_means": report["class_means"], "method": report["method"], "warnings": report["warnings"]}


def _montage_index(volume: Volume, voxel: np.ndarray) -> dict[str, int]:
    """Per view, the slice index in the display orientation of montage.planes that holds ``voxel``."""
    from nibabel.orientations import apply_orientation

    from napari_gem3d.volume import model_grid

    index = {}
    marker = np.zeros(volume.shape, np.uint8)
    marker[tuple(voxel)] = 1
    for view in ("S", "A", "R"):
        grid = model_grid(volume, (1, 1), view)
        oriented = apply_orientation(marker, grid.ornt)
        index[view] = int(np.argwhere(oriented)[0][0])
    return index


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--montage", type=Path, default=None, help="write the brain1 montage PNG here")
    p.add_argument("--subjects", default="mni152,itk_t1,colin27", help="comma-separated subjects to measure")
    args = p.parse_args(argv)
    wanted = args.subjects.split(",") if args.subjects else []
    have_deepbet = deepbet_weights() is not None
    result: dict = {"bench": "make_mask", "deepbet": have_deepbet, "subjects": {}}
    t0 = time.perf_counter()
    for name, item in subjects().items():
        if name not in wanted:
            continue
        if isinstance(item, str):
            result["subjects"][name] = {"missing": item}
            continue
        image, ref_brain, ref_tissue, kind = item
        row: dict = {"kind": kind, "shape": list(image.shape), "spacing": [round(s, 3) for s in image.spacing]}
        masks = {"fallback": brain_mask_fallback(image)}
        if have_deepbet:
            t = time.perf_counter()
            masks["deepbet"] = brain_mask_deepbet(image)
            row["deepbet_s"] = round(time.perf_counter() - t, 1)
        if kind == "skull-stripped":
            masks["none"] = brain_mask_stripped(image)
        row["brain_dice"] = {k: dice(m, ref_brain) for k, m in masks.items()}
        img = np.asarray(image.array, np.float32)
        seg = segment_tissue(img, ref_brain, image.spacing)
        pred = np.where(seg["classes"] >= 0, seg["classes"] + 1, 0)
        row["tissue_dice_ref_brain"] = tissue_dice(pred, ref_tissue)
        seg0 = segment_tissue(img, ref_brain, image.spacing, bias=False)
        row["tissue_dice_ref_brain_no_bias"] = tissue_dice(np.where(seg0["classes"] >= 0, seg0["classes"] + 1, 0),
                                                           ref_tissue)
        if name == "mni152":  # a known smooth multiplicative field of +-40 % (linear + cross term)
            g = np.meshgrid(*[np.linspace(-1, 1, n) for n in img.shape], indexing="ij")
            field = (1 + 0.4 * (0.6 * g[0] + 0.5 * g[1] - 0.4 * g[2] + 0.3 * g[0] * g[1])).astype(np.float32)
            for key, use in (("tissue_dice_x_bias40", True), ("tissue_dice_x_bias40_no_bias", False)):
                sb = segment_tissue(img * field, ref_brain, image.spacing, bias=use)
                row[key] = tissue_dice(np.where(sb["classes"] >= 0, sb["classes"] + 1, 0), ref_tissue)
        full, report = make_model_mask(image, DEMO_CARD, DEMO_NAMES, brain="auto")
        row["tissue_dice_full_pipeline"] = tissue_dice(np.asarray(full.array), ref_tissue)
        row["class_means"] = report["class_means"]
        result["subjects"][name] = row
    result["brain1"] = run_brain1(args.montage)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
