"""Which card labels are CSF, grey and white matter, and which are the lesion subregions (by name)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..contrast import TISSUE_ORDER

if TYPE_CHECKING:
    from ..models.card import ModelCard

# role -> name fragments (lower case), tried in this order: "non-enhancing ... core" is a core, not a rim
_TISSUE_KEYS = {"csf": ("csf", "cerebrospinal"), "gm": ("grey", "gray"), "wm": ("white",)}
_LESION_KEYS = (
    ("core", ("necro", "non-enhancing", "nonenhancing", "non enhancing", "core", "cyst")),
    ("oedema", ("oedema", "edema")),
    ("rim", ("enhancing", "rim")),
)
LESION_ORDER = ("core", "rim", "oedema")  # inside -> outside


def normalise_name(name: str) -> str:
    return " ".join(str(name).lower().replace("_", " ").split())


def _role_of(name: str, keys) -> str | None:
    low = normalise_name(name)
    for role, frags in keys:
        if any(f in low for f in frags):
            return role
    return None


def check_brain_card(card: ModelCard, label_names: Mapping[int, str]) -> dict[str, Any]:
    """The card's label roles: ``background``, ``csf``/``gm``/``wm`` and ``lesion`` {role: label}.

    Raises ValueError for a card make-mask cannot serve (no card, CT, not a brain, no CSF/GM/WM labels).
    """
    draw = "draw the mask yourself in the model's label scheme (e.g. in napari's Labels layer)"
    if not card.known:
        raise ValueError(
            "this model bundle has no model card, so make-mask cannot tell its label scheme; use a bundle "
            f"with a card (body_region 'brain', modality 'MR') or {draw}")
    if card.modality != "MR" or normalise_name(card.body_region) != "brain":
        raise ValueError(
            f"make-mask supports brain MR model cards only; this model is {card.modality} of the "
            f"'{card.body_region}' region; {draw}")
    names = {int(k): str(v) for k, v in label_names.items()}
    if not card.background_labels:
        raise ValueError("the model card lists no background label (outside brain); make-mask needs one")
    roles: dict[str, Any] = {"background": int(card.background_labels[0])}
    for role, frags in _TISSUE_KEYS.items():
        found = [v for v in card.tissue_labels if _role_of(names.get(v, ""), [(role, frags)])]
        if len(found) != 1:
            listed = ", ".join(f"{v} {names.get(v, '?')}" for v in card.tissue_labels) or "none"
            raise ValueError(
                f"make-mask needs the card's tissue labels to name CSF, grey matter and white matter once "
                f"each; this card's tissue labels are: {listed}; {draw}")
        roles[role] = found[0]
    lesion: dict[str, int] = {}
    for v in card.lesion_labels:
        role = _role_of(names.get(v, ""), _LESION_KEYS)
        if role is not None and role not in lesion:
            lesion[role] = int(v)
    roles["lesion"] = lesion
    roles["lesion_labels"] = tuple(int(v) for v in card.lesion_labels)
    roles["names"] = names
    return roles


def contrast_order(contrast: str) -> tuple[tuple[str, str, str], str | None]:
    """Tissue roles from darkest to brightest for the card's contrast, and a warning if it was guessed."""
    c = normalise_name(contrast)
    for family in ("FLAIR", "T2", "T1"):  # "T2 FLAIR" is a FLAIR
        if family.lower() in c:
            return TISSUE_ORDER[family], None
    return TISSUE_ORDER["T1"], f"card contrast {contrast!r} is not T1, T2 or FLAIR: assumed T1 (CSF < GM < WM)"


def name_lookup(names: Mapping[int, str], allowed, what: str) -> dict[str, int]:
    return {normalise_name(names.get(v, "")): int(v) for v in allowed if names.get(v)}


def label_by_name(name: str, lookup: dict[str, int], what: str, names: Mapping[int, str] | None = None) -> int:
    key = normalise_name(name)
    if key not in lookup:
        valid = ", ".join(repr(names.get(v, n) if names else n) for n, v in lookup.items()) or "none"
        raise ValueError(f"unknown label name {name!r} for {what}; valid names: {valid}")
    return lookup[key]
