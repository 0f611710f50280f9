"""gem3d demo: the bundled demo case through the bundled model -> generated.nii.gz + montage.png."""

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
    p.add_argument("--out", type=Path, required=True, help="output folder")
    add_sampling_options(p)
    add_output_options(p)


def run(args: argparse.Namespace) -> int:
    from .. import demo_case
    from ..io import write_volume
    from ..montage import save_montage
    from ..outputs import cast_output, check_output_folder, output_dtype
    from ..sampling.pipeline import sample_volume

    options = sampling_options(args)
    image, mask = demo_case()
    inputs = [("image", image.header["source"]), ("mask", mask.header["source"])]
    check_output_folder(args.out, inputs=inputs)
    dtype = output_dtype(args.dtype, image)
    bundle = load_model(args.model)
    domain = domain_gate(args, bundle, mask, image, what="the demo case")
    out = run_with_progress(
        sample_volume(bundle, mask, image=image, position=args.position, options=options)
    )
    array, stored = cast_output(out.volume.array, dtype)
    generated = image.with_array(array, source=None)
    provenance = {**out.provenance, **run_provenance(args, inputs), "output": stored, "domain": domain.to_dict()}
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / "generated.nii.gz"
    write_volume(generated, target, provenance=provenance, overwrite=True, description=domain.summary())
    save_montage(
        [("real image", image), ("mask", mask), ("generated", generated)],
        args.out / "montage.png",
        kinds=["image", "labels", "image"],
        title=f"{bundle.config.name}: {out.provenance['num_windows']} windows, {out.provenance['solver']} "
        f"{out.provenance['steps']} steps, "
        + (f"lesion guidance {out.provenance['lesion_guidance']:g}, " if out.provenance["lesion_guidance"] != 1 else "")
        + f"{out.provenance['timings_s']['total']:.1f} s on {out.provenance['device']}",
    )
    print(f"wrote {target} and {args.out / 'montage.png'} ({out.provenance['timings_s']['total']:.1f} s)")
    return 0
