"""Where the official-size sampler spends its GPU time: per-call timings and the top CUDA kernels.

    python benchmarks/profile_official.py   (CUDA only; prints plain text)
"""

from __future__ import annotations

import torch
from timing import timed
from torch.profiler import ProfilerActivity, profile

from napari_gem3d.models import build_bundle
from napari_gem3d.models.presets import official_config


def main() -> None:
    dev = torch.device("cuda")
    with dev:
        bundle = build_bundle(official_config(unets=("volume",)))
    unet, vae = bundle.volume.eval(), bundle.vae.eval()
    t = torch.full((1,), 500, device=dev)
    auto = torch.autocast("cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        for b in (1, 2):
            x = torch.randn(b, 16, 12, 64, 64, device=dev)
            with auto:
                s = timed(lambda x=x, b=b: unet(x, t.expand(b)), 5, dev)
            print(f"unet bf16 batch {b}x16 frames: {s * 1e3:.1f} ms")
        x = torch.randn(1, 16, 12, 64, 64, device=dev)
        s = timed(lambda: unet(x, t), 5, dev)
        print(f"unet fp32 batch 1x16 frames: {s * 1e3:.1f} ms")
        z = torch.randn(16, 4, 64, 64, device=dev)
        img = torch.randn(16, 3, 512, 512, device=dev)
        with auto:
            print(f"vae decode bf16 16 slices: {timed(lambda: vae.decode(z), 2, dev) * 1e3:.1f} ms")
            print(f"vae encode bf16 16 slices: {timed(lambda: vae.posterior(img), 2, dev) * 1e3:.1f} ms")
        with auto, profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(3):
                unet(x, t)
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=60))


if __name__ == "__main__":
    main()
