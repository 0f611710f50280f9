"""Variant studies: many generations from one input, driven through the one sampler generator.

- :func:`counterfactuals`: one mask x K informed slices (the same anatomy, K patient priors / styles).
- :func:`deenhance`: one informed slice x K (image, mask) cases (dataset-level harmonisation).

Both are generators: they yield a :class:`StudyUpdate` for every finished window of every case (so a
GUI can fill results live and show one progress bar over the whole study) and return a list of
:class:`StudyResult` (generated volume in the case's geometry, reference image, provenance).
:func:`difference_map` and :func:`export_results` turn results into files; :func:`adjacent_differences`
measures slice-to-slice consistency (the inspector's plot); :class:`TimeLeft` estimates a running study's
remaining time from its updates.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..volume import IntensityNorm, Volume, model_grid, same_grid
from .cancel import CancelToken
from .informed import relative_index
from .plan import plan_windows
from .request import InformedSlice, SamplingOptions, WindowUpdate, pastes_informed

VolumeSource = Volume | str | os.PathLike


@dataclass(frozen=True)
class StudyCase:
    """One input of a study: a mask and, optionally, its own image (geometry/difference reference).

    Either may be a path; files are read when the case is generated (inside the worker).
    """

    name: str
    mask: VolumeSource
    image: VolumeSource | None = None


@dataclass(frozen=True)
class StudyUpdate:
    """One finished window of case ``case`` (0-based) of ``cases``; ``done``/``total`` count windows."""

    case: int
    cases: int
    name: str
    window: WindowUpdate
    done: int
    total: int


@dataclass
class StudyResult:
    name: str
    volume: Volume  # generated, in the case's geometry; provenance in header["provenance"]
    reference: Volume | None  # the case's own image (for difference maps), if any
    provenance: dict[str, Any] = field(default_factory=dict)


class TimeLeft:
    """Seconds left in a study at the mean time per window, known once its first variant has finished.

    Feed it every :class:`StudyUpdate` as it arrives. The clock starts at the first finished window, so the
    set-up before it (the model moving to its device, synthetic informed slices) does not inflate the mean.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self._start: tuple[float, int] | None = None  # (time, windows done) at the first update

    def __call__(self, update: StudyUpdate) -> float | None:
        now = self.clock()
        if self._start is None:
            self._start = (now, update.done)
        started, done_then = self._start
        if update.case == 0 or update.done <= done_then:
            return None
        per_window = (now - started) / (update.done - done_then)
        return per_window * max(update.total - update.done, 0)


def progress_text(update: StudyUpdate, seconds: float | None, noun: str = "variant") -> str:
    """``"variant 2 of 3, ~40 s left"`` (``"..., estimating time left…"`` before the estimate exists)."""
    head = f"{noun} {update.case + 1} of {update.cases}"
    if seconds is None:
        return f"{head}, estimating time left…"
    if seconds < 0.5:
        return f"{head}, almost done"
    left = f"~{max(1, round(seconds))} s" if seconds < 90 else f"~{round(seconds / 60)} min"
    return f"{head}, {left} left"


def find_cases(folder: str | os.PathLike) -> list[StudyCase]:
    """(image, mask) cases in ``folder``, in name order. Layouts understood:

    - one sub-folder per case holding ``image.<ext>`` and ``mask.<ext>`` (the bundled demo case);
    - ``imagesTr/`` + ``labelsTr/`` (MSD / nnU-Net; the ``_0000`` channel suffix is ignored);
    - flat ``<name>_image.<ext>`` + ``<name>_mask.<ext>`` pairs.

    ``<ext>`` is .nii, .nii.gz, .nrrd or .nhdr. A mask without an image is a case without reference.
    """
    from ..io import READ_SUFFIXES

    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder")

    def volumes(where: Path) -> dict[str, Path]:
        out = {}
        for path in sorted(where.iterdir()) if where.is_dir() else []:
            name = path.name
            for suffix in READ_SUFFIXES:
                if name.lower().endswith(suffix) and path.is_file():
                    out[name[: -len(suffix)]] = path
        return out

    cases = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and p.name not in ("imagesTr", "labelsTr")):
        found = volumes(sub)
        if "mask" in found:
            cases.append(StudyCase(sub.name, found["mask"], found.get("image")))
    images, labels = volumes(folder / "imagesTr"), volumes(folder / "labelsTr")
    images = {re.sub(r"_0000$", "", k): v for k, v in images.items()}
    cases += [StudyCase(name, path, images.get(name)) for name, path in labels.items()]
    flat = volumes(folder)
    for key, path in flat.items():
        if key.endswith("_mask"):
            name = key[: -len("_mask")]
            cases.append(StudyCase(name, path, flat.get(f"{name}_image")))
    if not cases:
        raise FileNotFoundError(
            f"no cases found in {folder}: expected case folders with image.nii.gz + mask.nii.gz, "
            "imagesTr/ + labelsTr/, or <name>_image.nii.gz + <name>_mask.nii.gz pairs"
        )
    return cases


def _read(source: VolumeSource | None) -> Volume | None:
    if source is None or isinstance(source, Volume):
        return source
    from ..io import read_volume

    return read_volume(source)


def _position(informed: InformedSlice | None, position: float | None) -> float:
    """Explicit position, else the informed slice's own relative position (same anatomy), else 0.5."""
    if position is not None:
        return float(position)
    if informed is not None and "position" in informed.source:
        return float(informed.source["position"])
    return 0.5


def count_windows(
    config, mask: Volume, position: float, options: SamplingOptions, informed: InformedSlice | None = None
) -> int:
    """Number of windows (= updates) one generation of ``mask`` will yield (cheap: no resampling)."""
    grid = model_grid(mask, config.image_size, config.slice_axis)
    start_known = pastes_informed(options, informed is not None and informed.is_true_slice)
    overlap = config.overlap if options.overlap is None else options.overlap
    return len(
        plan_windows(
            grid.num_slices,
            config.window,
            overlap,
            relative_index(position, grid.num_slices),
            start_known=start_known,
            official=options.official_compat,
        )
    )


def _run_case(
    bundle,
    index: int,
    cases: int,
    name: str,
    mask: Volume,
    *,
    image: Volume | None,
    informed: InformedSlice | None,
    position: float,
    options: SamplingOptions,
    cancel: CancelToken | None,
    done: int,
    total: int,
) -> Generator[StudyUpdate, None, Any]:
    from .pipeline import sample_volume

    gen = sample_volume(
        bundle, mask, image=image, informed=informed, position=position, options=options, cancel=cancel
    )
    while True:
        try:
            update = next(gen)
        except StopIteration as stop:
            return stop.value
        done += 1
        yield StudyUpdate(case=index, cases=cases, name=name, window=update, done=done, total=total)


def _result(name: str, generated, source: Volume, reference: Volume | None, study: dict) -> StudyResult:
    provenance = {**generated.provenance, "study": study}
    volume = source.with_array(generated.volume.array, provenance=provenance, source=None)
    return StudyResult(name=name, volume=volume, reference=reference, provenance=provenance)


def counterfactuals(
    bundle,
    mask: Volume,
    informed: Sequence[tuple[str, InformedSlice]],
    *,
    image: Volume | None = None,
    position: float | None = None,
    options: SamplingOptions | None = None,
    cancel: CancelToken | None = None,
) -> Generator[StudyUpdate, None, list[StudyResult]]:
    """One mask x K informed slices ``[(name, slice), ...]``; every variant uses the same seed.

    With ``image`` (the mask's own image) outputs are in its intensity units and it is the difference
    reference; otherwise each output is in the units of its informed slice's source when known.
    The start position is ``position``, or each informed slice's own relative position.
    """
    options = options or SamplingOptions()
    if not informed:
        raise ValueError("a counterfactual study needs at least one informed slice")
    positions = [_position(inf, position) for _, inf in informed]
    total = sum(
        count_windows(bundle.config, mask, p, options, inf)
        for p, (_, inf) in zip(positions, informed, strict=True)
    )
    results, done = [], 0
    for k, ((name, inf), p) in enumerate(zip(informed, positions, strict=True)):
        generated = yield from _run_case(
            bundle,
            k,
            len(informed),
            name,
            mask,
            image=image,
            informed=inf,
            position=p,
            options=options,
            cancel=cancel,
            done=done,
            total=total,
        )
        done += generated.provenance["num_windows"]
        study = {"kind": "counterfactual", "index": k, "count": len(informed), "name": name, "position": p}
        results.append(_result(name, generated, mask, image, study))
    return results


def deenhance(
    bundle,
    cases: Sequence[StudyCase],
    informed: InformedSlice,
    *,
    position: float | None = None,
    options: SamplingOptions | None = None,
    cancel: CancelToken | None = None,
) -> Generator[StudyUpdate, None, list[StudyResult]]:
    """One informed slice x K cases: every case re-made in the informed slice's style.

    Outputs are in the informed slice's source intensity units when known (the harmonisation target),
    in each case's own geometry. Each case's image, if given, is its difference reference.
    """
    options = options or SamplingOptions()
    if not cases:
        raise ValueError("a de-enhancement study needs at least one (image, mask) case")
    if informed.is_true_slice:
        informed = replace(informed, is_true_slice=False)  # it is not a slice of the other cases
    p = _position(informed, position)
    masks = [_read(case.mask) for case in cases]  # labels are small; needed up front for the window count
    total = sum(count_windows(bundle.config, mask, p, options, informed) for mask in masks)
    results, done = [], 0
    for k, (case, mask) in enumerate(zip(cases, masks, strict=True)):
        image = _read(case.image)
        if image is not None and not same_grid(image, mask):
            raise ValueError(
                f"case {case.name!r}: image {image.shape} and mask {mask.shape} do not share one "
                "geometry; resample the mask onto the image first"
            )
        generated = yield from _run_case(
            bundle,
            k,
            len(cases),
            case.name,
            mask,
            image=None,
            informed=informed,
            position=p,
            options=options,
            cancel=cancel,
            done=done,
            total=total,
        )
        done += generated.provenance["num_windows"]
        study = {"kind": "deenhance", "index": k, "count": len(cases), "name": case.name, "position": p}
        results.append(_result(case.name, generated, mask, image, study))
    return results


# ------------------------------------------------------------------------------------ derived arrays
def difference_map(generated: Volume, reference: Volume, *, normalize: bool = True) -> Volume:
    """``generated - reference`` on their shared grid (new float32 Volume in that geometry).

    With ``normalize`` both are first mapped to [-1, 1] by their own 0.5-99.5 percentile window, so maps
    are comparable across cases whose intensity units differ.
    """
    if not same_grid(generated, reference):
        raise ValueError(
            f"difference map needs one geometry: generated {generated.shape} vs reference {reference.shape} "
            "(and equal affines); generate in the reference's geometry first"
        )
    a = np.asarray(generated.array, dtype=np.float32)
    b = np.asarray(reference.array, dtype=np.float32)
    if normalize:
        norm = IntensityNorm("percentile")
        a, b = norm.fit(a).forward(a), norm.fit(b).forward(b)
    made = generated.header.get("provenance", {})
    provenance: dict[str, Any] = {
        "difference": {
            "normalized": normalize,
            "generated": made.get("study"),
            "reference": Path(str(reference.header.get("source", ""))).name,
        }
    }
    if "model" in made:  # derived from a model's output: read back, it is a result, not a scan
        provenance["model"] = made["model"]
    header = {"provenance": provenance}
    return Volume((a - b).astype(np.float32), generated.affine, header)


def adjacent_differences(volume: Volume, slice_axis: str = "S", *, normalize: bool = True) -> np.ndarray:
    """Mean absolute difference between neighbouring slices along ``slice_axis`` (length Z - 1).

    Slices are taken in the model frame (``volume.model_grid``'s reorientation), so index z matches
    the sampler's window plan. A seam between generated windows shows up as a spike.
    """
    from nibabel.orientations import apply_orientation

    grid = model_grid(volume, (1, 1), slice_axis)  # only the reorientation is used
    array = np.asarray(apply_orientation(np.asarray(volume.array, dtype=np.float32), grid.ornt))
    if normalize:
        array = IntensityNorm("percentile").fit(array).forward(array)
    if array.shape[0] < 2:
        return np.zeros(0, np.float32)
    return np.abs(np.diff(array, axis=0)).mean(axis=(1, 2)).astype(np.float32)


# ------------------------------------------------------------------------------------------- export
def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "result"


def export_results(
    results: Sequence[StudyResult],
    folder: str | os.PathLike,
    *,
    overwrite: bool = False,
    difference: bool = True,
    dtype: Any = None,
    inputs: Sequence[tuple[str, Any]] = (),
) -> list[Path]:
    """Write every result (``NN_name.nii.gz``), its difference map (``NN_name_diff.nii.gz``) and one
    ``provenance.json`` index into ``folder``; every file is written atomically. Returns the paths.

    Results are stored as ``dtype`` (:func:`napari_gem3d.outputs.cast_output`; float32 when None). No
    file is written when any planned path is one of ``inputs`` or a file a result was read against,
    whatever ``overwrite`` says.
    """
    from ..io import atomic_write, write_volume
    from ..outputs import cast_output, refuse_inputs

    folder = Path(folder)
    planned = []
    for k, res in enumerate(results):
        stem = f"{k:02d}_{_slug(res.name)}"
        planned.append((res, folder / f"{stem}.nii.gz", folder / f"{stem}_diff.nii.gz"))
    index_path = folder / "provenance.json"
    sources = [("reference", r.reference.header.get("source")) for r in results if r.reference is not None]
    refuse_inputs([p for _, a, b in planned for p in (a, b)] + [index_path], [*inputs, *sources], "")
    folder.mkdir(parents=True, exist_ok=True)
    if not overwrite:
        existing = [p for _, a, b in planned for p in (a, b) if p.exists()]
        existing += [index_path] if index_path.exists() else []
        if existing:
            raise FileExistsError(f"{existing[0]} exists; choose an empty folder or pass overwrite=True")
    written, entries = [], []
    for res, path, diff_path in planned:
        array, stored = cast_output(res.volume.array, np.dtype(dtype or np.float32))
        write_volume(res.volume.with_array(array), path, provenance={**res.provenance, "output": stored},
                     overwrite=True)
        written.append(path)
        entry: dict[str, Any] = {"name": res.name, "file": path.name, "provenance": res.provenance}
        if difference and res.reference is not None:
            diff = difference_map(res.volume, res.reference)
            write_volume(diff, diff_path, provenance=diff.header["provenance"], overwrite=True)
            written.append(diff_path)
            entry["difference"] = diff_path.name
        entries.append(entry)
    with atomic_write(index_path, "w") as fh:
        json.dump({"generator": "napari-gem3d", "results": entries}, fh, indent=1, default=_json_safe)
    written.append(index_path)
    return written


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


__all__ = [
    "StudyCase",
    "StudyResult",
    "StudyUpdate",
    "TimeLeft",
    "adjacent_differences",
    "count_windows",
    "counterfactuals",
    "deenhance",
    "difference_map",
    "export_results",
    "find_cases",
    "progress_text",
]
