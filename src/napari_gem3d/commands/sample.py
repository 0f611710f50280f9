"""gem3d sample: one volume from a mask, with the informed slice from the image or another volume."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_sampling_options, load_model, run_with_progress, sampling_options


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mask", type=Path, required=True, help="label volume (NIfTI or NRRD)")
    p.add_argument("--image", type=Path,
                   help="image whose slice at --position is the informed slice (and the geometry)")
    p.add_argument("--informed-from", type=Path,
                   help="take the informed slice from this volume instead (counterfactual)")
    p.add_argument("--out", type=Path, required=True, help="output volume (.nii.gz, .nii or .nrrd)")
    p.add_argument("--overwrite", action="store_true")
    add_sampling_options(p)


def run(args: argparse.Namespace) -> int:
    from ..io import read_volume, write_volume
    from ..sampling.informed import pick_informed
    from ..sampling.pipeline import sample_volume

    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} exists; pass --overwrite to replace it")
    mask = read_volume(args.mask)
    image = read_volume(args.image) if args.image else None
    bundle = load_model(args.model)
    informed = None
    if args.informed_from:
        informed = pick_informed(read_volume(args.informed_from), bundle.config, position=args.position,
                                 name=str(args.informed_from))
    out = run_with_progress(
        sample_volume(bundle, mask, image=image, informed=informed, position=args.position,
                      options=sampling_options(args))
    )
    geometry = image or mask
    write_volume(geometry.with_array(out.volume.array), args.out, provenance=out.provenance, overwrite=args.overwrite)
    t = out.provenance["timings_s"]
    print(f"wrote {args.out} ({out.provenance['num_windows']} windows, {t['total']:.1f} s)")
    return 0
