"""make_model_mask: brain, tissue and lesions assembled into one label volume on the image's grid."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

from ..contrast import require_named_contrast
from ..domain import require_modality
from ..volume import Volume, require_finite
from .brain import (
    BRAIN_METHODS,
    brain_mask_deepbet,
    brain_mask_fallback,
    brain_mask_stripped,
    deepbet_version,
    deepbet_weights,
)
from .lesion_split import split_lesions
from .roles import LESION_ORDER, check_brain_card, contrast_order, label_by_name, name_lookup, normalise_name
from .tissue import segment_tissue

if TYPE_CHECKING:
    from ..models.card import ModelCard

#: Header keys of the image that do not describe the new label volume.
_DROP_HEADER = ("source", "provenance", "dtype", "scl_slope", "scl_inter", "descrip", "encoding")
_AFFINE_ATOL_MM = 1e-3


def _check_geometry(image: Volume, other: Volume, what: str) -> None:
    fix = ("resample it onto the image's grid with nearest-neighbour interpolation (e.g. "
           "nibabel.processing.resample_from_to(mask, image, order=0), or 3D Slicer's Resample with the "
           "image as reference) and save it as a new file")
    if other.shape != image.shape:
        raise ValueError(f"{what} has shape {other.shape} but the image has {image.shape}; {fix}")
    if not np.allclose(other.affine, image.affine, rtol=0, atol=_AFFINE_ATOL_MM):
        diff = float(np.abs(other.affine - image.affine).max())
        raise ValueError(f"{what} has the image's shape but another position/orientation (affines differ by up "
                         f"to {diff:.3g} mm); {fix}")


def _integer_values(array: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(array)
    if a.dtype == np.bool_:
        return a.astype(np.int64)
    if a.dtype.kind == "f":
        require_finite(a, what)
        if np.any(a != np.round(a)):
            raise ValueError(f"{what} holds non-integer values; a label mask must hold whole numbers")
        return a.astype(np.int64)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{what} must hold integers, got dtype {a.dtype}")
    return a.astype(np.int64)


def _translate(values: np.ndarray, label_map: Mapping[int, str], lookup: dict[str, int],
               names: Mapping[int, str]) -> np.ndarray:
    """The user's label values as card labels; -1 where the value is an unmapped 0 (not given)."""
    mapping = {int(k): label_by_name(v, lookup, f"--label-map value {k}", names) for k, v in label_map.items()}
    present = np.unique(values)
    unmapped = [int(v) for v in present if int(v) not in mapping and int(v) != 0]
    if unmapped:
        shown = ", ".join(map(str, unmapped[:20])) + (f" and {len(unmapped) - 20} more" if len(unmapped) > 20 else "")
        raise ValueError(f"the label map does not map the mask value(s) {shown}; add them to --label-map "
                         f"(e.g. {unmapped[0]}:oedema), or set them to 0 in the mask")
    out = np.full(values.shape, -1, np.int16)
    for v, label in mapping.items():
        out[values == v] = label
    return out


def make_model_mask(
    image: Volume,
    card: ModelCard,
    label_names: Mapping[int, str],
    *,
    lesion: Volume | None = None,
    lesion_as: str = "auto",
    label_map: Mapping[int, str] | None = None,
    brain: str = "auto",
    device: str = "cpu",
) -> tuple[Volume, dict[str, Any]]:
    """A model-ready uint8 label Volume on ``image``'s grid in ``card``'s label scheme, and a report.

    See the module docstring for the method. The report holds ``method`` (brain, tissue, lesion),
    ``class_means`` (bias-corrected, image units, by card label name), ``bias_range``, ``counts`` (voxels per
    label name), ``lesions`` (per connected lesion) and ``warnings``.
    """
    roles = check_brain_card(card, label_names)
    names: dict[int, str] = roles["names"]
    if brain not in BRAIN_METHODS:
        raise ValueError(f"brain must be one of {', '.join(BRAIN_METHODS)}, got {brain!r}")
    require_finite(image.array, "the image")
    if image.array.dtype.kind not in "iufb":
        raise ValueError(f"the image must hold numbers, got dtype {image.array.dtype}")
    require_modality(card, image)  # an MR tissue model on a CT in HU would give confident nonsense
    require_named_contrast(card, image)  # so would T1 tissue classes on a scan named FLAIR or T2
    warnings: list[str] = []
    nonbg = [*card.tissue_labels, *card.lesion_labels]
    all_lookup = name_lookup(names, [*card.background_labels, *nonbg], "card labels")

    user: np.ndarray | None = None
    translated: np.ndarray | None = None
    lesion_label: int | None = None
    if lesion is not None:
        _check_geometry(image, lesion, "the lesion mask")
        user = _integer_values(lesion.array, "the lesion mask")
        if label_map:
            if normalise_name(lesion_as) != "auto":
                raise ValueError("use either a label map (--label-map) or --lesion-as, not both: a label map "
                                 "already says what each value is")
            translated = _translate(user, label_map, all_lookup, names)
        elif normalise_name(lesion_as) != "auto":
            lesion_label = label_by_name(lesion_as, name_lookup(names, nonbg, ""), "--lesion-as", names)
        elif not card.lesion_labels:
            raise ValueError("the model card has no lesion labels, so lesions cannot be split; pass --lesion-as "
                             "with a tissue name (e.g. CSF for a resection cavity) or leave out --lesion")
        elif len(card.lesion_labels) > 1 and len(roles["lesion"]) < 1:
            raise ValueError(
                "cannot tell which of the card's lesion labels is core, rim or oedema from their names "
                f"({', '.join(names.get(v, '?') for v in card.lesion_labels)}); pass --lesion-as NAME")
    elif label_map:
        raise ValueError("a label map (--label-map) needs the mask it describes (--lesion)")

    # 1. brain
    method: dict[str, str] = {}
    choice = brain
    if choice == "auto":
        choice = "deepbet" if deepbet_weights() is not None else "fallback"
        if choice == "fallback":
            warnings.append("deepbet is not installed: the brain mask comes from the intensity fallback "
                            "(less accurate; pip install --no-deps deepbet==1.0.2)")
    if choice == "deepbet":
        brain_mask = brain_mask_deepbet(image, device=device)
        method["brain"] = f"deepbet {deepbet_version()} TorchScript nets (deepbet's preprocessing, run here)"
    elif choice == "fallback":
        brain_mask = brain_mask_fallback(image)
        method["brain"] = ("fallback: Otsu head, multi-Otsu CSF|GM level, 5 mm erosion, largest component, "
                           "5 mm closing, holes filled")
    else:
        brain_mask = brain_mask_stripped(image)
        method["brain"] = "none: image already skull-stripped (largest non-zero component, holes filled)"

    arr = np.asarray(image.array, np.float32)
    lo = float(arr.min())
    floor = arr <= lo + 0.01 * (float(np.percentile(arr, 99)) - lo)
    removed = int(np.count_nonzero(brain_mask & floor))
    if removed:
        # nothing in a brain is this dark but air or the removed background of a skull-stripped image
        brain_mask = brain_mask & ~floor
        method["brain"] += f"; minus {removed} voxels darker than 1 % of the intensity range (background)"
    given = np.zeros(image.shape, bool)  # voxels whose label the user gave
    lesion_vox = np.zeros(image.shape, bool)
    if translated is not None:
        given = translated >= 0
        brain_mask = (brain_mask & ~given) | (given & ~np.isin(translated, card.background_labels))
        lesion_vox = np.isin(translated, card.lesion_labels)
    elif user is not None:
        lesion_vox = user != 0
        brain_mask = brain_mask | lesion_vox
    if not brain_mask.any():
        raise ValueError("no brain was found in the image; check --brain (a skull-stripped image: --brain none)")

    # 2. tissue, on the brain's bounding box (with a margin for the smoothing)
    order, warn = contrast_order(card.contrast)
    if warn:
        warnings.append(warn)
    spacing = image.spacing
    bb = ndimage.find_objects(brain_mask.astype(np.uint8))[0]
    bb = tuple(slice(max(0, s.start - 2), min(n, s.stop + 2)) for s, n in zip(bb, image.shape, strict=True))
    img = np.asarray(image.array, np.float32)[bb]
    if float(np.percentile(img[brain_mask[bb]], 1)) < 0:
        shift = -float(img[brain_mask[bb]].min())
        img = img + shift  # the multiplicative bias model needs positive intensities
        warnings.append(f"the image has negative values inside the brain; shifted by {shift:g} for the bias model")
    exclude = (lesion_vox | (given & ~np.isin(translated, card.tissue_labels)) if translated is not None
               else lesion_vox)[bb]
    seg = segment_tissue(img, brain_mask[bb], spacing, exclude=exclude)
    tissue_labels = np.array([roles[r] for r in order], np.int16)
    labels = np.full(image.shape, roles["background"], np.int16)
    region = labels[bb]
    inside = seg["classes"] >= 0
    region[inside] = tissue_labels[seg["classes"][inside]]
    means_by_role = {r: float(m) for r, m in zip(order, seg["means"], strict=True)}
    kept = "kept" if seg["bias_used"] else "rejected: it merged classes"
    method["tissue"] = (f"N3 bias correction (sigma 150 mm; {kept}) "
                        "then a 3-class tied-variance Gaussian mixture (EM) with a small bright-outlier class, "
                        f"classes ordered {' < '.join(r.upper() for r in order)} for contrast "
                        f"{card.contrast!r}")
    bias = seg["bias"][brain_mask[bb]]

    # 3. lesions
    lesion_reports: list[dict] = []
    if translated is not None:
        labels[given] = translated[given]
        method["lesion"] = "label map translated value by value"
    elif user is not None and lesion_vox.any():
        if lesion_label is not None:
            labels[lesion_vox] = lesion_label
            method["lesion"] = f"every lesion voxel -> {lesion_label} {names.get(lesion_label, '?')}"
        elif len(card.lesion_labels) == 1:
            labels[lesion_vox] = card.lesion_labels[0]
            method["lesion"] = f"the card's only lesion label {card.lesion_labels[0]}"
        else:
            intensity_ok = order == ("csf", "gm", "wm")
            if not intensity_ok:
                warnings.append("the lesion split by intensity follows T1 contrast; with this contrast lesions "
                                "are split into depth shells")
            split, lesion_reports = split_lesions(lesion_vox[bb], seg["corrected"], means_by_role, spacing,
                                                  roles["lesion"], intensity_ok=intensity_ok)
            region[lesion_vox[bb]] = split[lesion_vox[bb]]
            kinds = sorted({r["method"] for r in lesion_reports})
            method["lesion"] = ("split into " + ", ".join(r for r in LESION_ORDER if r in roles["lesion"])
                                + f" by {' and '.join(kinds)}")
            if "depth shells" in kinds:
                warnings.append(f"{sum(r['method'] == 'depth shells' for r in lesion_reports)} lesion(s) did not "
                                "separate by intensity and were split into depth shells")
    elif user is not None:
        warnings.append("the lesion mask is empty: no lesion labels were added")

    out = labels.astype(np.uint8)
    header = {k: v for k, v in image.header.items() if k not in _DROP_HEADER}
    volume = Volume(out, image.affine, header)
    counts = np.bincount(out.ravel(), minlength=256)
    report = {
        "method": method,
        "class_means": {names.get(roles[r], r): round(means_by_role[r], 4) for r in order},
        "class_sds": {names.get(roles[r], r): round(float(s), 4) for r, s in zip(order, seg["sds"], strict=True)},
        "bias_range": [round(float(np.percentile(bias, 1)), 4), round(float(np.percentile(bias, 99)), 4)],
        "bright_class": None if seg["bright"] is None else {
            "mean": round(seg["bright"][0], 4), "fraction": round(seg["bright"][2], 4),
            "labelled": names.get(roles[order[-1]], order[-1])},
        "counts": {names.get(v, str(v)): int(counts[v]) for v in sorted(np.flatnonzero(counts))},
        "lesions": lesion_reports,
        "warnings": warnings,
    }
    return volume, report


__all__ = ["make_model_mask"]
