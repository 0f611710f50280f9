"""gem3d sample: one volume from a mask, with the informed slice from the image or another volume."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import (
    add_output_options,
    add_sampling_options,
    domain_gate,
    load_model,
    run_provenance,
    run_with_progress,
    sampling_options,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mask", type=Path, required=True, help="label volume (NIfTI or NRRD)")
    p.add_argument("--image", type=Path,
                   help="image whose slice at --position is the informed slice (and the geometry)")
    p.add_argument("--informed-from", type=Path,
                   help="take the informed slice from this volume instead (counterfactual)")
    p.add_argument("--out", type=Path, required=True, help="output volume (.nii.gz, .nii or .nrrd)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier output (never an input)")
    add_sampling_options(p)
    add_output_options(p)


def run(args: argparse.Namespace) -> int:
    from ..io import read_volume, write_volume
    from ..outputs import cast_output, check_output_file, output_dtype
    from ..sampling.informed import pick_informed
    from ..sampling.pipeline import sample_volume

    inputs = [("--mask", args.mask), ("--image", args.image), ("--informed-from", args.informed_from)]
    check_output_file(args.out, inputs=inputs, overwrite=args.overwrite)
    options = sampling_options(args)
    mask = read_volume(args.mask)
    image = read_volume(args.image) if args.image else None
    informed_volume = read_volume(args.informed_from) if args.informed_from else None
    bundle = load_model(args.model)
    informed = None
    if informed_volume is not None:
        informed = pick_informed(informed_volume, bundle.config, position=args.position,
                                 name=str(args.informed_from))
    domain = domain_gate(args, bundle, mask, image, informed_volume)
    # the stored type follows the volume whose intensity units the output takes
    dtype = output_dtype(args.dtype, image if image is not None else informed_volume)
    out = run_with_progress(
        sample_volume(bundle, mask, image=image, informed=informed, position=args.position, options=options)
    )
    array, stored = cast_output(out.volume.array, dtype)
    provenance = {**out.provenance, **run_provenance(args, inputs), "output": stored, "domain": domain.to_dict()}
    geometry = image or mask
    write_volume(geometry.with_array(array), args.out, provenance=provenance, overwrite=args.overwrite,
                 description=domain.summary())
    t = out.provenance["timings_s"]
    print(f"wrote {args.out} ({out.provenance['num_windows']} windows, {t['total']:.1f} s, {stored['dtype']})")
    return 0
