"""gem3d counterfactual: one mask x K informed slices -> K volumes, difference maps, provenance.json."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from .common import (
    add_output_options,
    add_sampling_options,
    domain_gate,
    load_model,
    run_provenance,
    sampling_options,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mask", type=Path, required=True, help="label volume (NIfTI or NRRD)")
    p.add_argument(
        "--informed-from",
        type=Path,
        nargs="*",
        default=[],
        metavar="VOLUME",
        help="volumes to take the informed slice from (one counterfactual each)",
    )
    p.add_argument(
        "--generate",
        type=int,
        default=0,
        metavar="K",
        help="also make K informed slices with the model's slice generator (seeds seed..seed+K-1)",
    )
    p.add_argument("--informed-steps", type=int, default=50, help="DDIM steps of the slice generator")
    p.add_argument(
        "--image",
        type=Path,
        help="the mask's own image: outputs in its intensity units, and difference maps against it",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder (NN_name.nii.gz + provenance.json)")
    p.add_argument("--overwrite", action="store_true", help="replace earlier outputs in --out (never an input)")
    add_sampling_options(p)
    add_output_options(p)


def _informed_list(args: argparse.Namespace, bundle, volumes: list) -> list:
    """(name, informed slice) from each ``--informed-from`` volume (already read), then the generated ones."""
    from ..sampling.informed import generate_informed, pick_informed

    informed = []
    for path, volume in zip(args.informed_from, volumes, strict=True):
        informed.append(
            (_name(path), pick_informed(volume, bundle.config, position=args.position, name=str(path)))
        )
    for k in range(args.generate):
        seed = args.seed + k
        sl = generate_informed(
            bundle, args.position, seed=seed, steps=args.informed_steps, device=args.device,
            **({} if args.eta is None else {"eta": args.eta}),  # the slice generator's own default unless given
        )
        informed.append((f"generated_seed{seed}", sl))
    return informed


def _name(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..io import read_volume
    from ..outputs import check_output_folder, output_dtype
    from ..sampling.variants import counterfactuals, export_results

    if not args.informed_from and args.generate < 1:
        raise ValueError("give --informed-from VOLUME [VOLUME ...] and/or --generate K")
    if args.generate < 0 or args.informed_steps < 1:
        raise ValueError("--generate must be >= 0 and --informed-steps >= 1")
    if args.generate and args.seed + args.generate - 1 >= 2**64:
        raise ValueError(f"--seed {args.seed} with --generate {args.generate} needs seeds up to "
                         f"{args.seed + args.generate - 1}, past 2**64 - 1; choose a smaller --seed")
    if args.mode != "gem3d":
        raise ValueError("counterfactuals vary the informed slice: use --mode gem3d")
    inputs = [("--mask", args.mask), ("--image", args.image), *(("--informed-from", p) for p in args.informed_from)]
    check_output_folder(args.out, inputs=inputs)
    if args.out.exists() and any(args.out.iterdir()) and not args.overwrite:
        raise FileExistsError(f"{args.out} is not empty; choose a new folder or pass --overwrite")
    options = sampling_options(args)
    mask = read_volume(args.mask)
    image = read_volume(args.image) if args.image else None
    dtype = output_dtype(args.dtype, image)
    bundle = load_model(args.model)
    domain = domain_gate(args, bundle, mask, image)
    sources = [read_volume(path) for path in args.informed_from]
    for path, volume in zip(args.informed_from, sources, strict=True):  # appearance sources the model knows too
        domain_gate(args, bundle, mask, informed=volume, what=f"the mask with --informed-from {path.name}")
    informed = _informed_list(args, bundle, sources)
    gen = counterfactuals(bundle, mask, informed, image=image, position=args.position, options=options)
    bar = None
    try:
        while True:
            try:
                update = next(gen)
            except StopIteration as stop:
                results = stop.value
                break
            if bar is None:
                bar = tqdm(total=update.total, desc="counterfactuals", unit="window")
            bar.update(1)
            bar.set_postfix_str(f"{update.name} ({update.case + 1}/{update.cases})")
    finally:
        if bar is not None:
            bar.close()
    run = {**run_provenance(args, inputs), "domain": domain.to_dict()}
    results = [replace(r, provenance={**r.provenance, **run}) for r in results]
    paths = export_results(results, args.out, overwrite=args.overwrite, difference=image is not None,
                           dtype=dtype, inputs=inputs)
    print(f"wrote {len(results)} counterfactuals to {args.out} ({len(paths)} files)")
    return 0
