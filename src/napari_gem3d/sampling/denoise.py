"""The DDIM loop over a batch of windows, with known-frame replacement (RePaint-style).

Known frames hold latents that were generated before (the overlap with the previous window,
or the true start slice). Before the loop and after every step they are replaced by those
latents re-noised to ``plan.renoise_a`` (the current noise level of x; the official levels in
``official_compat`` plans). The same loop samples the slice model (no known frames).

A :class:`~napari_gem3d.diffusion.DPMPlan` runs DPM-Solver++(2M) instead (deterministic, no "ddim"
draws), with the same known-frame rule: pasted at the first timestep's level before the first model
call and at the level x lands on after every step; the last step lands on clean data (alpha-bar 1),
so the known frames come out as their clean latents.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from ..diffusion import DDIMPlan, DPMPlan, data_prediction, ddim_step, dpm_step
from .cancel import CancelToken
from .request import SOLVERS, check_seed
from .slice_prior import SliceNoisePrior

#: Seeded streams of the per-step volume noise fields (:class:`StepNoiseFields`): one per step from here.
STEP_FIELD_STREAM = 1 << 31


class NoiseSource(Protocol):
    def draw(self, kind: str, shape: tuple[int, ...]) -> torch.Tensor:
        """One standard-normal tensor; ``kind`` is "x_T", "ddim" or "known"."""


class SeededNoise:
    """Per-window noise from its own CPU generator, so a window's draws do not depend on batching."""

    def __init__(self, seed: int, stream: int):
        # the whole seed is entropy (seeds below 2**32 draw what they always drew; larger ones differ)
        state = np.random.SeedSequence([check_seed(seed), int(stream)]).generate_state(2)
        self.generator = torch.Generator("cpu").manual_seed(int(state[0]) << 32 | int(state[1]))

    def draw(self, kind: str, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator, dtype=torch.float32)


def sampling_plan(schedule, steps: int, eta: float, solver: str = "ddim", official_compat: bool = False):
    """The per-step plan of ``solver``: a :class:`DDIMPlan` ("ddim") or a :class:`DPMPlan` ("dpmpp2m",
    deterministic, or "dpmpp2m_sde", its stochastic form; ``eta`` does not apply to either), the one place the
    sampler and the slice model choose it."""
    from ..diffusion import make_ddim_plan, make_dpm_plan

    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(map(repr, SOLVERS))}, got {solver!r}")
    if solver in ("dpmpp2m", "dpmpp2m_sde"):
        return make_dpm_plan(schedule, steps, stochastic=solver == "dpmpp2m_sde")
    return make_ddim_plan(schedule, steps, eta, official_compat=official_compat)


def implied_noise(x: torch.Tensor, x0: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """The standardised noise in ``x`` at level ``alpha_bar`` given its data prediction ``x0``:
    (x - sqrt(a) x0) / sqrt(1 - a) (float32; zero where a = 1, where no noise is left)."""
    a = alpha_bar.to(device=x.device, dtype=torch.float32)
    scale = torch.where(a < 1.0, (1.0 - a).clamp_min(1e-12).rsqrt(), torch.zeros_like(a))  # no host sync
    return (x.float() - a.sqrt() * x0.float()) * scale


class FrameCorrelatedNoise:
    """A window's noise source whose per-step DDIM draws are correlated between neighbouring frames by
    ``prior`` (the same draws as ``base``, made correlated along the frame axis), so fresh noise added at
    every step does not undo a correlated start (``SamplingOptions.slice_noise_correlation``)."""

    def __init__(self, base: NoiseSource, prior: SliceNoisePrior):
        self.base, self.prior = base, prior

    def draw(self, kind: str, shape: tuple[int, ...]) -> torch.Tensor:
        z = self.base.draw(kind, shape)
        return self.prior.correlate(z) if kind in ("ddim", "known") and len(shape) == 4 else z


class StepNoiseFields:
    """The noise every DDIM step adds, as one field over the whole volume per step (correlated between
    neighbouring slices by ``prior``), so that a slice gets the same step noise whichever window generates it.

    With a window's own stream instead, the two sides of a window boundary (and a regenerated range and the
    slices it meets) grew different stochastic texture: seams 3.2x the other slice steps with DDIM eta 1 on
    held-out Colin27, 1.6x with these fields (docs/evidence.md). Step ``i``'s field is drawn once, from its own
    seeded stream, and kept for the generation: ``steps x slices x latent`` floats (8 MB at the demo size with 25
    steps, 0.5 GB at the official size with 50).
    """

    def __init__(self, seed: int, shape: tuple[int, ...], prior: SliceNoisePrior):
        self.seed, self.shape, self.prior = int(seed), tuple(shape), prior
        self._fields: dict[int, torch.Tensor] = {}

    def step(self, i: int) -> torch.Tensor:
        if i not in self._fields:
            z = SeededNoise(self.seed, STEP_FIELD_STREAM + i).draw("ddim", self.shape)
            self._fields[i] = self.prior.correlate(z)
        return self._fields[i]


class SliceIndexedNoise(FrameCorrelatedNoise):
    """A window's noise source whose per-step DDIM draws are its slices of :class:`StepNoiseFields` (the
    window starts at slice ``start``); every other draw is :class:`FrameCorrelatedNoise`'s. The window's own
    stream still advances as before, so its other draws (known frames) are the same as without the fields."""

    def __init__(self, base: NoiseSource, prior: SliceNoisePrior, fields: StepNoiseFields, start: int):
        super().__init__(base, prior)
        self.fields, self.start, self.steps = fields, int(start), 0

    def draw(self, kind: str, shape: tuple[int, ...]) -> torch.Tensor:
        if kind != "ddim" or len(shape) != 4:
            return super().draw(kind, shape)
        self.base.draw(kind, shape)  # keep the stream where it was
        z = self.fields.step(self.steps)[self.start : self.start + shape[0]]
        self.steps += 1
        return z.clone()


class ReplayNoise:
    """Replays recorded draws in order (golden tests); checks the kinds match."""

    def __init__(self, draws: Sequence[tuple[str, torch.Tensor]]):
        self.draws = list(draws)
        self.position = 0

    def draw(self, kind: str, shape: tuple[int, ...]) -> torch.Tensor:
        recorded_kind, tensor = self.draws[self.position]
        if recorded_kind != kind:
            raise AssertionError(f"draw {self.position}: expected {recorded_kind!r}, sampler asked for {kind!r}")
        self.position += 1
        return tensor.reshape(shape).float()


@dataclass
class Known:
    """Known frames of a batch: ``mask`` (B, F) bool, ``latents`` (B, F, C, h, w) (zeros elsewhere)."""

    mask: torch.Tensor
    latents: torch.Tensor

    @property
    def any(self) -> bool:
        return bool(self.mask.any())


StepHook = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor | None], None]


def paste_known(x: torch.Tensor, known: Known, alpha_bar: torch.Tensor, noises: Sequence[NoiseSource],
                neighbours: torch.Tensor | None = None) -> torch.Tensor:
    """Replace the known frames of ``x`` by their latents re-noised to ``alpha_bar``.

    With frame-correlated noise (:class:`FrameCorrelatedNoise`) and ``neighbours`` (B, F, ...), the noise of
    the generated frames now (:func:`implied_noise`), a known frame's noise is drawn from the prior's exact
    conditional given the generated frames (:meth:`SliceNoisePrior.fill`): it continues its neighbours'
    noise as the correlated prior does, instead of jumping at the border between known and generated
    frames. Independent noise (rho = 0) re-noises as before, draw for draw.
    """
    out = x.clone()
    a = alpha_bar.to(device=x.device, dtype=torch.float32)
    for b, noise in enumerate(noises):
        frames = torch.nonzero(known.mask[b], as_tuple=False).flatten()
        if frames.numel() == 0:
            continue
        kn = known.latents[b, frames].float()
        prior = getattr(noise, "prior", None)
        if prior is not None and neighbours is not None:
            z = noise.base.draw("known", tuple(kn.shape))
            generated = ~known.mask[b].cpu()
            eps = prior.fill(neighbours[b].float().cpu(), generated, z).to(x.device)
        else:
            eps = noise.draw("known", tuple(kn.shape)).to(x.device)
        out[b, frames] = (a.sqrt() * kn + (1.0 - a).sqrt() * eps).to(x.dtype)
    return out


def _step_noise(noises: Sequence[NoiseSource], x: torch.Tensor) -> torch.Tensor:
    """One step's fresh noise for the batch ``x`` (B, ...): batch element b's "ddim" draw from ``noises[b]``,
    on x's device (DDIM at eta > 0 and the SDE solver draw it alike)."""
    return torch.stack([n.draw("ddim", tuple(x.shape[1:])) for n in noises]).to(x.device)


def _start(x: torch.Tensor, plan, known: Known | None, noises: Sequence[NoiseSource]):
    """Both loops' start: the plan on ``x``'s device, and ``x`` with its known frames pasted at the first
    timestep's level; returns ``(x, plan, whether there are known frames)``."""
    plan = plan.to(x.device)
    use_known = known is not None and known.any
    if use_known:  # x is the starting noise: the generated frames' noise is x itself
        x = paste_known(x, known, plan.renoise_a[0], noises, neighbours=x)
    return x, plan, use_known


def denoise(
    model_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    plan: DDIMPlan | DPMPlan,
    noises: Sequence[NoiseSource],
    *,
    known: Known | None = None,
    prediction: str = "eps",
    cancel: CancelToken | None = None,
    on_step: StepHook | None = None,
) -> torch.Tensor:
    """Run the DDIM loop from ``x`` (= x_T, batch of B windows or slices) to the final sample.

    ``model_fn(x, t)`` returns the network output for ``x`` at timesteps ``t`` (B,).
    ``noises[b]`` supplies the random draws of batch element b.
    ``on_step(i, x_t, x_prev, log_prob)`` sees every step (x_t after the paste, x_prev before the
    next paste); when given, the step also returns the log-probability over generated frames.
    A :class:`DPMPlan` runs :func:`denoise_dpm` instead (DPM-Solver++(2M); log_prob is None).
    """
    if len(noises) != x.shape[0]:
        raise ValueError(f"need one noise source per batch element ({x.shape[0]}), got {len(noises)}")
    if isinstance(plan, DPMPlan):
        return denoise_dpm(
            model_fn, x, plan, noises, known=known, prediction=prediction, cancel=cancel, on_step=on_step
        )
    x, plan, use_known = _start(x, plan, known, noises)
    frame_mask = ~known.mask.to(x.device) if (use_known and x.ndim == 5) else None
    correlated = any(getattr(n, "prior", None) is not None for n in noises)
    batch = x.shape[0]
    for i in range(plan.num_steps):
        if cancel is not None:
            cancel.check()
        t = plan.t[i].expand(batch)
        out = model_fn(x, t)
        z = _step_noise(noises, x)
        a_t, a_prev, sigma = plan.coefficients(i)
        record = on_step is not None and plan.eta > 0
        step = ddim_step(
            out, x, a_t, a_prev, sigma, prediction=prediction, noise=z,
            frame_mask=frame_mask if record else None, return_log_prob=record,
        )
        x_prev = step.x_prev
        if on_step is not None:
            on_step(i, x, x_prev, step.log_prob)
        if use_known:
            a_next = plan.renoise_a[i + 1]
            neighbours = None
            if correlated:
                neighbours = implied_noise(x_prev, step.pred_x0, a_next)
            x = paste_known(x_prev, known, a_next, noises, neighbours)
        else:
            x = x_prev
    return x


def denoise_dpm(
    model_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    plan: DPMPlan,
    noises: Sequence[NoiseSource],
    *,
    known: Known | None = None,
    prediction: str = "eps",
    cancel: CancelToken | None = None,
    on_step: StepHook | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M) from ``x`` (= x_T at ``plan.t[0]``) to clean data, one model call per step.

    Known frames are pasted at ``plan.renoise_a[0]`` (the first timestep's level) before the first model
    call and at ``plan.renoise_a[i + 1]`` (the level x now sits at) after step i, from "known" draws;
    after the last step that level is 1, so they are exactly their clean latents. Deterministic
    otherwise: no "ddim" draws. ``on_step(i, x_t, x_next, None)`` sees every step. Called by
    :func:`denoise`, which checks the noise sources.
    """
    x, plan, use_known = _start(x, plan, known, noises)
    correlated = any(getattr(n, "prior", None) is not None for n in noises)
    batch = x.shape[0]
    x0_prev = None
    stochastic = plan.stochastic
    for i in range(plan.num_steps):
        if cancel is not None:
            cancel.check()
        out = model_fn(x, plan.t[i].expand(batch))
        x0 = data_prediction(out, x, plan.alpha[i], plan.sigma[i], prediction)
        z = _step_noise(noises, x) if stochastic else None
        x_next = dpm_step(x, x0, x0_prev, plan, i, z)
        x0_prev = x0
        if on_step is not None:
            on_step(i, x, x_next, None)
        if use_known:
            a_next = plan.renoise_a[i + 1]
            neighbours = implied_noise(x_next, x0, a_next) if correlated else None
            x = paste_known(x_next, known, a_next, noises, neighbours)
        else:
            x = x_next
    return x
