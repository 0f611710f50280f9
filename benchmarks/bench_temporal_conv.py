"""Temporal convolution formulations, timed against each other in one run: prints ONE JSON line.

The H100 profile (benchmarks/results/h100-2026-11-28-profile.txt) puts ~30 % of a volume-UNet call in
the temporal Conv1d over pixel columns and its two layout copies. This compares that formulation (the
one the model uses) with three copy-free ones, on the official level-0 activation, and checks that all
four give the same numbers; a formulation moves into the model only after it wins on a GPU here.

    python benchmarks/bench_temporal_conv.py --device cuda --precision bf16
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F
from timing import timed

from napari_gem3d.models.layers import TemporalConv
from napari_gem3d.sampling.device import autocast, resolve_device


def stacked_1x1(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, frames: int) -> torch.Tensor:
    """One 1x1 convolution computes the three taps of every frame; shifted views add them up."""
    bf, c, h, w = x.shape
    o = weight.shape[0]
    taps = F.conv2d(x, weight.permute(2, 0, 1).reshape(3 * o, c, 1, 1)).view(bf // frames, frames, 3, o, h, w)
    out = taps[:, :, 1] + bias.to(taps.dtype)[:, None, None]
    out[:, 1:] += taps[:, :-1, 0]
    out[:, :-1] += taps[:, 1:, 2]
    return out.reshape(bf, o, h, w)


def per_window_1x1(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, frames: int) -> torch.Tensor:
    """Centre tap over all frames, then the shifted taps window by window on contiguous frame ranges."""
    k = [weight[:, :, i, None, None] for i in range(3)]
    out = F.conv2d(x, k[1], bias)
    for s in range(0, x.shape[0], frames):
        win = x[s : s + frames]
        out[s + 1 : s + frames] += F.conv2d(win[:-1], k[0])
        out[s : s + frames - 1] += F.conv2d(win[1:], k[2])
    return out


def per_window_baddbmm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, frames: int) -> torch.Tensor:
    """The taps as batched matrix products on the (c, h*w) pixel matrices, accumulated in place.

    No layout conversion at all for contiguous NCHW input (a GEMM per frame, the weight broadcast);
    the weights are cast to the activations' dtype, as autocast does for a convolution.
    """
    bf, c, h, w = x.shape
    o = weight.shape[0]
    wt, b = weight.to(x.dtype), bias.to(x.dtype)
    xs = x.reshape(bf, c, h * w)
    out = torch.baddbmm(b[None, :, None].expand(bf, o, h * w), wt[:, :, 1].expand(bf, o, c), xs)
    for s in range(0, bf, frames):
        out[s + 1 : s + frames].baddbmm_(wt[:, :, 0].expand(frames - 1, o, c), xs[s : s + frames - 1])
        out[s : s + frames - 1].baddbmm_(wt[:, :, 2].expand(frames - 1, o, c), xs[s + 1 : s + frames])
    return out.view(bf, o, h, w)


#: the copy-free candidates, by name (``bench_sampler.py --temporal-conv NAME`` swaps one into the model)
FORMULATIONS = {"stacked_1x1": stacked_1x1, "per_window_1x1": per_window_1x1, "per_window_baddbmm": per_window_baddbmm}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--channels", type=int, default=320)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--windows", type=int, default=2)
    p.add_argument("--reps", type=int, default=20)
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    layer = TemporalConv(args.channels).to(device)
    with torch.no_grad():
        layer.conv.weight.normal_(0, 0.05)
        layer.conv.bias.normal_()
    frames = 16
    x = torch.randn(args.windows * frames, args.channels, args.size, args.size, device=device)
    if device.type != "cpu" and args.precision != "fp32":  # what the previous (autocast) convolution hands over
        x = x.to(torch.bfloat16 if args.precision == "bf16" else torch.float16)
    wgt, bias = layer.conv.weight, layer.conv.bias
    candidates = {"columns_conv1d": lambda: layer(x, frames)}
    for name, fn in FORMULATIONS.items():
        candidates[name] = lambda fn=fn: fn(x, wgt, bias, frames)
    result = {"device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
              "precision": args.precision, "input": list(x.shape)}
    with torch.no_grad(), autocast(device, args.precision):
        ref = candidates["columns_conv1d"]().float()
        for name, fn in candidates.items():
            result[f"{name}_max_abs_diff"] = round((fn().float() - ref).abs().max().item(), 6)
            result[f"{name}_ms"] = round(timed(fn, args.reps, device) * 1e3, 3)
    for name in FORMULATIONS:
        result[f"{name}_speedup"] = round(result["columns_conv1d_ms"] / result[f"{name}_ms"], 3)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
