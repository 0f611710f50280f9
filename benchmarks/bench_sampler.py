"""Sampler benchmark: prints ONE JSON line.

Measures our generator (``napari_gem3d.sampling.propagate.generate``: both directions batched,
conditions encoded once, each slice decoded once, optional half precision on GPU) against a
reference loop written the way the official driver works (fp32, one window per UNet call, the
up pass then the down pass, the mask window re-encoded for every window, every window decoded
whole), with the same model, steps and volume, in the same run. Speed is reported as a ratio.

    python benchmarks/bench_sampler.py --config tiny --device cpu
    python benchmarks/bench_sampler.py --config official --device cuda --precision bf16
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from dataclasses import replace

import numpy as np
import torch
from bench_temporal_conv import FORMULATIONS

from napari_gem3d.diffusion import make_ddim_plan
from napari_gem3d.models import build_bundle, load_bundle
from napari_gem3d.models.layers import TemporalConv
from napari_gem3d.models.presets import official_config, small_config
from napari_gem3d.sampling import InformedSlice, SamplingOptions, SamplingRequest, plan_windows
from napari_gem3d.sampling.denoise import Known, SeededNoise, denoise
from napari_gem3d.sampling.device import autocast, effective_precision, resolve_device
from napari_gem3d.sampling.pipeline import run_to_end
from napari_gem3d.sampling.propagate import generate

CONFIGS = {
    # the bundled demo model when present, else a random model of the same kind: 64^3 on the CPU
    "tiny": {"slices": 64, "steps": 25},
    # the published GEM-3D size with random weights: 155 slices of 512^2, 50 steps
    "official": {"slices": 155, "steps": 50},
}


def _bundle(name: str, device: torch.device):
    if name == "official":
        with device:  # GEM-3D sampling needs the VAE and the volume UNet only (random weights)
            bundle = build_bundle(official_config(unets=("volume",)))
        return bundle, "official-size (random weights)"
    from napari_gem3d import demo_model_path

    path = demo_model_path()
    if (path / "config.json").exists():
        return load_bundle(path), f"bundled demo model ({path.name})"
    cfg = small_config(64, model_channels=64, channel_mult=(1, 2, 2), vae_mult=(1, 2, 2))
    return build_bundle(cfg), "demo-size (random weights)"


def _mask(bundle, slices: int) -> np.ndarray:
    h, w = bundle.config.image_size
    labels = np.asarray(bundle.config.labels.labels)
    z, y, x = np.mgrid[:slices, :h, :w]
    r = np.sqrt(
        ((y - h / 2) / (0.4 * h)) ** 2 + ((x - w / 2) / (0.35 * w)) ** 2 + ((z - slices / 2) / (0.5 * slices)) ** 2
    )
    idx = np.clip((r * len(labels)).astype(int), 0, len(labels) - 1)
    return labels[idx].astype(np.uint8)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def warm_up(bundle, request, device, always: bool = False) -> None:
    """Load the kernels of both loops once (CUDA; or ``always``: compilation), on a short volume with one step."""
    if device.type != "cuda" and not always:
        return
    n = min(3 * bundle.config.window, request.mask.shape[0])  # a centre window, then a batched up + down round
    small = replace(request, mask=request.mask[:n], start=n // 2, options=replace(request.options, steps=1))
    run_ours(bundle, small)
    run_reference(bundle, small, device)


def compile_volume_unet(bundle, request, device) -> float:
    """Swap in ``torch.compile(volume UNet)`` and return its max abs difference from eager on one window call."""
    eager = bundle.volume
    cfg = bundle.config
    h, w = cfg.latent_size
    x = torch.randn(1, cfg.window, eager.config.in_channels, h, w, device=device)
    t = torch.tensor([500], device=device)
    compiled = torch.compile(eager, dynamic=False)  # one graph per window batch (1 and 2), made in the warm-up
    with torch.no_grad(), autocast(device, effective_precision(request.options.precision, device)):
        diff = (compiled(x, t).float() - eager(x, t).float()).abs().max().item()
    bundle.unets["volume"] = compiled
    return round(diff, 6)


def use_temporal_conv(name: str) -> None:
    """Experiment: every TemporalConv computes with a copy-free candidate of bench_temporal_conv (same numbers)."""
    fn = FORMULATIONS[name]
    TemporalConv.forward = lambda self, x, num_frames: fn(x, self.conv.weight, self.conv.bias, num_frames)


def run_ours(bundle, request):
    """Seconds for one generation and its :class:`SamplingResult` (windows, provenance, phase timings)."""
    t0 = time.perf_counter()
    result = run_to_end(generate(bundle, request))
    if request.options.device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0, result


def run_reference(bundle, request, device) -> float:
    """The official way: fp32, sequential windows (up pass, then down pass), per-window encode/decode."""
    cfg, opts, codec = bundle.config, request.options, bundle.codec
    unet = getattr(bundle.volume, "_orig_mod", bundle.volume)  # the reference is never compiled
    mask = request.mask
    windows = plan_windows(mask.shape[0], cfg.window, cfg.overlap, request.start, official=True)
    ordered = [w for w in windows if w.direction == "up"] + [w for w in windows if w.direction == "down"]
    plan = make_ddim_plan(cfg.schedule, opts.steps, opts.eta, official_compat=True)
    lat_c, (lh, lw) = codec.latent_channels, cfg.latent_size
    t0 = time.perf_counter()
    with torch.no_grad():
        img = torch.as_tensor(request.informed.image)[None, None].to(device)
        ref0 = codec.encode(img)
        buffer = torch.zeros(mask.shape[0], lat_c, lh, lw, device=device)
        informed = {"up": ref0, "down": ref0}
        for w in ordered:
            enc = torch.from_numpy(cfg.labels.encode(mask[w.start : w.stop]))
            mlat = codec.mask_condition_latents(enc)  # re-encoded for every window, as the official driver
            cond = torch.cat([mlat, informed[w.direction].expand(w.length, -1, -1, -1)], dim=1)[None]
            noise = SeededNoise(opts.seed, w.index)
            x = noise.draw("x_T", (1, w.length, lat_c, lh, lw)).to(device)
            known = None
            if w.known:
                m = torch.zeros(1, w.length, dtype=torch.bool)
                kl = torch.zeros(1, w.length, lat_c, lh, lw, device=device)
                for f, z in zip(w.known, w.known_slices, strict=True):
                    m[0, f], kl[0, f] = True, buffer[z]
                known = Known(m.to(device), kl)
            out = denoise(lambda xt, t, cond=cond: unet(torch.cat([xt, cond], 2), t), x, plan, [noise], known=known)
            for f in w.write:
                buffer[w.start + f] = out[0, f]
            edge = w.stop - 1 if w.direction == "up" else w.start
            informed[w.direction] = buffer[edge][None]
            codec.decode(buffer[w.start : w.stop], chunk=16)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", choices=sorted(CONFIGS), default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--slices", type=int, default=None)
    p.add_argument("--decode-chunk", type=int, default=None,
                   help="slices per VAE call (bounds peak memory); default: the sampler's automatic choice")
    p.add_argument("--channels-last", action="store_true", help="experiment: networks in channels_last format")
    p.add_argument("--compile", action="store_true",
                   help="experiment: torch.compile the volume UNet (compiled during the warm-up; output checked)")
    p.add_argument("--temporal-conv", choices=sorted(FORMULATIONS), default=None,
                   help="experiment: a copy-free temporal convolution from benchmarks/bench_temporal_conv.py")
    p.add_argument("--cudnn-benchmark", action="store_true",
                   help="experiment: cuDNN autotuning (torch.backends.cudnn.benchmark; tuned in the warm-up)")
    p.add_argument("--skip-reference", action="store_true")
    args = p.parse_args(argv)
    spec = CONFIGS[args.config]
    steps = args.steps or spec["steps"]
    slices = args.slices or spec["slices"]
    device = resolve_device(args.device)
    if args.temporal_conv:
        use_temporal_conv(args.temporal_conv)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    torch.manual_seed(0)
    bundle, model_desc = _bundle(args.config, device)
    bundle.to(device).vae.eval()
    for m in bundle.modules().values():
        m.eval().requires_grad_(False)
        if args.channels_last:
            m.to(memory_format=torch.channels_last)
    mask = _mask(bundle, slices)
    h, w = bundle.config.image_size
    informed = InformedSlice(image=np.zeros((h, w), np.float32), source={"kind": "benchmark"})
    options = SamplingOptions(steps=steps, device=str(device), precision=args.precision, seed=0,
                              decode_chunk=args.decode_chunk)
    request = SamplingRequest(mask=mask, start=slices // 2, informed=informed, options=options)
    compile_diff = compile_volume_unet(bundle, request, device) if args.compile else None
    warm_up(bundle, request, device, always=args.compile)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds, result = run_ours(bundle, request)
    windows, phases = len(result.windows), result.provenance["timings_s"]
    peak = _peak_memory_mb(device)
    ref = None if args.skip_reference else run_reference(bundle, request, device)
    ref_windows = len(plan_windows(slices, bundle.config.window, bundle.config.overlap, slices // 2, official=True))
    print(json.dumps({
        "config": args.config,
        "model": model_desc,
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "precision": args.precision if device.type != "cpu" else "fp32",
        "volume": [slices, h, w],
        "steps": steps,
        "decode_chunk": result.provenance["decode_chunk"],
        "channels_last": args.channels_last,
        "compiled": args.compile,
        "temporal_conv": args.temporal_conv or "columns_conv1d",
        "cudnn_benchmark": args.cudnn_benchmark,
        "compiled_max_abs_diff": compile_diff,
        "windows": windows,
        "seconds_total": round(seconds, 3),
        "seconds_per_window": round(seconds / windows, 3),
        "seconds_encode_denoise_decode": [phases["encode"], phases["denoise"], phases["decode"]],
        "peak_memory_mb": round(peak, 1),
        "reference_windows": ref_windows,
        "reference_seconds_total": None if ref is None else round(ref, 3),
        "speedup_vs_reference": None if ref is None else round(ref / seconds, 3),
        "torch": torch.__version__,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
