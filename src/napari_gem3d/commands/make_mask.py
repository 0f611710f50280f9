"""gem3d make-mask: a model-ready label mask from your own brain MR scan (and lesion mask), on its grid."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import load_model


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", type=Path, required=True, help="your brain MR scan (NIfTI or NRRD)")
    p.add_argument("--lesion", type=Path,
                   help="your lesion mask on the image's grid (any non-zero value = lesion), or with "
                        "--label-map a label map in another scheme")
    p.add_argument("--lesion-as", default="auto", metavar="auto|NAME",
                   help="auto (default): split each lesion into the model's lesion labels (e.g. necrotic core, "
                        "enhancing rim, oedema) by intensity; NAME: every lesion voxel becomes that label")
    p.add_argument("--label-map", default=None, metavar="1:NAME,2:NAME",
                   help="the --lesion mask's values as model label names, e.g. '1:necrotic tumour core,"
                        "2:oedema,4:enhancing tumour rim'; an unmapped 0 is filled in from the image")
    p.add_argument("--brain", default="auto", choices=["auto", "deepbet", "fallback", "none"],
                   help="brain extraction: auto (default: deepbet if installed, else fallback), deepbet, "
                        "fallback (no network), none (the image is already skull-stripped)")
    p.add_argument("--out", type=Path, required=True, help="output label mask (.nii.gz, .nii or .nrrd)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier output (never an input)")
    p.add_argument("--model", type=Path, default=None,
                   help="model bundle whose label scheme to use (default: the bundled demo model)")


def parse_label_map(text: str | None) -> dict[int, str] | None:
    """``"1:grey matter,2:white matter"`` -> {1: "grey matter", 2: "white matter"}."""
    if text is None:
        return None
    out: dict[int, str] = {}
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        value, sep, name = item.partition(":")
        try:
            key = int(value.strip())
        except ValueError:
            key = None
        if not sep or key is None or not name.strip():
            raise ValueError(f"--label-map entry {item!r} is not VALUE:NAME; write e.g. "
                             "--label-map '1:necrotic tumour core,2:oedema'")
        if key in out:
            raise ValueError(f"--label-map gives the value {key} twice; give each value once")
        out[key] = name.strip()
    if not out:
        raise ValueError("--label-map is empty; write e.g. --label-map '1:necrotic tumour core,2:oedema'")
    return out


def run(args: argparse.Namespace) -> int:
    from ..io import read_volume, write_volume
    from ..make_mask import make_model_mask
    from ..outputs import check_output_file
    from .common import run_provenance

    inputs = [("--image", args.image), ("--lesion", args.lesion)]
    check_output_file(args.out, inputs=inputs, overwrite=args.overwrite)
    label_map = parse_label_map(args.label_map)
    if label_map is not None and args.lesion is None:
        raise ValueError("--label-map describes the values of a mask: give that mask with --lesion")
    bundle = load_model(args.model)
    image = read_volume(args.image)
    lesion = read_volume(args.lesion) if args.lesion else None
    mask, report = make_model_mask(
        image, bundle.config.card, bundle.config.labels.names, lesion=lesion, lesion_as=args.lesion_as,
        label_map=label_map, brain=args.brain,
    )
    provenance = {
        **run_provenance(args, inputs),
        "make_mask": {"model": bundle.config.name, "method": report["method"], "counts": report["counts"],
                      "report": report},
    }
    write_volume(mask, args.out, dtype="uint8", provenance=provenance, overwrite=args.overwrite)
    counts = ", ".join(f"{name} {n}" for name, n in report["counts"].items())
    brain = report["method"]["brain"].split(" ")[0].rstrip(":")
    warn = f"; {len(report['warnings'])} warning(s): {' | '.join(report['warnings'])}" if report["warnings"] else ""
    print(f"wrote {args.out} (brain: {brain}; voxels: {counts}){warn}")
    return 0
