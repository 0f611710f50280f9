"""What every study shares: the demo run's cases and bundles, one cached sampling call, the measurements.

Everything happens on the model grid (slice axis first, 64 x 64 in-plane, intensities in [-1, 1]) of the
preprocessed cases that the demo recipe cached; volumes handed to the metrics carry the case's model affine,
so the axial/coronal/sagittal views of FID and the S axis of the consistency metric are the true ones.

Samples are cached in ``OUT/samples/<key>.npz`` (written atomically), so an interrupted study resumes.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_gem3d.lesions import random_augmentation
from napari_gem3d.metrics.consistency import axis_ratios, consistency, window_seams
from napari_gem3d.metrics.similarity import compare_volumes
from napari_gem3d.models import ModelBundle, load_bundle
from napari_gem3d.sampling import InformedSlice
from napari_gem3d.sampling.informed import generate_informed
from napari_gem3d.volume import Volume

from ..config import load_config
from ..data.preprocess import CachedCase, prepare_cases
from ..stages.common import sample_mask

#: demo_labels(): oedema, enhancing rim, necrotic core
TUMOUR_LABELS = (4, 5, 6)
#: the paper's lesion shift is 20-60 voxels on 512-wide slices; the same fraction of our 64-wide grid
SHIFT_RANGE = (3, 8)


@dataclass
class Sample:
    volume: np.ndarray  # (Z, h, w) in [-1, 1]
    mask: np.ndarray  # the mask it was generated from (augmented or not)
    provenance: dict
    seconds: float


@dataclass
class StudyContext:
    run: Path
    out: Path
    steps: int
    seeds: tuple[int, ...]
    device: str = "cpu"
    cases: dict[str, CachedCase] = field(default_factory=dict)
    heldout: tuple[str, ...] = ()
    training: tuple[str, ...] = ()
    other_runs: dict[str, Path] = field(default_factory=dict)  # e.g. "vq": a demo recipe run with --first-stage vq
    _bundles: dict[str, ModelBundle] = field(default_factory=dict)

    # ------------------------------------------------------------------------------------------ loading
    @classmethod
    def load(cls, run: Path, out: Path, *, steps: int, seeds: tuple[int, ...], device: str = "cpu"):
        cfg = load_config(run / "configs" / "baseline.yaml")
        ctx = cls(run=run, out=out, steps=steps, seeds=tuple(seeds), device=device)
        ctx._bundles["final"] = load_bundle(ctx.bundle_path("final"), device=device)
        cases = prepare_cases(cfg, ctx._bundles["final"].config.labels)
        ctx.cases = {c.name: c for c in cases}
        ctx.heldout = tuple(n for n in cfg.data.val_cases if n in ctx.cases)
        ctx.training = tuple(n for n in ctx.cases if n not in ctx.heldout)
        if not ctx.heldout:
            raise ValueError(f"{run}: the run's baseline config names no held-out case that exists")
        (out / "samples").mkdir(parents=True, exist_ok=True)
        return ctx

    def bundle_path(self, which: str) -> Path:
        """"final": the recipe's last bundle (volume + baseline + slice); "stage1": before stage 2; a name of
        ``other_runs``: that run's stage-2 bundle (GEM-3D; no baseline needed)."""
        if which in self.other_runs:
            run, stage = self.other_runs[which], "volume-stage2"
        else:
            run, stage = self.run, {"final": "baseline", "stage1": "volume-stage1"}[which]
        path = run / stage / "bundle"
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is missing: run python -m training.recipes.demo --out {run}")
        return path

    def bundle(self, which: str = "final") -> ModelBundle:
        if which not in self._bundles:
            self._bundles[which] = load_bundle(self.bundle_path(which), device=self.device)
        return self._bundles[which]

    # ------------------------------------------------------------------------------------------ inputs
    def volume(self, case: str, array: np.ndarray) -> Volume:
        return Volume(np.asarray(array, np.float32), np.asarray(self.cases[case].meta["model_affine"]))

    def spacing(self, case: str) -> np.ndarray:
        return np.sqrt((np.asarray(self.cases[case].meta["model_affine"])[:3, :3] ** 2).sum(axis=0))

    def augmented_mask(self, case: str, seed: int) -> np.ndarray:
        """The paper's mask augmentation (corrected): small rotations, L-R flip, tumour shifted inward."""
        mask = np.asarray(self.cases[case].mask).astype(np.int16)
        rng = np.random.default_rng(10_000 + seed)
        edit = random_augmentation(mask, rng, lesion_labels=TUMOUR_LABELS, spacing=self.spacing(case),
                                   flip_axis=2, shift_range=SHIFT_RANGE)
        return edit.mask

    def informed(self, case: str, kind: str, seed: int, start: int) -> InformedSlice | None:
        """"true": the case's own slice; "cross": the same relative slice of a training case (IC);
        "generated": the slice model's sample at that position (IG); "none": the baseline."""
        image = np.asarray(self.cases[case].image)
        if kind == "none":
            return None
        if kind == "true":
            return InformedSlice(image=image[start].copy(), source={"kind": "picked", "volume": case},
                                 is_true_slice=True)
        rel = start / max(image.shape[0] - 1, 1)
        if kind == "cross":
            donor = self.training[seed % len(self.training)]
            other = np.asarray(self.cases[donor].image)
            k = int(round(rel * (other.shape[0] - 1)))
            return InformedSlice(image=other[k].copy(), source={"kind": "picked", "volume": donor, "index": k})
        if kind == "generated":
            return generate_informed(self.bundle(), rel, seed=seed, steps=self.steps, device=self.device)
        raise ValueError(f"unknown informed-slice kind {kind!r}")

    # ------------------------------------------------------------------------------------------ sampling
    def sample(self, case: str, *, seed: int, informed: str = "true", augment: bool = False,
               model: str = "final", **options: Any) -> Sample:
        """One generation of held-out ``case`` (cached on disk by its full description)."""
        mode = "baseline" if informed == "none" else "gem3d"
        if mode == "gem3d" and not options.get("official_compat"):  # the model's noise prior unless told
            options.setdefault("slice_noise_correlation", None)
        if informed == "true":  # in the cache key: the default changed on 2026-12-07 (no longer pasted)
            options.setdefault("paste_informed", False)
        steps = options.pop("steps", self.steps)
        eta = options.pop("eta", 1.0)
        key = json.dumps(dict(case=case, seed=seed, informed=informed, augment=augment, model=model,
                              steps=steps, **({"eta": eta} if eta != 1.0 else {}), **options), sort_keys=True)
        name = f"{abs(hash_key(key)):016x}.npz"
        path = self.out / "samples" / name
        if path.is_file():
            with np.load(path) as f:
                return Sample(f["volume"], f["mask"], json.loads(str(f["provenance"])), float(f["seconds"]))
        mask = self.augmented_mask(case, seed) if augment else np.asarray(self.cases[case].mask)
        start = mask.shape[0] // 2
        inf = self.informed(case, informed, seed, start)
        result = sample_mask(self.bundle(model), mask, start=start, informed=inf, steps=steps, eta=eta,
                             seed=seed, device=self.device, mode=mode, **options)
        sample = Sample(result.volume.astype(np.float32), mask.astype(np.int16), result.provenance,
                        float(result.timings.get("total", 0.0)))
        _save_npz(path, volume=sample.volume, mask=sample.mask, seconds=sample.seconds,
                  provenance=json.dumps(_jsonable(sample.provenance)), key=key)
        return sample

    # ------------------------------------------------------------------------------------------ metrics
    def measure(self, case: str, sample: Sample) -> dict[str, float]:
        """MS-SSIM/PSNR to the real held-out volume, inter-slice consistency and seam ratios."""
        real = np.asarray(self.cases[case].image)
        sim = compare_volumes(real, sample.volume, device="cpu")
        seams = window_seams(sample.volume.shape[0], sample.provenance)
        real_volume, generated = self.volume(case, real), self.volume(case, sample.volume)
        cons = consistency(real_volume, generated, boundaries=seams)
        across, within = axis_ratios(generated, real_volume)
        return {
            "stripe_index": across / within,
            "slice_axis_ratio": across,
            "in_plane_ratio": within,
            "ms_ssim": float(sim["ms_ssim"]),
            "psnr_db": float(sim["psnr_db"]),
            "consistency_ratio": float(cons.ratio),
            "seam_ratio": float(cons.seam_ratio_generated),
            "seam_ratio_real": float(cons.seam_ratio_real),
            "seconds": sample.seconds,
        }


def hash_key(key: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def _save_npz(path: Path, **arrays: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.part")
    os.close(fd)
    try:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def summarise(values: list[float]) -> dict[str, float]:
    """Mean and standard deviation over the finite values; ``n`` counts them (nan: e.g. an empty label)."""
    a = np.asarray(values, dtype=np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(a.mean()), "std": float(a.std()), "n": int(a.size)}

