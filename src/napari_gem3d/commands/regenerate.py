"""gem3d regenerate: after a mask edit, regenerate only the slices whose mask changed (plus a margin).

Everything else (model, seed, steps, informed slice, settings) comes from GEN's provenance; slices outside
the regenerated range are copied from GEN byte for byte. See :mod:`napari_gem3d.sampling.regenerate`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import add_output_options, domain_gate, load_model, run_provenance, run_with_progress


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="previous", type=Path, required=True, metavar="GEN",
                   help="a volume written by gem3d sample / regenerate / the sampling dock")
    p.add_argument("--mask", type=Path, required=True, help="the edited label volume (GEN's geometry)")
    p.add_argument("--image", type=Path, help="the informed image (used only when a full run is needed)")
    p.add_argument("--out", type=Path, required=True, help="output volume (.nii.gz, .nii or .nrrd)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier output (never an input)")
    p.add_argument("--margin", type=int, default=None,
                   help="slices regenerated beyond the changed ones, each side (default: 1 when GEN was made with "
                        "slice coherence, the default; 2 without)")
    p.add_argument("--model", type=Path, default=None, help="the model bundle GEN was made with (default: demo)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"], help="bf16/fp16 on a GPU only")
    p.add_argument("--force", action="store_true", help="regenerate even when the domain check refuses")
    add_output_options(p, dtype=False)


def run(args: argparse.Namespace) -> int:
    from ..io import read_volume, write_volume
    from ..outputs import cast_output, check_output_file
    from ..sampling.device import effective_precision, resolve_device
    from ..sampling.regenerate import regenerate

    inputs = [("--from", args.previous), ("--mask", args.mask), ("--image", args.image)]
    check_output_file(args.out, inputs=inputs, overwrite=args.overwrite)
    effective_precision(args.precision, resolve_device(args.device))
    previous, mask = read_volume(args.previous), read_volume(args.mask)
    image = read_volume(args.image) if args.image else None
    bundle = load_model(args.model)
    domain = domain_gate(args, bundle, mask, image)
    out = run_with_progress(regenerate(bundle, previous, mask, image=image, margin=args.margin,
                                       device=args.device, precision=args.precision, cpu_threads="auto"))
    array = out.volume.array
    if array.dtype != previous.array.dtype:  # a full run: stored like GEN
        array = cast_output(array, previous.array.dtype)[0]
    provenance = {**out.provenance, **run_provenance(args, inputs), "domain": domain.to_dict()}
    write_volume(previous.with_array(array), args.out, provenance=provenance, overwrite=args.overwrite,
                 description=domain.summary())
    regen = provenance["regenerated"]
    what = "full run" if regen["full_run"] else f"slices {regen['range'][0]}-{regen['range'][1] - 1}"
    print(f"wrote {args.out} ({what} of {regen['num_slices']}, {provenance['timings_s']['total']:.1f} s)")
    if regen.get("warning"):
        print(f"warning: {regen['warning']}", file=sys.stderr)
    return 0
