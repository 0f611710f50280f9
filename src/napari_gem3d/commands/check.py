"""gem3d check: is an image + mask inside the model's domain? Prints every finding with its fix.

Exit status 0 when in domain (warnings may be printed), 3 when not; 2 for unreadable inputs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

OUT_OF_DOMAIN = 3


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mask", type=Path, required=True, help="label volume (NIfTI or NRRD)")
    p.add_argument("--image", type=Path, help="the mask's image (modality, body and field of view checks)")
    p.add_argument("--model", type=Path, default=None, help="model bundle folder (default: the bundled demo model)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    from ..domain import check_domain
    from ..io import read_volume
    from .common import load_model

    mask = read_volume(args.mask)
    image = read_volume(args.image) if args.image else None
    if image is not None and (image.shape != mask.shape):
        raise ValueError(f"image {image.shape} and mask {mask.shape} differ in shape; resample the mask onto the image")
    bundle = load_model(args.model)
    report = check_domain(bundle.config, mask, image)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        verdict = "in the model's domain" if report.in_domain else "OUT of the model's domain"
        print(f"{args.mask.name}{' + ' + args.image.name if args.image else ''}: {verdict} ({report.model})")
        for line in report.lines():
            print(f"  - {line}")
        if not report.findings:
            print("  no findings")
    return 0 if report.in_domain else OUT_OF_DOMAIN
