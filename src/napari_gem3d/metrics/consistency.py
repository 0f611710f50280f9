"""Inter-slice consistency: how much neighbouring slices differ along the generation axis and at seams.

Profile
    The volume is reoriented exactly (no interpolation) so axis 0 is the model's slice axis (``"S"``:
    inferior -> superior, the same frame and slice indices as the sampler's model grid), mapped to [0, 1]
    with a window, and ``d[z] = mean |x[z + 1] - x[z]|`` over the slice (z = 0 .. Z-2).

Ratio
    ``mean d(generated) / mean d(real)``: 1 means neighbouring slices change as much as in real data,
    above 1 flicker/inconsistency, below 1 over-smoothing. Both volumes use the *real* volume's window.

Seams
    A window boundary ``b`` (the first slice a window emits after slices another window emitted) is the
    pair (b-1, b), i.e. ``d[b-1]``. ``seam ratio = mean d at boundaries / mean d elsewhere``; about 1 means
    no visible seams. The real volume's ratio at the same indices is the reference (anatomy alone).
    :func:`window_seams` gives the boundaries of the sampler's plan from a generated volume's provenance,
    :func:`plan_edges` from the window list a result layer carries.

Reading
    :func:`read_profile` puts a profile into one line of words: its change against a reference's, whether
    seams show at the window boundaries, and where the largest jump is (thresholds ``SEAM_EXCESS``,
    ``JUMP_FACTOR``, ``SAME_CHANGE``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from nibabel import orientations as nio

from ..volume import MODEL_AXCODES, FittedNorm, IntensityNorm, Volume
from .similarity import DEFAULT_NORM, to_unit_range


def oriented(volume: Volume, slice_axis: str = "S") -> np.ndarray:
    """(Z, H, W) view of ``volume`` in the model frame of ``slice_axis`` (exact, no resampling)."""
    if slice_axis == "k":
        return np.transpose(np.asarray(volume.array), (2, 1, 0))
    if slice_axis not in MODEL_AXCODES:
        raise ValueError(f"slice_axis must be one of {(*MODEL_AXCODES, 'k')}, got {slice_axis!r}")
    ornt = nio.ornt_transform(nio.io_orientation(volume.affine), nio.axcodes2ornt(MODEL_AXCODES[slice_axis]))
    return np.asarray(nio.apply_orientation(np.asarray(volume.array), ornt))


def adjacent_difference_profile(slices: np.ndarray, window: FittedNorm) -> np.ndarray:
    """``d[z] = mean |x[z+1] - x[z]|`` of (Z, H, W) slices mapped to [0, 1] by ``window``; shape (Z-1,)."""
    x = to_unit_range(slices, window)
    if x.ndim != 3 or x.shape[0] < 2:
        raise ValueError(f"need (Z, H, W) slices with Z >= 2, got shape {x.shape}")
    return np.abs(np.diff(x, axis=0)).mean(axis=(1, 2)).astype(np.float64)


def _boundary_mask(n: int, boundaries: Sequence[int]) -> np.ndarray:
    """Profile entries ``d[b-1]`` (slices b-1 and b) of the window boundaries ``b`` inside a profile of length n."""
    mask = np.zeros(n, dtype=bool)
    mask[[int(b) - 1 for b in boundaries if 0 < int(b) <= n]] = True
    return mask


def seam_ratio(profile: np.ndarray, boundaries: Sequence[int]) -> float:
    """Mean difference across the given window boundaries over the mean elsewhere (nan without both)."""
    profile = np.asarray(profile, dtype=np.float64)
    seam = _boundary_mask(len(profile), boundaries)
    if not seam.any() or seam.all():
        return float("nan")
    inner = profile[~seam].mean()
    return float(profile[seam].mean() / inner) if inner > 0 else float("nan")


def window_seams(num_slices: int, provenance: Mapping[str, Any]) -> list[int]:
    """Boundaries of the sampler's window plan, rebuilt from a generated volume's provenance."""
    from ..sampling.plan import centred_first_start, plan_windows

    try:
        window, overlap, start = (
            int(provenance["window"]),
            int(provenance["overlap"]),
            int(provenance["start_slice"]),
        )
    except (KeyError, TypeError, ValueError):
        return []
    official = bool(provenance.get("official_compat", False))
    mode = provenance.get("mode", "gem3d")
    first = provenance.get("first_window_start")
    if first is None and not official and 0 <= start < num_slices:  # made before the plan recorded it: centred
        first = centred_first_start(num_slices, window, start)
    windows = plan_windows(num_slices, window, overlap, start, start_known=mode == "gem3d", official=official,
                           first_start=None if official else first)
    edges = set()
    for w in windows:
        z0, z1 = w.emit_range
        edges.update(z for z in (z0, z1) if 0 < z < num_slices)
    return sorted(edges)


def plan_edges(plan: Sequence[Mapping[str, Any]], num_slices: int) -> list[int]:
    """Window edges (every ``start`` and ``stop`` of a list of ``{"start", "stop"}`` windows) inside the volume."""
    edges = {int(w[key]) for w in plan for key in ("start", "stop")}
    return sorted(b for b in edges if 0 < b < num_slices)


@dataclass(frozen=True)
class Consistency:
    real_profile: np.ndarray
    generated_profile: np.ndarray
    boundaries: tuple[int, ...]

    @property
    def real_mean(self) -> float:
        return float(self.real_profile.mean())

    @property
    def generated_mean(self) -> float:
        return float(self.generated_profile.mean())

    @property
    def ratio(self) -> float:
        return self.generated_mean / self.real_mean if self.real_mean > 0 else float("nan")

    @property
    def seam_ratio_generated(self) -> float:
        return seam_ratio(self.generated_profile, self.boundaries)

    @property
    def seam_ratio_real(self) -> float:
        return seam_ratio(self.real_profile, self.boundaries)

    def reading(self) -> ProfileReading:
        """The generated profile read against the real one (:func:`read_profile`)."""
        return read_profile(self.generated_profile, self.boundaries, self.real_profile)


def consistency(
    real: Volume,
    generated: Volume,
    *,
    slice_axis: str = "S",
    boundaries: Sequence[int] | None = None,
    norm: IntensityNorm = DEFAULT_NORM,
) -> Consistency:
    """Adjacent-slice profiles of a real/generated pair (real window for both) and the seam indices."""
    r, g = oriented(real, slice_axis), oriented(generated, slice_axis)
    if r.shape != g.shape:
        raise ValueError(
            f"real {r.shape} and generated {g.shape} differ in shape along the {slice_axis} frame"
        )
    window = norm.fit(np.asarray(r, dtype=np.float32))
    return Consistency(
        adjacent_difference_profile(r, window),
        adjacent_difference_profile(g, window),
        tuple(boundaries or ()),
    )


#: Slices are resized to this square before the stripe index compares differences (the demo model's grid):
#: a generation upsampled to a finer scan grid is not called blurry for the grid alone.
STRIPE_GRID = 64


def axis_differences(volume: Volume, slice_axis: str = "S") -> tuple[float, float, float]:
    """Mean |difference| between neighbouring voxels along the (slice, row, column) axes of the model frame,
    each slice resized to STRIPE_GRID x STRIPE_GRID, after mapping the volume's own 1st-99th percentile to
    [0, 1]."""
    x = np.asarray(oriented(volume, slice_axis), dtype=np.float32)
    if x.shape[1:] != (STRIPE_GRID, STRIPE_GRID):
        from skimage.transform import resize

        x = resize(x, (x.shape[0], STRIPE_GRID, STRIPE_GRID), order=1, anti_aliasing=True, preserve_range=True)
    lo, hi = np.percentile(x, [1.0, 99.0])
    x = np.clip((x - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(x)
    return tuple(float(np.abs(np.diff(x, axis=a)).mean()) for a in range(3))  # type: ignore[return-value]


def stripe_index(generated: Volume, reference: Volume, slice_axis: str = "S") -> float:
    """(slice-axis difference ratio) / (mean in-plane difference ratio), generated over ``reference``, on
    slices resized to STRIPE_GRID (as the flicker diagnosis measured it).

    A volume whose slices change from one to the next as much as in the reference, relative to how much
    it changes within a slice, has 1; slice-to-slice stripes push it above 1. The reference is the real
    volume, or without one the volume the informed slice came from (same anatomy class and scanner).
    """
    across, within = axis_ratios(generated, reference, slice_axis)
    return across / within


def axis_ratios(generated: Volume, reference: Volume, slice_axis: str = "S") -> tuple[float, float]:
    """The stripe index's two parts: (slice-axis difference ratio, mean in-plane difference ratio), generated
    over ``reference``. A high index from a low second part is in-plane blur, not slice-to-slice stripes."""
    g, r = axis_differences(generated, slice_axis), axis_differences(reference, slice_axis)
    ratios = [a / b if b > 0 else float("nan") for a, b in zip(g, r, strict=True)]
    return float(ratios[0]), float(0.5 * (ratios[1] + ratios[2]))


def generated_consistency(generated: Volume, *, slice_axis: str = "S", norm: IntensityNorm = DEFAULT_NORM):
    """Profile and seam ratio of a generated volume alone (no real volume), seams from its provenance."""
    prov = generated.header.get("provenance") or {}
    axis = (prov.get("grid") or {}).get("slice_axis", slice_axis)
    g = oriented(generated, axis)
    profile = adjacent_difference_profile(g, norm.fit(np.asarray(g, dtype=np.float32)))
    seams = window_seams(g.shape[0], prov)
    return profile, seam_ratio(profile, seams), seams


# -------------------------------------------------------------------------------------------- reading
SEAM_EXCESS = 0.2
"""A seam *shows* when the mean difference at window boundaries exceeds the mean within windows by more than
20 % (seam ratio > 1.2) and, with a reference, also exceeds the reference's own seam ratio at the same
indices (the anatomy's share) by more than 20 %."""
JUMP_FACTOR = 2.0
"""A *jump*: a difference between neighbouring slices above twice the profile's median difference."""
SAME_CHANGE = 0.2
"""Slice-to-slice change *as the reference's* when mean profile / mean reference profile is within 1 ± 0.2;
above: flicker, below: smoother than the reference."""


@dataclass(frozen=True)
class ProfileReading:
    """What an adjacent-slice profile ``d`` shows (``d[k]``: slices k and k+1); ``text`` says it in words."""

    largest: int  # k of the largest difference
    largest_factor: float  # d[largest] / median(d)
    at_boundary: bool  # the largest difference is at a window boundary
    seam_ratio: float  # mean d at window boundaries / mean d within windows; nan without boundaries
    reference_seam_ratio: float = float("nan")  # the reference's ratio at the same indices
    change_ratio: float = float("nan")  # mean d / mean reference d
    reference_jumps_there: bool = False  # the reference also has a jump at ``largest``

    @property
    def jump(self) -> bool:
        return self.largest_factor > JUMP_FACTOR

    @property
    def seams(self) -> bool:
        excess = 1.0 + SEAM_EXCESS
        return self.seam_ratio > excess and not self.reference_seam_ratio * excess >= self.seam_ratio

    @property
    def text(self) -> str:
        parts = []
        r = self.change_ratio
        if np.isfinite(r):
            how = "" if abs(r - 1.0) <= SAME_CHANGE else " (flicker)" if r > 1.0 else " (smoother)"
            parts.append(f"slice-to-slice change {r:.1f}× the source's{how}")
        if np.isfinite(self.seam_ratio):
            ref = f"; source {self.reference_seam_ratio:.1f}×" if np.isfinite(self.reference_seam_ratio) else ""
            verdict = "seams at window boundaries" if self.seams else "no seam at window boundaries"
            parts.append(f"{verdict} ({self.seam_ratio:.1f}× the within-window change{ref})")
        else:
            parts.append("no window boundaries to check for seams")
        where = f"slices {self.largest}–{self.largest + 1}"
        if self.jump:
            place = ""
            if np.isfinite(self.seam_ratio):
                place = ", at a window boundary" if self.at_boundary else ", inside a window (not at a boundary)"
            also = ", where the source jumps too" if self.reference_jumps_there else ""
            parts.append(f"largest jump at {where} ({self.largest_factor:.1f}× median){place}{also}")
        else:
            parts.append(f"no isolated jump (largest change at {where}, {self.largest_factor:.1f}× median)")
        line = "; ".join(parts)
        return line[0].upper() + line[1:] + "."


def _largest(d: np.ndarray) -> tuple[int, float]:
    k = int(np.argmax(d))
    median = float(np.median(d))
    return k, float(d[k] / median) if median > 0 else (float("inf") if d[k] > 0 else 1.0)


def read_profile(
    profile: np.ndarray, boundaries: Sequence[int] = (), reference: np.ndarray | None = None
) -> ProfileReading:
    """Read an adjacent-slice profile: seams at the window ``boundaries`` (b: slices b-1 and b, as in
    :func:`seam_ratio`), its largest jump, and with a ``reference`` profile (the source's, same slices) its
    change against the reference's. Thresholds: ``SEAM_EXCESS``, ``JUMP_FACTOR``, ``SAME_CHANGE``."""
    d = np.asarray(profile, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise ValueError(f"need a 1-D profile of at least one difference, got shape {d.shape}")
    k, factor = _largest(d)
    at_boundary = bool(_boundary_mask(len(d), boundaries)[k])
    if reference is None:
        return ProfileReading(k, factor, at_boundary, seam_ratio(d, boundaries))
    ref = np.asarray(reference, dtype=np.float64)
    if ref.shape != d.shape:
        raise ValueError(f"profile {d.shape} and reference {ref.shape} differ in length")
    ref_median = float(np.median(ref))
    return ProfileReading(
        k,
        factor,
        at_boundary,
        seam_ratio(d, boundaries),
        seam_ratio(ref, boundaries),
        float(d.mean() / ref.mean()) if ref.mean() > 0 else float("nan"),
        bool(ref_median > 0 and ref[k] > JUMP_FACTOR * ref_median),
    )
