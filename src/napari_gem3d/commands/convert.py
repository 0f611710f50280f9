"""gem3d convert-official: official Lightning checkpoints -> a model bundle (weights_only loading)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--volume", type=Path, help="GEM-3D stage-2 volume model checkpoint (.ckpt)")
    p.add_argument("--base", type=Path, help="mask-only baseline checkpoint")
    p.add_argument("--slice", type=Path, help="position-conditioned slice model checkpoint")
    p.add_argument("--vae", type=Path,
                   help="standalone KL-f8 autoencoder checkpoint (optional: GEM-3D checkpoints carry it)")
    p.add_argument("--labels", choices=["brain", "abdomen"], default="brain", help="label set of the training data")
    p.add_argument("--params", type=Path,
                   help="JSON with official constructor params per kind, if not the published ones")
    p.add_argument("--slice-ema", action="store_true",
                   help="use the slice model's EMA weights (the official scripts do not)")
    p.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    p.add_argument("--overwrite", action="store_true")


def run(args: argparse.Namespace) -> int:
    from ..models.convert import convert_official

    params = None
    if args.params:
        try:
            params = json.loads(args.params.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{args.params}: not valid JSON ({exc})") from None
    out = convert_official(
        args.out, volume=args.volume, base=args.base, slice=args.slice, vae=args.vae, labels=args.labels,
        params=params, slice_ema=args.slice_ema, overwrite=args.overwrite,
    )
    print(f"wrote bundle {out}")
    return 0
