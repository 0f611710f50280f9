"""Frozen inputs and outputs of one generation (safe to hand to a worker thread)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..volume import require_finite

if TYPE_CHECKING:
    from .slice_prior import SliceNoisePrior

Mode = Literal["gem3d", "baseline"]

#: Output pixels per VAE call when ``decode_chunk`` is left to the sampler: 4 slices of 512^2. Decoding is
#: where a generation peaks, at ~3.8 kB per output pixel with the official VAE (measured, benchmarks/
#: bench_decode_memory.py: 948 MB per 512^2 slice in fp32 on the CPU, ~0.85 GiB in bf16 on an H100), so
#: this bounds that peak near 4 GB whatever the slice size; 16 slices of 512^2 peaked at 15.3 GiB.
DECODE_PIXELS = 2**20


#: Denoising solvers: "ddim" (the official sampler; stochastic with eta > 0), "dpmpp2m" (DPM-Solver++(2M):
#: deterministic, second order, about as good at 6-8 steps as DDIM at 25; eta does not apply) and "dpmpp2m_sde"
#: (its stochastic form: fresh noise at every step, drawn like DDIM's at eta > 0; eta does not apply).
SOLVERS: tuple[str, ...] = ("ddim", "dpmpp2m", "dpmpp2m_sde")


def adds_step_noise(solver: str, eta: float) -> bool:
    """Whether ``solver`` at ``eta`` adds fresh noise at every step (DDIM with eta > 0, DPM-Solver++(2M) SDE)."""
    return (solver == "ddim" and eta > 0) or solver == "dpmpp2m_sde"


#: Lesion guidance above this scale is refused: the output leaves what the network has seen (lesion_guidance.py).
MAX_LESION_GUIDANCE = 10.0


#: Seeds are whole numbers in [0, SEED_LIMIT): 64 bits, each giving its own noise.
SEED_LIMIT = 2**64


def check_seed(seed: object) -> int:
    """``seed`` as an int in [0, 2**64), or a ValueError that names the range."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < SEED_LIMIT:
        raise ValueError(f"seed must be a whole number from 0 to 2**64 - 1, got {seed!r}")
    return int(seed)


@dataclass(frozen=True)
class SamplingOptions:
    steps: int = 50
    eta: float = 1.0
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"  # "fp32" | "bf16" | "fp16" (half precision on GPU only)
    mode: Mode = "gem3d"  # "baseline": mask only, windows independent (Make-A-Volume)
    inpaint_overlap: bool = True  # paste re-noised known frames at every step (RePaint-style)
    official_compat: bool = False  # the official plan, re-noising levels and posterior sampling
    decode_chunk: int | None = None  # slices per VAE call (mask encoding, decoding); None: DECODE_PIXELS' worth
    overlap: int | None = None  # None: the bundle's overlap
    max_batch_windows: int = 2  # windows per UNet call (independent windows only: baseline)
    # "ddim", "dpmpp2m" or "dpmpp2m_sde" (DPM-Solver++(2M), eta is ignored; not with official_compat): SOLVERS
    solver: str = "ddim"
    # CPU threads: None leaves torch's setting alone; "auto" uses the idle cores at the start (threads.py)
    cpu_threads: int | str | None = None
    # correlation rho of the noise between neighbouring slices (one AR(1) field over the volume, GEM-3D mode
    # only; 0: independent windows as the paper; None: the model's prior, model_slice_noise_correlation, with
    # its coarse band). See propagate.slice_noise_field and slice_prior.py.
    slice_noise_correlation: float | None = 0.0
    # the coarse band's correlation (2 x 2 latent block means; slice_prior.py); None: rho's (one band), or
    # with slice_noise_correlation None the model's default (coarse_correlation_for)
    slice_noise_coarse_correlation: float | None = None
    # a true informed slice (InformedSlice.is_true_slice: slice `start` of this volume) is pasted into the result
    # as the start's known frame (True: this package's default before 2026-12-07), or only conditions the windows
    # and every slice is generated (False: as the official sampler; fewer slice-to-slice stripes, docs/evidence.md)
    paste_informed: bool = False
    # lesion guidance w: in windows whose mask holds lesion labels (the model card's), each label's effect on the
    # network's output (against the mask with that label taken out) w times (lesion_guidance.py); 1: no guidance
    lesion_guidance: float = 1.0

    def __post_init__(self):
        check_seed(self.seed)
        w = self.lesion_guidance
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 1.0 <= w <= MAX_LESION_GUIDANCE:
            raise ValueError(f"lesion_guidance must be a number from 1 (none) to {MAX_LESION_GUIDANCE:g}, "
                             f"got {w!r}")
        if w != 1.0 and self.mode != "gem3d":
            raise ValueError("lesion guidance applies to GEM-3D mode only: leave it at 1 in baseline mode")
        if w != 1.0 and self.official_compat:
            raise ValueError("official_compat reproduces the official sampler, which has no lesion guidance: leave "
                             "it at 1 with official_compat (--lesion-guidance, the docks' Lesion strength)")
        rho = self.slice_noise_correlation
        if rho is not None and not (isinstance(rho, (int, float)) and 0.0 <= rho < 1.0):
            raise ValueError(f"slice_noise_correlation must be in [0, 1) or None (the model's), got {rho!r}")
        coarse = self.slice_noise_coarse_correlation
        if coarse is not None and not (isinstance(coarse, (int, float)) and 0.0 <= coarse < 1.0):
            raise ValueError(f"slice_noise_coarse_correlation must be in [0, 1) or None, got {coarse!r}")
        if coarse and not rho and rho is not None:
            raise ValueError("a coarse slice-noise correlation needs slice_noise_correlation > 0 (or None)")
        if rho and (self.mode != "gem3d" or self.official_compat):
            raise ValueError("correlated slice noise applies to GEM-3D mode without official_compat only (the "
                             "baseline's trained temporal layers break with it): set it to 0")
        if not isinstance(self.paste_informed, bool):
            raise ValueError(f"paste_informed must be True or False, got {self.paste_informed!r}")
        if self.official_compat and self.paste_informed:
            raise ValueError("official_compat reproduces the official sampler, which never pastes the informed "
                             "slice into the result (it only conditions on it): leave pasting off with it "
                             "(--paste-informed, paste_informed)")
        if not (self.cpu_threads in (None, "auto") or (isinstance(self.cpu_threads, int) and self.cpu_threads >= 1)):
            raise ValueError(f"cpu_threads must be None, 'auto' or a count >= 1, got {self.cpu_threads!r}")
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be a positive integer, got {self.steps!r}")
        if not np.isfinite(self.eta) or self.eta < 0:
            raise ValueError(f"eta must be >= 0, got {self.eta}")
        if self.mode not in ("gem3d", "baseline"):
            raise ValueError(f"mode must be 'gem3d' or 'baseline', got {self.mode!r}")
        if (self.decode_chunk is not None and self.decode_chunk < 1) or self.max_batch_windows < 1:
            raise ValueError("decode_chunk (or None for automatic) and max_batch_windows must be >= 1")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {', '.join(map(repr, SOLVERS))}, got {self.solver!r}")
        if self.solver != "ddim" and self.official_compat:
            raise ValueError(
                "official_compat reproduces the official DDIM sampler: use solver='ddim' with it "
                f"(got solver={self.solver!r})"
            )

    @property
    def slice_prior(self) -> SliceNoisePrior | None:
        """The noise prior along the slices (None: independent noise); needs resolved options."""
        from .slice_prior import SliceNoisePrior  # torch: not at import (the plugin's manifest imports this)

        rho = self.slice_noise_correlation
        if not rho:
            return None
        coarse = self.slice_noise_coarse_correlation
        return SliceNoisePrior(rho=float(rho), coarse=float(rho if coarse is None else coarse))

    def chunk_for(self, height: int, width: int) -> int:
        """Slices per VAE call for ``height`` x ``width`` slices: ``decode_chunk``, or DECODE_PIXELS' worth."""
        return self.decode_chunk or max(1, DECODE_PIXELS // (height * width))


@dataclass(frozen=True)
class InformedSlice:
    """The patient prior: a model-grid image in [-1, 1] (h, w) and/or a latent (C, h/f, w/f)."""

    image: np.ndarray | None = None
    latent: np.ndarray | None = None
    source: dict[str, Any] = field(default_factory=dict)  # provenance: how it was picked or generated
    is_true_slice: bool = False  # it *is* slice `start` of the volume being generated (pasted as known)

    def __post_init__(self):
        if self.image is None and self.latent is None:
            raise ValueError("an informed slice needs an image or a latent")
        if self.image is not None and np.asarray(self.image).ndim != 2:
            raise ValueError(f"informed slice image must be 2-D (h, w), got shape {np.shape(self.image)}")
        for name, value in (("image", self.image), ("latent", self.latent)):
            if value is not None:
                require_finite(value, f"the informed slice's {name}")


@dataclass(frozen=True)
class SamplingRequest:
    """Everything a generation needs, on the model grid (slice axis first)."""

    mask: np.ndarray  # (Z, h, w) integer labels declared by the bundle
    start: int  # start slice index
    informed: InformedSlice | None = None  # required in "gem3d" mode
    options: SamplingOptions = field(default_factory=SamplingOptions)

    def __post_init__(self):
        if np.asarray(self.mask).ndim != 3:
            raise ValueError(f"mask must be (slices, h, w), got shape {np.shape(self.mask)}")
        if self.options.mode == "gem3d" and self.informed is None:
            raise ValueError("GEM-3D mode needs an informed slice (pick one or generate one), or use mode='baseline'")


@dataclass(frozen=True)
class WindowUpdate:
    """One finished window: slices ``[z0, z1)`` of the model grid are now final."""

    z0: int
    z1: int
    slices: np.ndarray  # (z1 - z0, h, w) float32 in [-1, 1], a CPU copy
    direction: str
    index: int  # 0-based count of finished windows
    total: int
    elapsed: float  # seconds since the generation started
    window_start: int = 0
    window_stop: int = 0


@dataclass
class SamplingResult:
    volume: np.ndarray  # (Z, h, w) float32 in [-1, 1] on the model grid
    latents: np.ndarray  # (Z, C, h/f, w/f) float32
    windows: list
    timings: dict[str, float]
    provenance: dict[str, Any]


#: quality presets, shared by the CLI (--quality) and the sampling dock: name -> (solver, steps, eta). DPM-Solver++
#: at 6 steps scored as DDIM-25 (eta 1 and eta 0) on held-out Colin27 in a third of the time (12 seeds; 8 steps,
#: the preset until 2026-12-07, scored the same and took 0.41), with lower window seams than DDIM
#: (benchmarks/bench_interactive.py, training/studies/REPORT.md); "official" is the paper's sampler (DDIM eta 1).
#: "standard" is deterministic DDIM (eta 0): on held-out Colin27 it scored MS-SSIM 0.546 against eta 1's 0.521,
#: with window seams 1.5x against 1.6x (3.2x before each slice's step noise was one field: docs/evidence.md);
#: eta does not apply to DPM-Solver++.
QUALITY_PRESETS: dict[str, tuple[str, int, float]] = {
    "fast": ("dpmpp2m", 6, 0.0),
    "standard": ("ddim", 25, 0.0),
    "official": ("ddim", 50, 1.0),
}
DEFAULT_QUALITY = "fast"

#: The slice-noise correlation for a GEM-3D network trained with independent frame noise (the paper's
#: training, ``UNetConfig.noise_correlation`` 0): a stop-gap measured in docs/evidence.md.
UNTRAINED_PRIOR_CORRELATION = 0.9
#: The coarse band's correlation by default (chosen on the demo model's training subjects, docs/evidence.md).
COARSE_SLICE_NOISE_CORRELATION = 0.995
#: Side of the latent blocks whose mean is the coarse band (slice_prior.py).
COARSE_BLOCK = 2


def coarse_correlation_for(rho: float) -> float:
    """The coarse band's default correlation with fine-band ``rho``: at least COARSE_SLICE_NOISE_CORRELATION
    (0 when the noise is independent)."""
    return max(float(rho), COARSE_SLICE_NOISE_CORRELATION) if rho > 0 else 0.0


def model_slice_noise_correlation(config: Any, mode: str = "gem3d", official_compat: bool = False) -> float:
    """The slice-noise correlation a bundle's network is sampled with by default: the prior its GEM-3D
    network was trained with (``noise_correlation``), 0.9 for one trained with independent noise, and 0 in
    baseline mode or with ``official_compat`` (the paper's sampler)."""
    volume = config.unets.get("volume")
    if mode != "gem3d" or official_compat or volume is None:
        return 0.0
    return float(volume.noise_correlation) or UNTRAINED_PRIOR_CORRELATION


def pastes_informed(options: SamplingOptions, true_slice: bool) -> bool:
    """Whether a generation with ``options`` holds its informed slice as the start's known frame (pasted into
    the result): GEM-3D mode, an informed slice that is the volume's own (``true_slice``,
    :attr:`InformedSlice.is_true_slice`) and ``paste_informed``."""
    return bool(options.mode == "gem3d" and true_slice and options.paste_informed)


def resolve_options(options: SamplingOptions, config: Any) -> SamplingOptions:
    """``options`` with numbers for the slice-noise prior: ``slice_noise_correlation`` None becomes the model's
    (:func:`model_slice_noise_correlation`) with its default coarse band unless one is given; a coarse band
    left None is the fine band's (one band), and so is any on a latent grid the blocks do not tile."""
    rho, coarse = options.slice_noise_correlation, options.slice_noise_coarse_correlation
    if rho is None:
        rho = model_slice_noise_correlation(config, options.mode, options.official_compat)
        coarse = coarse_correlation_for(rho) if coarse is None else coarse
    coarse = rho if coarse is None else coarse
    if any(int(n) % COARSE_BLOCK for n in config.latent_size):  # no 2 x 2 blocks on this grid: one band
        coarse = rho
    if (rho, coarse) == (options.slice_noise_correlation, options.slice_noise_coarse_correlation):
        return options
    return replace(options, slice_noise_correlation=rho, slice_noise_coarse_correlation=coarse)
