"""Rollouts: THE sampler generator driven with a recorder, one trajectory per generated volume.

A trajectory is the sequence of windows of one volume; a window is K DDIM steps (eta > 0) of the
policy (the bundle's volume UNet). Per window and step the recorder keeps what is needed to score
the same action again under a changed policy (reference-rl.md section 2.3):

- ``x_t``: the latent the network saw, i.e. *after* the re-noised known frames were pasted;
- ``x_prev``: the action, the step's sample before the next paste;
- the step's timesteps and coefficients (t, t_prev, alpha-bar t / t_prev, sigma);
- the old log-probability (mean over generated frames, computed by the sampler's own DDIM step);
- ``generated``: the frames drawn by the policy (known frames are environment input);
- ``cond``: the exact conditioning (mask-window latents + informed latent) of the window.

Nothing is regenerated: the informed latent of window w+1 comes from the sampled window w, so a
rollout is only ever replayed from what was recorded.
"""

from __future__ import annotations

import contextlib
import gc
from dataclasses import dataclass, field

import numpy as np
import torch

from napari_gem3d.models import ModelBundle
from napari_gem3d.sampling import InformedSlice, SamplingOptions, SamplingRequest
from napari_gem3d.sampling.plan import Window
from napari_gem3d.sampling.propagate import generate


@dataclass(frozen=True)
class Condition:
    """One condition of a group: a model-grid mask, its start slice and informed slice.

    ``image`` is the true volume when known (evaluation metrics only; never given to the sampler).
    """

    name: str
    mask: np.ndarray  # (Z, h, w) integer labels
    start: int
    informed: InformedSlice
    image: np.ndarray | None = None

    def request(self, options: SamplingOptions) -> SamplingRequest:
        return SamplingRequest(mask=np.asarray(self.mask).astype(np.int64), start=int(self.start),
                               informed=self.informed, options=options)


@dataclass
class WindowSteps:
    """The recorded steps of one window (K steps, F frames)."""

    window: Window
    cond: torch.Tensor  # (F, Cc, h, w)
    generated: torch.Tensor  # (F,) bool: frames drawn by the policy
    step: torch.Tensor  # (K,) int64: index in the DDIM plan
    t: torch.Tensor  # (K,) int64
    t_prev: torch.Tensor  # (K,) int64
    a_t: torch.Tensor  # (K,) float32
    a_prev: torch.Tensor  # (K,) float32
    sigma: torch.Tensor  # (K,) float32
    x_t: torch.Tensor  # (K, F, C, h, w) after the known paste
    x_prev: torch.Tensor  # (K, F, C, h, w) the action
    log_prob: torch.Tensor  # (K,) float32, old log-probability

    @property
    def num_steps(self) -> int:
        return int(self.step.shape[0])


@dataclass
class Rollout:
    """One generated volume and its recorded windows."""

    group: int  # condition index in the rollout batch
    seed: int
    windows: list[WindowSteps]
    volume: np.ndarray  # (Z, h, w) decoded, [-1, 1] model grid
    latents: np.ndarray  # (Z, C, h', w')
    plan: list[Window] = field(default_factory=list)  # every window of the volume (some may have no steps)

    def window_ranges(self) -> list[tuple[int, int]]:
        """``[z0, z1)`` emitted by each window that generated frames (the recorded windows, in order)."""
        return [w.emit_range for w in self.plan if w.write]


class RolloutRecorder:
    """The sampler's recorder protocol (``on_round``/``on_step``/``on_round_end``), keeping CPU copies."""

    def __init__(self, store_device: str | torch.device = "cpu"):
        self.store = torch.device(store_device)
        self.windows: list[WindowSteps] = []
        self._round: dict | None = None

    def on_round(self, windows, cond, known, plan) -> None:
        b, f = cond.shape[:2]
        generated = torch.ones(b, f, dtype=torch.bool)
        if known is not None:
            generated = ~known.mask.detach().to("cpu", torch.bool)
        if plan.eta <= 0:
            raise ValueError("RL rollouts need eta > 0: with eta = 0 a DDIM step has no density")
        self._round = {"windows": list(windows), "cond": cond.detach().float().to(self.store),
                       "generated": generated, "plan": plan.to("cpu"), "steps": []}

    def on_step(self, i, x_t, x_prev, log_prob) -> None:
        if log_prob is None:
            raise RuntimeError("the sampler returned no log-probability for a recorded step (eta must be > 0)")
        def keep(t):
            return t.detach().float().to(self.store)

        self._round["steps"].append((int(i), keep(x_t), keep(x_prev), keep(log_prob)))

    def on_round_end(self, x0) -> None:
        r, self._round = self._round, None
        if r is None or not r["steps"]:  # a round without denoising steps (nothing generated)
            return
        plan = r["plan"]
        idx = torch.tensor([s[0] for s in r["steps"]], dtype=torch.long)
        x_t = torch.stack([s[1] for s in r["steps"]], dim=1)  # (B, K, F, C, h, w)
        x_prev = torch.stack([s[2] for s in r["steps"]], dim=1)
        logp = torch.stack([s[3] for s in r["steps"]], dim=1)  # (B, K)
        for b, w in enumerate(r["windows"]):
            if not bool(r["generated"][b].any()):
                continue
            self.windows.append(WindowSteps(
                window=w, cond=r["cond"][b], generated=r["generated"][b].clone(), step=idx.clone(),
                t=plan.t[idx].clone(), t_prev=plan.t_prev[idx].clone(), a_t=plan.a_t[idx].clone(),
                a_prev=plan.a_prev[idx].clone(), sigma=plan.sigma[idx].clone(),
                x_t=x_t[b].clone(), x_prev=x_prev[b].clone(), log_prob=logp[b].clone(),
            ))


@contextlib.contextmanager
def frozen_gc():
    """Move the objects alive now out of the collector's reach while rolling out.

    The sampler frees device memory with ``gc.collect()`` after every volume; with torch, MONAI and
    pytest loaded that walks ~10^5 long-lived objects (about 0.1 s per call on our CPUs), which is
    half the cost of a tiny rollout. Frozen objects are still freed by reference counting.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def sample(bundle: ModelBundle, condition: Condition, *, group: int, seed: int, steps: int, eta: float,
           device: str = "cpu", record: bool = True) -> Rollout:
    """Generate one volume for ``condition`` with THE generator; record its steps when ``record``."""
    opts = SamplingOptions(steps=steps, eta=eta, seed=int(seed), device=str(device), precision="fp32",
                           mode="gem3d", paste_informed=True)  # the true slice as a known frame (data.py)
    recorder = RolloutRecorder() if record else None
    gen = generate(bundle, condition.request(opts), recorder=recorder)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            result = stop.value
            break
    return Rollout(group=group, seed=int(seed), windows=recorder.windows if recorder else [],
                   volume=np.asarray(result.volume, np.float32), latents=np.asarray(result.latents, np.float32),
                   plan=list(result.windows))


def collect(bundle: ModelBundle, conditions: list[Condition], *, group_size: int, seeds: list[list[int]],
            steps: int, eta: float, device: str = "cpu", record: bool = True) -> list[Rollout]:
    """``group_size`` rollouts per condition (``seeds[c][g]``), in eval mode and without gradients."""
    unet = bundle.volume
    was_training = unet.training
    unet.eval()
    out = []
    try:
        with frozen_gc(), torch.no_grad():
            for c, cond in enumerate(conditions):
                for g in range(group_size):
                    out.append(sample(bundle, cond, group=c, seed=seeds[c][g], steps=steps, eta=eta,
                                      device=device, record=record))
    finally:
        unet.train(was_training)
    return out
