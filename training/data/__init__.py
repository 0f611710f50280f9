"""Raw data -> cached model-grid cases -> step-keyed datasets."""

from .datasets import SliceDataset, StepBatchSampler, WindowDataset, collate, sample_rng, torch_generator
from .preprocess import CachedCase, Settings, cached_case, prepare_cases, preprocess_case
from .sources import RawCase, raw_cases

__all__ = [
    "CachedCase", "RawCase", "Settings", "SliceDataset", "StepBatchSampler", "WindowDataset", "cached_case",
    "collate", "prepare_cases", "preprocess_case", "raw_cases", "sample_rng", "torch_generator",
]
