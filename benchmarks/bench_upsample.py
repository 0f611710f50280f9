"""Nearest x2 upsampling: torch's ``F.interpolate`` against the broadcast copy the models use
(``models.layers.upsample_nearest2x``), timed in one run at the demo decoder's and UNet's sizes, with the
number of differing elements (must be 0): prints ONE JSON line.

    python benchmarks/bench_upsample.py [--device cpu|cuda] [--reps 10] [--save FILE]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F
from timing import emit, timed

from napari_gem3d.models.layers import upsample_nearest2x
from napari_gem3d.sampling.device import resolve_device

SHAPES = {"decoder_38x64x32": (38, 64, 32, 32), "decoder_38x64x16": (38, 64, 16, 16),
          "unet_32x128x16": (32, 128, 16, 16)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--save", help="append the JSON line to this file")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    result = {"benchmark": "upsample", "device": str(device), "threads": torch.get_num_threads(),
              "date": time.strftime("%Y-%m-%d"), "shapes": {}}
    for name, shape in SHAPES.items():
        x = torch.randn(shape, device=device)
        ref = F.interpolate(x, scale_factor=2.0, mode="nearest")
        t_interp = timed(lambda x=x: F.interpolate(x, scale_factor=2.0, mode="nearest"), args.reps, device)
        t_copy = timed(lambda x=x: upsample_nearest2x(x), args.reps, device)
        result["shapes"][name] = {"interpolate_ms": round(t_interp * 1e3, 3), "broadcast_ms": round(t_copy * 1e3, 3),
                                  "speedup": round(t_interp / t_copy, 2),
                                  "differing_elements": int((upsample_nearest2x(x) != ref).sum())}
    emit(result, args.save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
