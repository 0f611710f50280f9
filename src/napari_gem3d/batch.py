"""Dataset runner of ``gem3d enhance`` and ``gem3d harmonize``: pairing, sharding, resuming, provenance.

Pairing images and masks (:func:`pair_cases`)
    1. ``--pairs CSV`` with the header ``case,image,mask`` (paths absolute or relative to the CSV's folder;
       ``image`` may be empty where no image is needed); otherwise
    2. by file name. A file's *key* is its name without ``.nii.gz`` / ``.nii`` / ``.nrrd`` / ``.nhdr``;
       one role suffix is removed: images ``_image``, ``_img``, ``_0000`` (nnU-Net channel 0); masks
       ``_mask``, ``_seg``, ``_label``, ``_labels``. Files with equal keys form a case named by the key
       (``brain7.nii.gz`` + ``brain7.nii.gz``, ``brain7_image.nii.gz`` + ``brain7_mask.nii.gz``,
       ``brain7_0000.nii.gz`` + ``brain7.nii.gz``). Hidden files (``.*``, e.g. unfinished temporary
       files) are ignored. Any file without a partner is an error that names it.

Sharding (:func:`dist_env`, :func:`shard`)
    Launched with ``torchrun --nproc_per_node K``, each process reads ``RANK``, ``WORLD_SIZE`` and
    ``LOCAL_RANK`` and takes the jobs ``i`` with ``i % WORLD_SIZE == RANK`` of the sorted job list (no
    process group is needed). Each process uses ``cuda:LOCAL_RANK`` when CUDA is available; on the CPU
    the cores are split between the local processes.

Resuming (:func:`run_jobs`, :func:`is_finished`)
    A job's outputs are written atomically (``io.write_volume``: temporary file + ``os.replace``), then
    its provenance JSON ``<out>/provenance/<name>.json`` is written LAST, also atomically. A job is
    finished only when that JSON exists, describes the *same* job (inputs' SHA-256, seed, position,
    sampling options, model hash) and lists outputs that exist with the recorded size and SHA-256. Any
    other state (no JSON, other settings, a missing or changed output) is redone; stale temporary files
    of the job are removed first.

Output layout: ``<out>/images/<name><suffix>``, ``<out>/masks/<name><suffix>`` (the case's mask, so the
folder is a ready image/mask data set) and ``<out>/provenance/<name>.json``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .files import file_sha256
from .io import READ_SUFFIXES, atomic_write, volume_suffix, write_volume

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


def job_seed(base: int, *parts: object) -> int:
    """A 31-bit seed from a base seed and the job's identity (stable when cases are added or removed)."""
    text = ":".join(str(p) for p in (base, *parts)).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:4], "little") & 0x7FFFFFFF


# ------------------------------------------------------------------------------------------ distribution
def dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) when not launched by it."""
    try:
        rank = int(os.environ.get("RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise ValueError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers: {exc}") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"invalid RANK={rank} for WORLD_SIZE={world}")
    return rank, world, local


def shard(items: Sequence, rank: int, world: int) -> list:
    """The items this process owns: index i with i % world == rank."""
    return [x for i, x in enumerate(items) if i % world == rank]


def rank_device(requested: str, local_rank: int) -> str:
    """``cuda:LOCAL_RANK`` for auto/cuda when CUDA is available, else the requested (or auto) device."""
    import torch

    from .sampling.device import resolve_device

    if requested in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{local_rank % torch.cuda.device_count()}"
    return str(resolve_device(requested))


def share_cpu_threads(device: str) -> None:
    """Split the CPU cores between the processes torchrun started on this machine."""
    import torch

    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    if device.startswith("cpu") and local_world > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))


# ---------------------------------------------------------------------------------------------- jobs
@dataclass(frozen=True)
class Job:
    name: str  # output stem
    case: Case
    spec: Mapping[str, Any]  # everything that determines the outputs (JSON-safe)
    suffix: str = ".nii.gz"


@dataclass
class Summary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def line(self, rank: int = 0, world: int = 1) -> str:
        return (
            f"rank {rank}/{world}: {len(self.done)} written, {len(self.skipped)} already finished (skipped), "
            f"{len(self.failed)} failed"
        )


def output_paths(out: Path, job: Job) -> dict[str, Path]:
    return {
        "image": out / "images" / f"{job.name}{job.suffix}",
        "mask": out / "masks" / f"{job.name}{job.suffix}",
    }


def sidecar_path(out: Path, name: str) -> Path:
    return out / "provenance" / f"{name}.json"


def _canonical(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def is_finished(out: str | Path, job: Job) -> bool:
    """True only when the job's provenance JSON exists, matches the job and its outputs are intact."""
    out = Path(out)
    try:
        record = json.loads(sidecar_path(out, job.name).read_text(encoding="utf-8"))
        if record.get("job") != _canonical(dict(job.spec)):
            return False
        for entry in record["outputs"].values():
            path = out / entry["file"]
            if (
                not path.is_file()
                or path.stat().st_size != entry["bytes"]
                or file_sha256(path) != entry["sha256"]
            ):
                return False
        return True
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _remove_stale_temps(paths: Iterable[Path]) -> None:
    for p in paths:
        stem = p.name[: len(p.name) - len(volume_suffix(p) or p.suffix)]
        pattern = re.compile(rf"^\.{re.escape(stem)}\.[0-9a-f]{{12}}\.tmp")
        if p.parent.is_dir():
            for t in p.parent.iterdir():
                if pattern.match(t.name):
                    t.unlink(missing_ok=True)


Produce = Callable[[Job], tuple[dict[str, Any], dict[str, Any]]]


def run_jobs(
    jobs: Sequence[Job],
    out: str | Path,
    produce: Produce,
    *,
    rank: int = 0,
    world: int = 1,
    log: Callable[[str], None] = print,
) -> Summary:
    """Run this process's ``jobs`` (already sharded): skip finished ones, write outputs, then the JSON.

    ``produce(job) -> ({"image": (Volume, dtype), "mask": (Volume, dtype)}, provenance)``.
    A failing job is reported and the others go on.
    """
    out = Path(out)
    for sub in ("images", "masks", "provenance"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    summary = Summary()
    for n, job in enumerate(jobs, start=1):
        if is_finished(out, job):
            summary.skipped.append(job.name)
            continue
        paths = output_paths(out, job)
        sidecar = sidecar_path(out, job.name)
        _remove_stale_temps([*paths.values(), sidecar])
        sidecar.unlink(missing_ok=True)  # a stale record must not vouch for new outputs
        t0 = time.perf_counter()
        try:
            volumes, provenance = produce(job)
            entries = {}
            for role, (volume, dtype) in volumes.items():
                path = paths[role]
                write_volume(
                    volume,
                    path,
                    dtype=dtype,
                    provenance=provenance if role == "image" else None,
                    overwrite=True,
                )
                entries[role] = {
                    "file": str(path.relative_to(out)),
                    "bytes": path.stat().st_size,
                    "sha256": file_sha256(path),
                }
            record = {
                "job": _canonical(dict(job.spec)),
                "outputs": entries,
                "provenance": _canonical(provenance),
                "rank": rank,
                "world_size": world,
                "seconds": round(time.perf_counter() - t0, 3),
                "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            with atomic_write(sidecar, "w") as fh:  # LAST: its presence marks the job finished
                json.dump(record, fh, indent=1, sort_keys=True)
            summary.done.append(job.name)
            log(f"[rank {rank}] {n}/{len(jobs)} {job.name}: written ({record['seconds']:.1f} s)")
        except Exception as exc:  # noqa: BLE001 - one bad case must not stop the data set
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            summary.failed[job.name] = message
            log(f"[rank {rank}] {n}/{len(jobs)} {job.name}: FAILED: {message}")
    return summary


# ------------------------------------------------------------------------------------- spec helpers
def options_spec(options) -> dict[str, Any]:
    """Sampling options that change the output (the device does not)."""
    from dataclasses import asdict

    spec = asdict(options)
    spec.pop("device", None)
    return spec


def model_spec(bundle) -> dict[str, Any]:
    return {"name": bundle.config.name, "hash": bundle.model_hash}


def output_suffix(case: Case) -> str:
    """Outputs keep the input's format: ``.nrrd`` for NRRD inputs, else the NIfTI suffix."""
    suffix = volume_suffix(case.image or case.mask)
    return ".nrrd" if suffix in (".nrrd", ".nhdr") else suffix or ".nii.gz"
