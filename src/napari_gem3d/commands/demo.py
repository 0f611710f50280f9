"""gem3d demo: the bundled demo case through the bundled model -> generated.nii.gz + montage.png."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_sampling_options, load_model, run_with_progress, sampling_options


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="output folder")
    add_sampling_options(p)
    p.set_defaults(steps=25)


def run(args: argparse.Namespace) -> int:
    from .. import demo_case
    from ..io import write_volume
    from ..montage import save_montage
    from ..sampling.pipeline import sample_volume

    image, mask = demo_case()
    bundle = load_model(args.model)
    args.out.mkdir(parents=True, exist_ok=True)
    out = run_with_progress(
        sample_volume(bundle, mask, image=image, position=args.position, options=sampling_options(args))
    )
    generated = image.with_array(out.volume.array, source=None)
    target = args.out / "generated.nii.gz"
    write_volume(generated, target, provenance=out.provenance, overwrite=True)
    save_montage(
        [("real image", image), ("mask", mask), ("generated", generated)],
        args.out / "montage.png",
        kinds=["image", "labels", "image"],
        title=f"{bundle.config.name}: {out.provenance['num_windows']} windows, {args.steps} steps, "
        f"{out.provenance['timings_s']['total']:.1f} s on {out.provenance['device']}",
    )
    print(f"wrote {target} and {args.out / 'montage.png'} ({out.provenance['timings_s']['total']:.1f} s)")
    return 0
