"""Pieces every stage shares: the train/validation split, latents of cached cases, validation sampling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_gem3d.models import ModelBundle
from napari_gem3d.volume import Volume

from ..data.preprocess import CachedCase, prepare_cases
from ..engine.dist import DistInfo, barrier


def split_cases(cfg, labels, info: DistInfo) -> tuple[list[CachedCase], list[CachedCase]]:
    """Preprocess (rank 0 first, the others read the cache) and split by ``data.val_cases``."""
    if info.is_main:
        cases = prepare_cases(cfg, labels)
    barrier(info)
    if not info.is_main:
        cases = prepare_cases(cfg, labels)
    names = {c.name for c in cases}
    unknown = sorted(set(cfg.data.val_cases) - names)
    if unknown:
        raise ValueError(f"data.val_cases {unknown} are not among the cases {sorted(names)}")
    train = [c for c in cases if c.name not in cfg.data.val_cases]
    val = [c for c in cases if c.name in cfg.data.val_cases]
    if not train:
        raise ValueError("every case is a validation case; nothing left to train on")
    return train, val


def val_case(cfg, train: list[CachedCase], val: list[CachedCase]) -> CachedCase:
    pool = val or train
    if cfg.val.case is not None:
        for c in [*val, *train]:
            if c.name == cfg.val.case:
                return c
        raise ValueError(f"val.case {cfg.val.case!r} is not a case")
    return pool[0]


class LatentStore:
    """Scaled posterior-mean latents of whole cached cases (encoded once per case and flip, lazily).

    The VAE is frozen in the diffusion stages and the posterior mean is deterministic, so encoding a
    case once is the same as encoding every batch again, only cheaper.
    """

    def __init__(self, bundle: ModelBundle, cases: list[CachedCase], device: torch.device, chunk: int = 32):
        self.codec, self.cases, self.device, self.chunk = bundle.codec, cases, device, chunk
        self._memo: dict[tuple[int, bool], torch.Tensor] = {}

    @torch.no_grad()
    def case(self, index: int, flip: bool = False) -> torch.Tensor:
        key = (int(index), bool(flip))
        if key not in self._memo:
            img = np.asarray(self.cases[index].image)
            if flip:
                img = img[..., ::-1]
            x = torch.from_numpy(np.array(img, order="C"))[:, None].to(self.device)  # a writable copy
            self._memo[key] = self.codec.encode(x, chunk=self.chunk).float()
        return self._memo[key]

    def window(self, cases: torch.Tensor, starts: torch.Tensor, frames: int, flips: torch.Tensor) -> torch.Tensor:
        """(B, F, C, h, w) latents of the batch's windows."""
        return torch.stack([self.case(int(c), bool(f))[int(s) : int(s) + frames]
                            for c, s, f in zip(cases, starts, flips, strict=False)])

    def slices(self, cases: torch.Tensor, index: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) latents of single slices."""
        return torch.stack([self.case(int(c), bool(f))[int(k)] for c, k, f in zip(cases, index, flips, strict=False)])


def model_volume(case: CachedCase, array: np.ndarray) -> Volume:
    """A model-grid array as a Volume in its true world position (for montages and NIfTI files)."""
    return Volume(np.asarray(array), np.asarray(case.meta["model_affine"]))


def sample_mask(bundle: ModelBundle, mask: np.ndarray, *, start: int, informed=None, **options) -> Any:
    """Generate from a model-grid ``mask`` with THE generator; ``options`` are ``SamplingOptions`` fields.

    Returns the ``SamplingResult`` (volume in [-1, 1], latents, timings, provenance).
    """
    from napari_gem3d.sampling import SamplingOptions, SamplingRequest
    from napari_gem3d.sampling.pipeline import run_to_end
    from napari_gem3d.sampling.propagate import generate

    request = SamplingRequest(mask=np.asarray(mask).astype(np.int64), start=int(start), informed=informed,
                              options=SamplingOptions(**options))
    return run_to_end(generate(bundle, request))


def sample_case(bundle: ModelBundle, case: CachedCase, *, mode: str, steps: int, eta: float, seed: int,
                device: torch.device, max_slices: int = 0, start: int | None = None) -> tuple[np.ndarray, dict]:
    """Generate ``case``'s volume from its mask (and its true middle slice for GEM-3D) with THE generator and
    the defaults users get (GEM-3D: the model's slice-noise prior)."""
    from napari_gem3d.sampling import InformedSlice

    mask = np.asarray(case.mask)
    image = np.asarray(case.image)
    if max_slices and mask.shape[0] > max_slices:
        z0 = (mask.shape[0] - max_slices) // 2
        mask, image = mask[z0 : z0 + max_slices], image[z0 : z0 + max_slices]
    s = mask.shape[0] // 2 if start is None else start
    informed = InformedSlice(image=image[s].copy(), source={"kind": "picked", "volume": case.name, "index": s},
                             is_true_slice=True) if mode == "gem3d" else None
    result = sample_mask(bundle, mask, start=s, informed=informed, steps=steps, eta=eta, seed=seed,
                         device=str(device), mode=mode,
                         slice_noise_correlation=None if mode == "gem3d" else 0.0)  # as users sample: the model's
    return result.volume, {"image": image, "mask": mask, "timings": result.timings}


def save_val_montage(path: Path, case: CachedCase, rows: list[tuple[str, np.ndarray, str]], title: str) -> Path:
    from napari_gem3d.montage import save_montage

    affine = np.asarray(case.meta["model_affine"])
    vols = [(name, Volume(np.asarray(arr), affine)) for name, arr, _ in rows]
    return save_montage(vols, path, kinds=[k for _, _, k in rows], title=title)
