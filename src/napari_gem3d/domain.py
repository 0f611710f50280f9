"""The domain check: does an (image, mask) pair look like what the model was trained on?

:func:`check_domain` compares a scan and its label map with the bundle's model card
(:mod:`napari_gem3d.models.card`) and returns named findings, each with a severity and a fix:

=================  ========  =====================================================================
code               severity  when
=================  ========  =====================================================================
card_unknown       warning   the bundle has no card: nothing can be checked
modality           error     CT in Hounsfield units for an MR model, or MR-like intensities for CT
contrast           error     the scan's name says another MR contrast than the card's (FLAIR, T2, ...), or
                             its tissue medians under the mask reverse the card's order (contrast.py);
                             warning when the name says the card's contrast and another
labels_unknown     error     mask values the model does not declare
lesion_only        error     one label on a small region: a lesion label without the anatomy
tissue_missing     error     none of the required tissue labels; warning when only some are missing
tissue_cover       error     the tissue labels cover under 20 % of the imaged body
outside_signal     warning   bright signal outside the labelled brain for a skull-stripped model
lesion_small       warning   a lesion left with fewer than 4 latent pixels in every model slice
slice_thickness    warning   slices more than twice as thick as the thickest training slices
fov                error     an in-plane field of view over 1.5x the widest training volume
                   warning   under half the narrowest one
orientation        warning   thick slices across the model's slice axis, or an oblique affine
=================  ========  =====================================================================

Errors mean "out of domain": every generating command refuses (CLI exit 2, each finding on its own
line) unless forced, and then the findings go into the provenance and the output's description.
The check is Qt-free and reads only arrays already in memory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .contrast import name_findings, order_findings
from .volume import Volume, model_grid, to_model

SEVERITIES = ("error", "warning", "info")

#: CT in HU: air near -1000. A scan is CT-like when this share of its voxels lies at or below -500 HU.
CT_AIR_HU = -500.0
CT_AIR_FRACTION = 0.01
LESION_MIN_LATENT_PIXELS = 4
TISSUE_MIN_COVER = 0.2
THICK_SLICE_FACTOR = 2.0
FOV_WIDE_FACTOR = 1.5
FOV_NARROW_FACTOR = 0.5
OBLIQUE_DEGREES = 5.0


class DomainError(ValueError):
    """An input outside the model's domain; ``report`` holds every finding (printed one per line)."""

    def __init__(self, report: DomainReport, what: str = "the inputs", override: str = "pass --force"):
        self.report = report
        codes = ", ".join(dict.fromkeys(f.code for f in report.errors))
        self.headline = f"{what} are outside the model's domain ({report.model}: {codes})"
        lines = [f"{self.headline}:"]
        lines += [f"  - {f.line()}" for f in report.errors]
        lines += [f"  - {f.line()}" for f in report.findings if f.severity != "error"]
        lines.append(f"Nothing was generated. To generate anyway, {override} (the findings are recorded in the "
                     "output's provenance and description).")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class Finding:
    code: str
    severity: str
    message: str
    fix: str = ""

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")

    def line(self) -> str:
        return f"[{self.severity}] {self.code}: {self.message}" + (f" Fix: {self.fix}" if self.fix else "")


@dataclass(frozen=True)
class DomainReport:
    model: str
    card_known: bool
    findings: tuple[Finding, ...]
    facts: dict[str, Any]

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def in_domain(self) -> bool:
        return not self.errors

    def lines(self) -> list[str]:
        return [f.line() for f in self.findings]

    def summary(self) -> str:
        """A short text for a NIfTI description (80 characters at most)."""
        if self.in_domain:
            text = "gem3d: in model domain" + (" (warnings: " + ",".join(
                f.code for f in self.findings) + ")" if self.findings else "")
        else:
            text = "gem3d: OUT OF DOMAIN, forced: " + ",".join(f.code for f in self.errors)
        return text[:80]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "card_known": self.card_known, "in_domain": self.in_domain,
                "findings": [asdict(f) for f in self.findings], "facts": self.facts}


# ---------------------------------------------------------------------------------------- modality
def guess_modality(image: Volume) -> tuple[str, dict[str, float]]:
    """("CT" | "MR", evidence) from the intensities: CT in HU holds air near -1000, MR is non-negative."""
    values = np.asarray(image.array)
    values = values[np.isfinite(values)] if values.dtype.kind == "f" else values.ravel()
    if values.size == 0:
        return "MR", {"voxels": 0}
    stride = max(1, values.size // 2_000_000)  # a fixed sample is enough for shares and extremes
    sample = np.asarray(values.ravel()[::stride], dtype=np.float64)
    low = float(np.mean(sample <= CT_AIR_HU))
    evidence = {"min": float(sample.min()), "max": float(sample.max()), "share_at_or_below_-500": round(low, 4)}
    return ("CT" if low >= CT_AIR_FRACTION and sample.min() <= -900 else "MR"), evidence


def require_modality(card, volume: Volume, role: str = "image") -> None:
    """Raise a ValueError (message and fix) when ``volume``'s modality is not the card's, e.g. CT for an MR
    model: for steps that use the intensities before any domain check (``gem3d make-mask``)."""
    finding = _modality_findings(card, *guess_modality(volume), role)
    if finding:
        raise ValueError(f"{finding[0].message} Fix: {finding[0].fix}")


def _modality_findings(card, guess: str, ev: dict[str, float], role: str) -> list[Finding]:
    if not card.known or card.modality == guess:
        return []
    if guess == "CT":
        return [Finding(
            "modality", "error",
            f"the {role} looks like CT in Hounsfield units ({ev['share_at_or_below_-500']:.0%} of voxels at or "
            f"below -500, minimum {ev['min']:g}) but this model is {card.modality}-only ({card.contrast}, "
            f"{card.body_region}).",
            "a CT scan needs a CT bundle: the official abdomen weights through `gem3d convert-official "
            "--labels abdomen`, or a model trained on CT with training/ (see training/README.md).")]
    return [Finding(
        "modality", "error",
        f"the {role} has no air below -500 HU (minimum {ev['min']:g}): it does not look like CT in Hounsfield "
        f"units, but this model is a CT model.",
        "use an MR bundle for MR scans, or convert the CT to Hounsfield units (rescale slope/intercept).")]


# ------------------------------------------------------------------------------------------ labels
def _label_findings(card, names: dict[int, str], labels: np.ndarray, body: np.ndarray | None) -> tuple[
        list[Finding], dict[str, Any]]:
    values, counts = np.unique(labels, return_counts=True)
    present = {int(v): int(c) for v, c in zip(values, counts, strict=True)}
    facts: dict[str, Any] = {"label_voxels": {str(k): v for k, v in present.items()}}
    out: list[Finding] = []
    known = "; ".join(f"{k} {v}" for k, v in sorted(names.items()))
    unknown = sorted(set(present) - set(names))
    if unknown:
        out.append(Finding(
            "labels_unknown", "error",
            f"the mask holds label values {unknown[:10]} that the model does not know (it knows: {known}).",
            "translate your labels: gem3d make-mask --image IMG --lesion MASK --label-map 1:NAME,2:NAME "
            "--out MODEL_MASK, or make a mask from the image alone: gem3d make-mask --image IMG --out MODEL_MASK."))
    if not card.known:
        return out, facts
    background = set(card.background_labels)
    foreground = {k: v for k, v in present.items() if k not in background}
    tissue = [k for k in card.tissue_labels if k in present]
    missing = [k for k in card.tissue_labels if k not in present]
    total = int(labels.size)
    if len(foreground) == 1 and len(card.tissue_labels) > 1:
        (value, count), = foreground.items()
        share = count / max(1, int(body.sum()) if body is not None else total)
        if share < 0.25:
            out.append(Finding(
                "lesion_only", "error",
                f"the mask has a single label ({value} '{names.get(value, '?')}') on {count} voxels ({share:.1%} of "
                f"the {'imaged body' if body is not None else 'volume'}): it looks like a lesion-only mask, but "
                f"this model draws the anatomy from a dense map of {', '.join(names[k] for k in card.tissue_labels)}.",
                "make a model-ready mask from the scan, keeping your lesion: gem3d make-mask --image IMG "
                "--lesion MASK --out MODEL_MASK (or 'Mask from image' in the mask editor)."))
            return out, facts
    if not tissue:
        out.append(Finding(
            "tissue_missing", "error",
            f"none of the required tissue labels ({', '.join(f'{k} {names[k]}' for k in card.tissue_labels)}) "
            "is in the mask.",
            "make a model-ready mask: gem3d make-mask --image IMG [--lesion MASK] --out MODEL_MASK."))
    elif missing:
        out.append(Finding(
            "tissue_missing", "warning",
            f"the tissue label(s) {', '.join(f'{k} {names[k]}' for k in missing)} are not in the mask; the model "
            "will not draw them.", "check the mask, or make one with gem3d make-mask."))
    if body is not None and tissue:
        labelled = np.isin(labels, [*card.tissue_labels, *card.lesion_labels])
        cover = float(np.count_nonzero(labelled & body)) / max(1, int(body.sum()))
        facts["tissue_cover_of_body"] = round(cover, 4)
        if cover < TISSUE_MIN_COVER:
            out.append(Finding(
                "tissue_cover", "error",
                f"the tissue and lesion labels cover only {cover:.0%} of the imaged body.",
                "label the whole organ, e.g. with gem3d make-mask --image IMG --out MODEL_MASK."))
        outside = float(np.count_nonzero(body & np.isin(labels, list(background)))) / max(1, int(body.sum()))
        facts["body_outside_labels"] = round(outside, 4)
        if card.skull_stripped and outside > 0.2:
            out.append(Finding(
                "outside_signal", "warning",
                f"{outside:.0%} of the imaged body lies outside the labelled brain (skull, scalp or neck?), but "
                "the model was trained on skull-stripped images: it will draw nothing there.",
                "skull-strip the image first, or expect a dark background around the brain."))
    return out, facts


def _body(image: Volume) -> np.ndarray:
    """The imaged body: voxels above the Otsu threshold of the finite intensities."""
    from skimage.filters import threshold_otsu

    values = np.asarray(image.array, dtype=np.float32)
    finite = np.isfinite(values)
    if not finite.any() or np.ptp(values[finite]) == 0:
        return np.zeros(values.shape, bool)
    return finite & (values > threshold_otsu(values[finite][:: max(1, int(finite.sum()) // 1_000_000)]))


# -------------------------------------------------------------------------------- grid and geometry
def _lesion_findings(config, mask: Volume, labels: np.ndarray, grid) -> tuple[list[Finding], dict]:
    card = config.card
    lesion_values = [k for k in card.lesion_labels if np.any(labels == k)]
    if not lesion_values:
        return [], {}
    native = int(np.count_nonzero(np.isin(labels, lesion_values)))
    model = to_model(mask.with_array(np.isin(labels, lesion_values).astype(np.uint8)), grid, "labels")
    per_slice = model.reshape(model.shape[0], -1).sum(axis=1)
    f2 = config.vae.downsampling ** 2
    best = int(per_slice.max())
    facts = {"lesion_voxels": native, "lesion_model_pixels": int(per_slice.sum()),
             "lesion_max_latent_pixels_per_slice": round(best / f2, 2)}
    if best < LESION_MIN_LATENT_PIXELS * f2:
        return [Finding(
            "lesion_small", "warning",
            f"the lesion ({native} voxels) keeps {int(per_slice.sum())} model-grid pixels after resampling to "
            f"{grid.size[0]}x{grid.size[1]}, at most {best} in one slice ({best / f2:.1f} latent pixels; under "
            f"{LESION_MIN_LATENT_PIXELS} it may not appear).",
            "lesion guidance (--lesion-guidance 3, the docks' Lesion strength) draws it more strongly; or a "
            "larger lesion, or a model with a finer grid.")], facts
    return [], facts


def _geometry_findings(card, grid, mask: Volume) -> tuple[list[Finding], dict]:
    sz, sr, sc = grid.oriented_spacing
    _, rows, cols = grid.oriented_shape
    fov = max(rows * sr, cols * sc)
    facts = {"slice_spacing_mm": round(sz, 3), "in_plane_spacing_mm": [round(sr, 3), round(sc, 3)],
             "in_plane_fov_mm": round(fov, 1), "axcodes": list(mask.axcodes)}
    out = []
    slice_range = card.spacing_mm.get("slice")
    if slice_range and sz > THICK_SLICE_FACTOR * slice_range[1]:
        out.append(Finding(
            "slice_thickness", "warning",
            f"slices are {sz:.2g} mm apart; the model was trained on {slice_range[0]:g}-{slice_range[1]:g} mm: "
            "expect visible steps from slice to slice.", "use a thinner-slice acquisition where one exists."))
    fov_range = card.fov_mm.get("in_plane")
    if fov_range and fov > FOV_WIDE_FACTOR * fov_range[1]:
        out.append(Finding(
            "fov", "error",
            f"the in-plane field of view is {fov:.0f} mm but the model's training volumes span at most "
            f"{fov_range[1]:.0f} mm ({card.body_region}): this scan covers a larger body region.",
            f"crop the scan to the {card.body_region}, or use a model trained on this body region."))
    elif fov_range and fov < FOV_NARROW_FACTOR * fov_range[0]:
        out.append(Finding(
            "fov", "warning",
            f"the in-plane field of view is {fov:.0f} mm, under half the narrowest training volume "
            f"({fov_range[0]:.0f} mm): the model will see a zoomed-in view.", "use the uncropped scan."))
    spacing = np.asarray(mask.spacing)
    thick = int(np.argmax(spacing))
    if spacing[thick] > 1.5 * np.min(spacing) and int(grid.ornt[thick, 0]) != 0:
        plane = "SAR"[int(np.argmax(np.abs(mask.affine[:3, thick])))]
        out.append(Finding(
            "orientation", "warning",
            f"the thick axis ({spacing[thick]:.2g} mm) runs {plane}-ward but the model stacks slices along "
            f"{grid.slice_axis}: every model slice cuts across the thick slices and is blurred in-plane.",
            "use a model with this slice axis, or an acquisition in the model's plane."))
    directions = mask.affine[:3, :3] / np.linalg.norm(mask.affine[:3, :3], axis=0)
    angle = float(np.degrees(np.arccos(np.clip(np.max(np.abs(directions), axis=0).min(), -1, 1))))
    facts["obliquity_degrees"] = round(angle, 2)
    if angle > OBLIQUE_DEGREES:
        out.append(Finding(
            "orientation", "warning",
            f"the volume is oblique by {angle:.0f} degrees; it is mapped to the nearest axes without resampling.",
            "resample to an axis-aligned grid first for a faithful slice axis."))
    return out, facts


def _tissue_roles(card, names) -> dict[str, int] | None:
    """The card's CSF / grey / white matter labels by name (make-mask's rule), or None for a card without them."""
    from .make_mask.roles import check_brain_card

    try:
        return check_brain_card(card, names)
    except ValueError:
        return None


# ------------------------------------------------------------------------------------------- check
def check_domain(config, mask: Volume, image: Volume | None = None, *, informed: Volume | None = None) -> DomainReport:
    """Every finding for generating ``mask`` (and ``image``; ``informed``: a volume giving the informed slice)."""
    card = config.card
    names = config.labels.names  # int label -> name (LabelSpec normalises them)
    findings: list[Finding] = []
    facts: dict[str, Any] = {}
    if not card.known:
        findings.append(Finding(
            "card_unknown", "warning",
            f"the model {config.name!r} has no model card: its modality, labels and geometry cannot be checked.",
            "ask for (or train) a bundle with a card; check the output by eye."))
    for role, volume in (("image", image), ("informed-slice volume", informed)):
        if volume is not None and card.known:
            modality, evidence = guess_modality(volume)
            facts[f"{role.split()[0]}_modality"] = {"guess": modality, **evidence}
            findings += _modality_findings(card, modality, evidence, role)
            findings += [Finding("contrast", *f) for f in name_findings(card, volume, role)]
    labels = np.asarray(mask.array)
    labels = labels if labels.dtype.kind in "iub" else np.rint(np.nan_to_num(labels)).astype(np.int64)
    if image is not None and card.known and card.modality == "MR" and facts["image_modality"]["guess"] == "MR":
        roles = _tissue_roles(card, names)  # (a CT is refused above; its tissue order would say nothing more)
        if roles is not None:
            order, order_facts = order_findings(card, image, labels, roles)
            findings += [Finding("contrast", *f) for f in order]
            facts.update(order_facts)
    body = _body(image) if image is not None and card.known else None
    label_findings, label_facts = _label_findings(card, names, labels, body)
    findings += label_findings
    facts.update(label_facts)
    if card.known:
        grid = model_grid(mask, config.image_size, config.slice_axis)
        for part in (_lesion_findings(config, mask, labels, grid), _geometry_findings(card, grid, mask)):
            findings += part[0]
            facts.update(part[1])
    order = {s: i for i, s in enumerate(SEVERITIES)}
    findings.sort(key=lambda f: order[f.severity])
    return DomainReport(config.name, card.known, tuple(findings), facts)


def require_domain(config, mask: Volume, image: Volume | None = None, *, informed: Volume | None = None,
                   force: bool = False, what: str = "the inputs", override: str = "pass --force") -> DomainReport:
    """:func:`check_domain`, raising :class:`DomainError` when out of domain unless ``force``; ``override``
    tells the user how to force it where they are (the CLI's flag, a dock's check box)."""
    from .masks import require_label_map

    # a mask no model can use (empty, NaN, fractional, undeclared labels) is an input error, not a domain question
    config.labels.validate(require_label_map(mask.array))
    report = check_domain(config, mask, image, informed=informed)
    if not report.in_domain and not force:
        raise DomainError(report, what, override)
    return report


__all__ = ["DomainError", "DomainReport", "Finding", "check_domain", "guess_modality", "require_domain",
           "require_modality"]
