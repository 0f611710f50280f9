"""Algorithm 1 of GEM-3D as one generator: the only implementation, shared by GUI, CLI and RL.

``generate(bundle, request)`` encodes the mask slices and the informed slice once, walks the
window plan round by round (the up and down windows of a round share one batched UNet call),
yields a :class:`WindowUpdate` with the decoded slices of every finished window and returns a
:class:`SamplingResult`. A cancel token is checked between denoising steps; device memory is
released in ``finally``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Generator
from functools import partial
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from .. import __version__
from ..masks import mask_hash, mask_slice_hashes
from ..models.bundle import ModelBundle
from .cancel import CancelToken
from .denoise import (
    FrameCorrelatedNoise,
    Known,
    SeededNoise,
    SliceIndexedNoise,
    StepNoiseFields,
    denoise,
    sampling_plan,
)
from .device import autocast, effective_precision, release_memory, resolve_device
from .lesion_guidance import guide, label_slices, reference_masks
from .plan import Window, plan_windows, rounds
from .request import (
    SamplingRequest,
    SamplingResult,
    WindowUpdate,
    adds_step_noise,
    pastes_informed,
    resolve_options,
)
from .slice_prior import SliceNoisePrior
from .threads import Workers

COND_STREAM = 1 << 30  # noise stream of the posterior samples drawn in official_compat mode
FIELD_STREAM = (1 << 30) + 1  # noise stream of the volume-wide correlated starting noise


class Recorder(Protocol):
    """Optional observer of every denoising step (RL rollouts)."""

    def on_round(self, windows: list[Window], cond: torch.Tensor, known: Known | None, plan) -> None: ...

    def on_step(self, i: int, x_t: torch.Tensor, x_prev: torch.Tensor, log_prob: torch.Tensor | None) -> None: ...

    def on_round_end(self, x0: torch.Tensor) -> None: ...


def _groups(windows: list[Window], independent: bool, batch: int) -> list[list[Window]]:
    if not independent:
        return rounds(windows)
    return [windows[i : i + batch] for i in range(0, len(windows), batch)]


def generate(
    bundle: ModelBundle,
    request: SamplingRequest,
    *,
    cancel: CancelToken | None = None,
    recorder: Recorder | None = None,
    windows: list[Window] | None = None,
    preset: dict[int, torch.Tensor] | None = None,
) -> Generator[WindowUpdate, None, SamplingResult]:
    """Run the window plan of ``request``; yield each finished window, return the whole result.

    ``windows`` replaces the propagation plan and ``preset`` gives the latents of finished slices that
    those windows hold as known (local regeneration, :mod:`.regenerate`): only the windows' written
    slices are generated and decoded.
    """
    cfg = bundle.config
    resolved = resolve_options(request.options, cfg)  # the slice-noise prior in numbers (and the provenance)
    if resolved is not request.options:
        request = dataclasses.replace(request, options=resolved)
    opts = request.options
    mask = np.asarray(request.mask)
    num_slices, height, width = mask.shape
    if (height, width) != tuple(cfg.image_size):
        raise ValueError(
            f"mask slices are {height}x{width} but the model works at {cfg.image_size[0]}x{cfg.image_size[1]}: "
            "bring the mask to the model grid first (napari_gem3d.volume.to_model)"
        )
    cfg.labels.validate(mask)
    gem3d = opts.mode == "gem3d"
    unet = bundle.volume if gem3d else bundle.baseline
    if unet is None:
        have = ", ".join(sorted(bundle.unets))
        raise ValueError(f"this model has no {'GEM-3D volume' if gem3d else 'baseline'} network (it has: {have})")
    informed = request.informed if gem3d else None
    start_known = pastes_informed(opts, informed is not None and informed.is_true_slice)
    overlap = cfg.overlap if opts.overlap is None else opts.overlap
    if windows is None:
        windows = plan_windows(
            num_slices, cfg.window, overlap, request.start, start_known=start_known, official=opts.official_compat
        )
    elif not gem3d or opts.official_compat:
        raise ValueError("a given window plan (local regeneration) needs GEM-3D mode without official_compat")
    independent = not gem3d  # baseline: no informed chain, no known frames -> windows are independent
    guidance = float(opts.lesion_guidance)
    if guidance != 1.0 and not cfg.card.lesion_labels:
        raise ValueError(f"lesion guidance needs the model's lesion labels, and {cfg.name!r}'s model card names "
                         "none: leave lesion guidance at 1")
    references = reference_masks(mask, cfg.card.lesion_labels) if guidance != 1.0 else {}
    label_in = label_slices(mask, references)
    inpaint = gem3d and opts.inpaint_overlap
    chunk = opts.chunk_for(height, width)

    device = resolve_device(opts.device)
    precision = effective_precision(opts.precision, device)
    bundle.to(device)
    codec = bundle.codec
    ddim = sampling_plan(cfg.schedule, opts.steps, opts.eta, opts.solver, opts.official_compat).to(device)
    cond_gen = SeededNoise(opts.seed, COND_STREAM).generator if opts.official_compat else None

    t0 = time.perf_counter()
    timings = {"encode": 0.0, "denoise": 0.0, "decode": 0.0}
    total = len(windows)
    if cancel is not None:
        cancel.progress = (0, total)
    buffer = decoded = None
    threads_before, cpu_threads, workers = torch.get_num_threads(), None, Workers()
    try:
        cpu_threads = _set_cpu_threads(opts.cpu_threads) if device.type == "cpu" else None
        if cpu_threads is not None:  # independent jobs side by side when at most one core is idle (threads.py)
            workers = Workers(cpu_threads["workers"], cpu_threads["threads"])
        with torch.no_grad():
            encoded_mask = torch.from_numpy(cfg.labels.encode(mask))
            with autocast(device, precision):  # the VAE runs in the requested precision too (fp32 latents out)
                mask_lat = codec.mask_condition_latents(encoded_mask, generator=cond_gen, chunk=chunk)
                ref = _informed_latent(codec, informed, cfg.window, cond_gen, device, chunk)
                reference_lat = {v: codec.mask_condition_latents(torch.from_numpy(cfg.labels.encode(m)),
                                                                 generator=cond_gen, chunk=chunk).float()
                                 for v, m in references.items()}
            mask_lat, ref = mask_lat.float(), None if ref is None else ref.float()
            lat_c, lat_h, lat_w = codec.latent_channels, *cfg.latent_size
            buffer = torch.zeros(num_slices, lat_c, lat_h, lat_w, device=device)
            if start_known and preset is None:
                buffer[request.start] = ref[0]
            for z, latent in (preset or {}).items():
                buffer[z] = latent.to(device=device, dtype=buffer.dtype)
            decoded = np.zeros((num_slices, height, width), np.float32)
            emitted = np.zeros(num_slices, bool)
            prior = opts.slice_prior
            field = slice_noise_field(opts.seed, (num_slices, lat_c, lat_h, lat_w), prior) if prior else None
            per_slice = step_noise_kind(opts) == "slices"  # implies the prior, so the field exists
            step_fields = StepNoiseFields(opts.seed, tuple(field.shape), prior) if per_slice else None
            timings["encode"] = time.perf_counter() - t0
            done, pending = 0, []

            def publish(w: Window, get_slices) -> WindowUpdate:
                """Window ``w``'s decoded slices (from ``get_slices()``): stored, counted, sent."""
                nonlocal done
                td = time.perf_counter()
                z0, z1 = w.emit_range
                slices = get_slices()
                decoded[z0:z1] = slices
                emitted[z0:z1] = True
                timings["decode"] += time.perf_counter() - td  # with a worker's decode: the wait for it
                done += 1
                if cancel is not None:
                    cancel.progress = (done, total)
                return WindowUpdate(
                    z0=z0, z1=z1, slices=slices.copy(), direction=w.direction, index=done - 1, total=total,
                    elapsed=time.perf_counter() - t0, window_start=w.start, window_stop=w.stop,
                )

            for group in _groups(windows, independent, opts.max_batch_windows):
                tg = time.perf_counter()
                noises = [SeededNoise(opts.seed, w.index) for w in group]
                if step_fields is not None:  # each slice's step noise, whichever window generates it
                    noises = [SliceIndexedNoise(n, prior, step_fields, w.start)
                              for n, w in zip(noises, group, strict=True)]
                elif field is not None:  # the noise added at every step is correlated along the frames too
                    noises = [FrameCorrelatedNoise(n, prior) for n in noises]
                frames = group[0].length
                x = torch.stack([n.draw("x_T", (frames, lat_c, lat_h, lat_w)) for n in noises]).to(device)
                if field is not None:  # the windows' frames of the one correlated field (draws above keep streams)
                    x = torch.stack([field[w.start : w.stop] for w in group]).to(device)
                cond = torch.stack([_condition(w, mask_lat, ref, buffer, gem3d) for w in group])
                known = _known(group, buffer) if inpaint else None
                if recorder is not None:
                    recorder.on_round(group, cond, known, ddim)

                # (window, lesion label) pairs: one more pass of the window with that label taken out
                guided = [(b, v) for b, w in enumerate(group) for v in references
                          if label_in[v][w.start : w.stop].any()]
                cond_refs = None if not guided else torch.stack(
                    [_condition(group[b], reference_lat[v], ref, buffer, gem3d) for b, v in guided])

                def run_unet(xt, t, cond):
                    def windows_part(part: slice) -> torch.Tensor:  # a worker's windows (grad mode is per thread)
                        with torch.no_grad(), autocast(device, precision):
                            return unet(torch.cat([xt[part], cond[part].to(xt.dtype)], dim=2), t[part]).float()

                    return torch.cat(workers.map(windows_part, workers.parts(xt.shape[0])))

                def model_fn(xt, t, cond=cond, guided=guided, cond_refs=cond_refs):
                    if not guided:
                        return run_unet(xt, t, cond)
                    rows = [b for b, _ in guided]  # one batch: the reference passes run beside the windows'
                    both = run_unet(torch.cat([xt, xt[rows]]), torch.cat([t, t[rows]]), torch.cat([cond, cond_refs]))
                    out, refs = both[: xt.shape[0]], both[xt.shape[0] :]
                    guided_out = out.clone()
                    for b in sorted(set(rows)):
                        guided_out[b] = guide(out[b], [refs[k] for k, row in enumerate(rows) if row == b], guidance)
                    return guided_out

                if any(w.write for w in group):
                    x0 = denoise(
                        model_fn, x, ddim, noises, known=known, prediction=cfg.schedule.prediction,
                        cancel=cancel, on_step=None if recorder is None else recorder.on_step,
                    )
                else:  # a one-slice volume whose only slice is the given informed slice
                    x0 = x
                if recorder is not None:
                    recorder.on_round_end(x0)
                for b, w in enumerate(group):
                    idx = torch.tensor([w.start + f for f in w.write], dtype=torch.long, device=device)
                    buffer[idx] = x0[b, list(w.write)]
                timings["denoise"] += time.perf_counter() - tg
                latents_of = [(w, buffer[slice(*w.emit_range)]) for w in group]
                if workers.count > 1 and group[0].round > 0:  # decode on a worker while the next round denoises
                    ready, pending = pending, [
                        (w, workers.submit(_decode, codec, lat.clone(), chunk, device, precision, Workers()).result)
                        for w, lat in latents_of]
                else:
                    ready = [(w, partial(_decode, codec, lat, chunk, device, precision, workers))
                             for w, lat in latents_of]
                for w, get_slices in ready:
                    yield publish(w, get_slices)
            for w, get_slices in pending:
                yield publish(w, get_slices)
            holes = np.flatnonzero(~emitted) if preset is None else ()  # official_compat plans leave holes (B4)
            if len(holes):
                idx = torch.from_numpy(holes).to(device)
                decoded[holes] = _decode(codec, buffer[idx], chunk, device, precision, workers)
            timings["total"] = time.perf_counter() - t0
            latents = buffer.float().cpu().numpy()
        return SamplingResult(
            volume=decoded,
            latents=latents,
            windows=windows,
            timings=timings,
            provenance={**_provenance(bundle, request, windows, device, precision, overlap, chunk, timings, mask),
                        "cpu_threads": cpu_threads or torch.get_num_threads()},
        )
    finally:
        del buffer
        workers.close()
        if cpu_threads is not None:
            torch.set_num_threads(threads_before)
        release_memory(device, collect=False)  # no GIL-holding gc in a worker thread


def step_noise_kind(options) -> str | None:
    """How a generation with resolved ``options`` draws its per-step noise: "slices" (one correlated field per
    step over the volume, :class:`~.denoise.StepNoiseFields`), "windows" (each window's own stream), or None
    (a deterministic solver adds none)."""
    if not adds_step_noise(options.solver, options.eta):
        return None
    return "slices" if options.slice_prior is not None and options.mode == "gem3d" else "windows"


def slice_noise_field(seed: int, shape: tuple[int, ...], prior: SliceNoisePrior) -> torch.Tensor:
    """Starting noise for a whole volume, correlated between neighbouring slices by ``prior`` (slice_prior.py).

    Every slice is still N(0, I); neighbouring slices are correlated. The demo model's
    temporal layers barely couple slices, so independent starting noise per slice becomes slice-to-slice
    stripes that the sampler never removes (../shared/design/flicker-diagnosis.md); a correlated start
    lets neighbouring slices begin alike. Windows take their frames from this one field, so a local
    regeneration starts from the same noise as the full run did.
    """
    return prior.correlate(SeededNoise(seed, FIELD_STREAM).draw("x_T", shape))


def _set_cpu_threads(wanted: int | str | None) -> dict | None:
    """Apply the CPU thread count of the options; what was chosen and how (None: torch left alone)."""
    if wanted is None:
        return None
    if wanted == "auto":
        from .threads import choose_threads

        choice = choose_threads().to_dict()
    else:
        choice = {"threads": int(wanted), "how": "options", "workers": 1}
    torch.set_num_threads(choice["threads"])
    return choice


def _decode(codec, latents: torch.Tensor, chunk: int, device, precision: str, workers: Workers) -> np.ndarray:
    """Latents -> float32 slices on the host, the VAE decoder in the requested precision; the slices cut
    between the workers (each slice is decoded on its own: the cut changes only the batch size, threads.py)."""

    def slices_part(part: slice) -> np.ndarray:
        with torch.no_grad(), autocast(device, precision):
            return codec.decode(latents[part], chunk=chunk)[:, 0].float().cpu().numpy()

    return np.concatenate(workers.map(slices_part, workers.parts(latents.shape[0])))


def _informed_latent(codec, informed, frames: int, generator, device, chunk: int) -> torch.Tensor | None:
    """(1, C, h, w) posterior mean of the informed slice, or (frames, C, h, w) samples in compat mode."""
    if informed is None:
        return None
    if informed.latent is not None:
        lat = torch.as_tensor(np.asarray(informed.latent), dtype=torch.float32, device=device)
        return lat[None] if lat.ndim == 3 else lat
    img = torch.as_tensor(np.asarray(informed.image, dtype=np.float32), device=device)[None, None]
    if generator is not None:
        return codec.encode(img.expand(frames, -1, -1, -1), chunk=chunk, generator=generator)
    return codec.encode(img)


def _condition(w: Window, mask_lat, ref, buffer, gem3d: bool) -> torch.Tensor:
    """(frames, Cm [+ C], h, w): mask latents of the window, then the informed latent per frame."""
    m = mask_lat[w.start : w.stop]
    if not gem3d:
        return m
    inf = ref if w.informed_slice is None else buffer[w.informed_slice][None]
    return torch.cat([m, inf.expand(w.length, -1, -1, -1)], dim=1)


def _known(group: list[Window], buffer: torch.Tensor) -> Known:
    frames = group[0].length
    mask = torch.zeros(len(group), frames, dtype=torch.bool)
    lat = torch.zeros(len(group), frames, *buffer.shape[1:], device=buffer.device)
    for b, w in enumerate(group):
        for f, z in zip(w.known, w.known_slices, strict=True):
            mask[b, f] = True
            lat[b, f] = buffer[z]
    return Known(mask.to(buffer.device), lat)


def _provenance(bundle, request, windows, device, precision, overlap, chunk, timings, mask) -> dict:
    opts = request.options
    return {
        "generator": "napari-gem3d",
        "package_version": __version__,
        "model": {"name": bundle.config.name, "hash": bundle.model_hash,
                  "folder": Path(bundle.path).name if bundle.path else ""},
        "mode": opts.mode,
        "official_compat": opts.official_compat,
        "inpaint_overlap": opts.inpaint_overlap,
        "step_noise": step_noise_kind(opts),
        "paste_informed": opts.paste_informed,
        "lesion_guidance": opts.lesion_guidance,
        "solver": opts.solver,
        "slice_noise_correlation": opts.slice_noise_correlation,
        "slice_noise_coarse_correlation": opts.slice_noise_coarse_correlation,
        "steps": opts.steps,
        "eta": opts.eta,
        "seed": opts.seed,
        "start_slice": request.start,
        "window": bundle.config.window,
        "overlap": overlap,
        "num_windows": len(windows),
        "first_window_start": windows[0].start if windows and windows[0].direction == "first" else None,
        "informed": dict(request.informed.source) if request.informed is not None and opts.mode == "gem3d" else None,
        "mask_sha256": mask_hash(mask),
        "mask_slices_sha256": mask_slice_hashes(mask),  # which slices a later edit touches (regenerate.py)
        "device": str(device),
        "precision": precision,
        "decode_chunk": chunk,
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
    }
