"""Step-keyed datasets: item ``(step, i)`` is the i-th sample of the global batch of ``step``.

Every random choice of a sample (case, slice, window start, informed slice, flip) comes from a
generator seeded by ``(seed, step, i)``. The data order is therefore a pure function of the step, so a
resumed run sees exactly the batches an uninterrupted one would, whatever the number of workers, and a
DDP run with W processes of batch B sees the same samples as one process with batch W*B
(:class:`StepBatchSampler` gives rank r the indices ``[r*B, (r+1)*B)``).

Windows: a window has ``F = min(window, Z)`` frames (a volume shorter than the window gives one shorter
window, as the sampler does); all windows of a batch share the batch's smallest F. The start is drawn
in ``[0, Z - F]`` inclusive (the official loader never draws the last start: bug B9). The informed
slice is a slice of the same window (official), or, with ``informed: cross_volume``, the slice of another
training volume at the same relative position.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from napari_gem3d.masks import LabelSpec
from napari_gem3d.sampling.informed import relative_index

from .preprocess import CachedCase


def sample_rng(seed: int, step: int, index: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(step), int(index), int(stream)])


def torch_generator(seed: int, step: int, index: int, stream: int = 1) -> torch.Generator:
    """A CPU torch generator for the sample's noise and timestep (stream 1 by default)."""
    s = np.random.SeedSequence([int(seed), int(step), int(index), int(stream)]).generate_state(2, np.uint64)
    return torch.Generator().manual_seed(int(s[0] >> np.uint64(1)))


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields this rank's keys ``[(step, i), ...]`` for steps ``start_step .. total_steps - 1``."""

    def __init__(self, batch_size: int, total_steps: int, start_step: int = 0, rank: int = 0, world: int = 1):
        self.batch_size, self.total, self.start = batch_size, total_steps, start_step
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return max(0, self.total - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.total):
            lo = self.rank * self.batch_size
            yield [(step, lo + j) for j in range(self.batch_size)]


class _StepDataset(Dataset):
    def __init__(self, cases: Sequence[CachedCase], seed: int, flip_lr: float = 0.0):
        if not cases:
            raise ValueError("no training cases")
        self.cases, self.seed, self.flip_lr = list(cases), int(seed), float(flip_lr)

    def __len__(self) -> int:  # keys are (step, i); the length only matters to generic tooling
        return len(self.cases)

    def _flip(self, rng: np.random.Generator) -> bool:
        return bool(self.flip_lr > 0 and rng.random() < self.flip_lr)


def _maybe_flip(flip: bool, *arrays: np.ndarray) -> list[np.ndarray]:
    return [np.array(a[..., ::-1] if flip else a, copy=True, order="C") for a in arrays]


class SliceDataset(_StepDataset):
    """Single slices: ``image`` (1, h, w) in [-1, 1] and ``position`` p = k / Z (slice LDM, VAE)."""

    def __getitem__(self, key: tuple[int, int]) -> dict:
        step, i = key
        rng = sample_rng(self.seed, step, i)
        c = int(rng.integers(len(self.cases)))
        case = self.cases[c]
        k = int(rng.integers(case.num_slices))
        flip = self._flip(rng)
        (image,) = _maybe_flip(flip, np.asarray(case.image[k]))
        return {
            "image": torch.from_numpy(image)[None],
            "position": torch.tensor(k / case.num_slices, dtype=torch.float32),
            "case": torch.tensor(c),
            "slice": torch.tensor(k),
            "flip": torch.tensor(flip),
            "key": torch.tensor([step, i]),
        }


class WindowDataset(_StepDataset):
    """Windows: ``image`` (F, 1, h, w), ``mask`` (F, h, w) int64 labels, ``encoded_mask`` (F, Cm, h, w),
    ``informed`` (1, h, w) and ``informed_index`` (frame of the informed slice, -1 for cross-volume)."""

    def __init__(self, cases: Sequence[CachedCase], labels: LabelSpec, window: int, seed: int, *,
                 global_batch: int, informed: str = "window", cross_volume_prob: float = 1.0, flip_lr: float = 0.0):
        super().__init__(cases, seed, flip_lr)
        self.labels, self.window, self.global_batch = labels, int(window), int(global_batch)
        self.informed, self.cross_prob = informed, float(cross_volume_prob)

    def step_cases(self, step: int) -> np.ndarray:
        """The case of every sample of the global batch of ``step`` (shared by all ranks)."""
        return sample_rng(self.seed, step, 0, stream=7).integers(len(self.cases), size=self.global_batch)

    def frames(self, step: int) -> int:
        return min(self.window, *(self.cases[c].num_slices for c in self.step_cases(step)))

    def __getitem__(self, key: tuple[int, int]) -> dict:
        step, i = key
        rng = sample_rng(self.seed, step, i)
        c = int(self.step_cases(step)[i])
        case = self.cases[c]
        f = self.frames(step)
        z0 = int(rng.integers(0, case.num_slices - f + 1))  # inclusive upper bound (fixes B9)
        image = np.asarray(case.image[z0 : z0 + f])
        mask = np.asarray(case.mask[z0 : z0 + f])
        if self.informed == "cross_volume" and len(self.cases) > 1 and rng.random() < self.cross_prob:
            others = [o for o in range(len(self.cases)) if o != c]
            ref_case = others[int(rng.integers(len(others)))]
            k = int(rng.integers(f))
            ref_slice = relative_index((z0 + k) / case.num_slices, self.cases[ref_case].num_slices)
            informed_index = -1
        else:
            informed_index = int(rng.integers(f))
            ref_case, ref_slice = c, z0 + informed_index
        ref = np.asarray(self.cases[ref_case].image[ref_slice])
        flip = self._flip(rng)
        image, mask, ref = _maybe_flip(flip, image, mask, ref)
        return {
            "image": torch.from_numpy(image)[:, None],
            "mask": torch.from_numpy(mask.astype(np.int64)),
            "encoded_mask": torch.from_numpy(self.labels.encode(mask)),
            "informed": torch.from_numpy(ref)[None],
            "informed_index": torch.tensor(informed_index),
            "informed_case": torch.tensor(ref_case),
            "informed_slice": torch.tensor(ref_slice),
            "case": torch.tensor(c),
            "z0": torch.tensor(z0),
            "flip": torch.tensor(flip),
            "key": torch.tensor([step, i]),
        }


def collate(items: list[dict]) -> dict:
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}
