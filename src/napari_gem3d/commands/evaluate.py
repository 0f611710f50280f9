"""gem3d evaluate: generated volumes against real ones; prints a table, writes metrics.csv and metrics.md.

Generated ``<case>.nii.gz`` or ``<case>_<anything>.nii.gz`` pairs with real ``<case>.nii.gz``. Metrics:
MS-SSIM (kernel/scales fitted to the size), SSIM, PSNR, inter-slice consistency and seams, and FID-A/C/S
with the named feature extractor (``fallback``: offline, untrained random-conv features; ``radimagenet``:
RadImageNet ResNet-50 from --weights), optionally FID-3D with deepbet's encoder. See napari_gem3d.metrics.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--real", type=Path, required=True, help="folder of real volumes")
    p.add_argument("--generated", type=Path, required=True, help="folder of generated volumes")
    p.add_argument("--out", type=Path, required=True, help="folder for metrics.csv and metrics.md")
    p.add_argument(
        "--extractor",
        choices=["fallback", "radimagenet"],
        default="fallback",
        help="FID feature extractor (default: the offline fallback)",
    )
    p.add_argument(
        "--weights", type=Path, help="RadImageNet-ResNet50_notop.pth or .safetensors (radimagenet)"
    )
    p.add_argument(
        "--fid-size", type=int, default=None, help="slice size fed to the extractor (default: its own)"
    )
    p.add_argument("--slice-stride", type=int, default=1, help="use every k-th slice for FID (default 1)")
    p.add_argument(
        "--fid-3d", action="store_true", help="also FID-3D with deepbet's encoder (pip install deepbet)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")


def run(args: argparse.Namespace) -> int:
    from ..metrics.features import deepbet_extractor, make_extractor
    from ..metrics.report import evaluate_folders, write_report
    from ..outputs import check_output_folder
    from ..sampling.device import resolve_device

    if args.slice_stride < 1:
        raise ValueError(f"--slice-stride must be >= 1, got {args.slice_stride}")
    check_output_folder(args.out)  # metrics.csv / metrics.md: checked before the metrics are computed
    device = str(resolve_device(args.device))
    extractor = make_extractor(args.extractor, weights=args.weights, device=device, input_size=args.fid_size)
    extractor_3d = deepbet_extractor(device=device) if args.fid_3d else None
    report = evaluate_folders(
        args.real,
        args.generated,
        extractor=extractor,
        fid_3d_extractor=extractor_3d,
        stride=args.slice_stride,
        device=device,
        log=print,
    )
    csv_path, md_path = write_report(report, args.out)
    print(report.to_markdown())
    print(f"wrote {csv_path} and {md_path}")
    return 0
