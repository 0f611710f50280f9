"""The MR contrast (sequence) of a scan, as far as it can be told, against the model card's.

Two signs, both cheap and neither a guess from the image alone (a label-free guess failed: post-contrast T1
brain1 has a brighter brain surface than its deep white matter, as a T2 would):

- **the name**: the file name and the NIfTI description of a scan usually say what it is (BIDS ``_T2w``,
  ``_FLAIR``; dcm2niix series names such as ``AX_FLAIR``, ``T2_TSE``, ``t1_mprage``). A name that says another
  contrast than the card's, and not the card's, is an error; one that says both is a warning.
- **the tissue order**: with a mask holding the card's CSF / grey / white matter labels, the image's median
  intensity in each must follow the card's contrast (T1: CSF < GM < WM; T2: WM < GM < CSF; FLAIR: CSF < WM <
  GM). A reversal larger than a tenth of the brain's interquartile range is an error (a FLAIR read as T1 has
  GM above WM).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .volume import Volume

#: family -> tokens (lower case) that name it: a token is a run of letters and digits in the name
FAMILY_TOKENS: dict[str, tuple[str, ...]] = {
    "T1": ("t1", "t1w", "t1c", "t1ce", "t1gd", "t1post", "t1pre", "mprage", "mp2rage", "spgr", "bravo", "tfl"),
    "T2": ("t2", "t2w", "t2tse", "t2fse", "t2star", "t2s"),
    "FLAIR": ("flair", "t2flair", "flair3d", "darkfluid"),
    "PD": ("pd", "pdw", "pdfs"),
    "diffusion": ("dwi", "adc", "dti"),
    "SWI": ("swi", "swan"),
    "BOLD": ("bold", "fmri"),
}
#: a tenth of the brain's interquartile range: a smaller reversal of two tissue medians is noise
ORDER_MARGIN = 0.1
#: tissue roles from darkest to brightest, by contrast family (make-mask orders its classes by it too)
TISSUE_ORDER = {"T1": ("csf", "gm", "wm"), "T2": ("wm", "gm", "csf"), "FLAIR": ("csf", "wm", "gm")}
ROLE_NAMES = {"csf": "CSF", "gm": "grey matter", "wm": "white matter"}


def families(text: str) -> set[str]:
    """The contrast families ``text`` names (its letter-and-digit tokens; ``t2flair`` names FLAIR only)."""
    found = set()
    for token in re.findall(r"[a-z0-9]+", text.lower()):
        for family, tokens in FAMILY_TOKENS.items():
            if token in tokens:
                found.add(family)
    if "FLAIR" in found:
        found.discard("T2")  # "T2 FLAIR" is a FLAIR
    return found


def scan_name(volume: Volume) -> str:
    """What the scan is called: its file name (without the folder) and its NIfTI description."""
    source = volume.header.get("source")
    parts = [Path(str(source)).name if source else "", str(volume.header.get("descrip") or "")]
    return " ".join(p for p in parts if p)


def card_family(card) -> str | None:
    """The card's contrast family (T1, T2, FLAIR, ...), or None when its contrast names none or several."""
    found = families(str(getattr(card, "contrast", "")))
    return next(iter(found)) if len(found) == 1 else None


def name_findings(card, volume: Volume, role: str = "image",
                  override: str = " (or pass --force, 'Run anyway' in a dock)") -> list[tuple[str, str, str]]:
    """(severity, message, fix) when ``volume``'s name says a contrast the card's model was not trained on;
    ``override`` ends the fix: how to go on anyway where the user is."""
    expected = card_family(card)
    name = scan_name(volume)
    said = families(name)
    if expected is None or not said or said == {expected}:
        return []
    others = ", ".join(sorted(said - {expected}))
    if expected in said:
        return [("warning", f"the {role}'s name {name!r} names {expected} and also {others}.",
                 f"make sure the scan is {expected}-weighted: this model knows {card.contrast} MR only.")]
    return [("error", f"the {role}'s name {name!r} says {others}, but this model knows {card.contrast} MR only: "
                      f"a {others} scan would be drawn as {expected} tissue, a confident fake.",
             f"use the patient's {expected}-weighted scan (or a model trained on {others}: training/); if the scan "
             f"is {expected}-weighted and the name is wrong, rename the file{override}")]


def order_findings(card, image: Volume, labels: np.ndarray, roles: Mapping[str, int],
                   role: str = "image") -> tuple[list[tuple[str, str, str]], dict[str, Any]]:
    """(severity, message, fix) when the image's tissue medians under ``labels`` (``roles``: csf/gm/wm -> label)
    reverse the card's contrast order by more than ORDER_MARGIN of the brain's interquartile range; and facts."""
    expected = card_family(card)
    if expected not in TISSUE_ORDER or np.shape(labels) != image.shape:
        return [], {}
    values = np.asarray(image.array, np.float64)
    medians = {}
    for r in ("csf", "gm", "wm"):
        inside = labels == roles[r]
        if np.count_nonzero(inside) < 50:
            return [], {}
        medians[r] = float(np.median(values[inside]))
    brain = np.isin(labels, [roles[r] for r in medians])
    q1, q3 = np.percentile(values[brain], [25, 75])
    margin = ORDER_MARGIN * max(float(q3 - q1), 1e-12)
    facts = {"tissue_medians": {ROLE_NAMES[r]: round(v, 4) for r, v in medians.items()}, "expected": expected}
    order = TISSUE_ORDER[expected]
    reversed_pairs = [(a, b) for i, a in enumerate(order) for b in order[i + 1:] if medians[a] > medians[b] + margin]
    if not reversed_pairs:
        return [], facts
    seen = " < ".join(ROLE_NAMES[r] for r in sorted(medians, key=medians.get))
    like = [f for f, o in TISSUE_ORDER.items() if f != expected and tuple(sorted(medians, key=medians.get)) == o]
    what = f", as in {like[0]}-weighted scans" if like else ""
    pairs = "; ".join(f"{ROLE_NAMES[a]} {medians[a]:.4g} above {ROLE_NAMES[b]} {medians[b]:.4g}"
                      for a, b in reversed_pairs)
    return [("error", f"the {role}'s tissue intensities run {seen}{what} ({pairs}), but this model knows "
                      f"{card.contrast} MR ({' < '.join(ROLE_NAMES[r] for r in order)}).",
             f"use the patient's {expected}-weighted scan; or check that the mask's tissue labels are the "
             "card's (gem3d info)")], facts


def require_named_contrast(card, volume: Volume, role: str = "image") -> None:
    """Raise a ValueError (message and fix) when ``volume``'s name says another contrast than the card's: for
    steps that use the intensities before any domain check (``gem3d make-mask``)."""
    for severity, message, fix in name_findings(card, volume, role, override=""):
        if severity == "error":
            raise ValueError(f"{message} Fix: {fix}.")


__all__ = ["families", "name_findings", "order_findings", "require_named_contrast", "scan_name"]
