"""Dataset runner of ``gem3d enhance`` and ``gem3d harmonize``: jobs, resuming, provenance.

Cases come from :mod:`napari_gem3d.cases` (pairing by name or CSV) and are sharded over ``torchrun``
processes by :mod:`napari_gem3d.distributed`.

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

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cases import Case
from .files import file_sha256
from .io import atomic_write, volume_suffix, write_volume


def job_seed(base: int, *parts: object) -> int:
    """A 31-bit seed from a base seed and the job's identity (stable when cases are added or removed)."""
    text = ":".join(str(p) for p in (base, *parts)).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:4], "little") & 0x7FFFFFFF


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
