"""Peak memory of VAE decoding against the number of slices per decoder call: prints ONE JSON line.

Decoding is where a generation peaks (the decoder's full-resolution activations), so the slices per
decoder call (``SamplingOptions.decode_chunk``) set the peak. This decodes ``chunk`` slices with the
official-size VAE (random weights) for several chunks and fits ``peak = fixed + per_slice * chunk``;
``bytes_per_pixel`` is the slope per output pixel, the number the automatic chunk is sized from.

On CUDA the peak is ``max_memory_allocated`` above what was allocated before the call; on the CPU each
chunk runs in a fresh process and the peak is its maximum resident size above the resident size before
decoding (coarser: the allocator keeps freed pages).

    python benchmarks/bench_decode_memory.py --device cpu --chunks 1,2,3
    python benchmarks/bench_decode_memory.py --device cuda --precision bf16 --chunks 1,2,4,8
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from napari_gem3d.models.latent import LatentCodec
from napari_gem3d.models.presets import official_config
from napari_gem3d.models.vae import AutoencoderKL
from napari_gem3d.sampling.device import autocast, effective_precision, resolve_device


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def measure(device: torch.device, precision: str, size: int, chunk: int) -> dict:
    """Peak MB above the baseline and seconds for decoding ``chunk`` slices of ``size``^2 (second call)."""
    torch.manual_seed(0)
    cfg = official_config()
    vae = AutoencoderKL(cfg.vae).to(device).eval().requires_grad_(False)
    codec = LatentCodec(vae, scale_factor=cfg.scale_factor, mask_condition=cfg.mask_condition)
    f = codec.downsampling
    z = torch.randn(chunk, codec.latent_channels, size // f, size // f, device=device)
    with torch.no_grad(), autocast(device, precision):
        codec.decode(z[:1], chunk=1)  # kernels and allocator warm
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device) / 2**20
        else:
            before = _rss_mb()
        t0 = time.perf_counter()
        out = codec.decode(z, chunk=chunk)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device) / 2**20
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        seconds = time.perf_counter() - t0
    assert out.shape == (chunk, 1, size, size)
    return {"peak_mb": round(peak - before, 1), "seconds": round(seconds, 3)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--chunks", default="1,2,3")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)  # CPU: one chunk per process
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    precision = effective_precision(args.precision, device)
    if args.child is not None:
        print(json.dumps(measure(device, precision, args.size, args.child)))
        return 0
    chunks = sorted({int(c) for c in args.chunks.split(",")})
    if len(chunks) < 2:
        raise SystemExit("give at least two chunk sizes (--chunks 1,2) to fit the per-slice cost")
    results = {}
    for c in chunks:
        if device.type == "cuda":
            results[c] = measure(device, precision, args.size, c)
            torch.cuda.empty_cache()
        else:
            cmd = [sys.executable, __file__, "--device", "cpu", "--size", str(args.size), "--child", str(c)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results[c] = json.loads(out.stdout.strip().splitlines()[-1])
    slope, fixed = np.polyfit(chunks, [results[c]["peak_mb"] for c in chunks], 1)
    print(json.dumps({
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "precision": precision,
        "size": args.size,
        "per_chunk": {str(c): results[c] for c in chunks},
        "mb_per_slice": round(float(slope), 1),
        "fixed_mb": round(float(fixed), 1),
        "bytes_per_pixel": round(float(slope) * 2**20 / args.size**2, 1),
        "torch": torch.__version__,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
