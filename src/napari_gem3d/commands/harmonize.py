"""gem3d harmonize: de-enhancement, every case generated from its mask with ONE shared informed slice.

The informed slice is taken from ``--informed-from VOL`` at ``--position`` (default 0.5), and the same
relative position is the start slice in every case, so the whole data set takes that volume's
appearance; outputs are in the informed volume's intensity units. ``--images`` is optional: when given,
each output takes its case image's header (the geometry must match the mask). Sharded with
``torchrun`` and resumable like ``gem3d enhance`` (:mod:`napari_gem3d.batch`).
"""

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
    p.add_argument(
        "--informed-from", type=Path, required=True, help="volume that gives the one informed slice"
    )
    p.add_argument("--masks", type=Path, help="folder of label volumes")
    p.add_argument("--images", type=Path, help="optional folder of images (output headers; paired by name)")
    p.add_argument("--pairs", type=Path, help="CSV with columns case,image,mask instead of the folders")
    p.add_argument("--out", type=Path, required=True, help="output folder (images/, masks/, provenance/)")
    add_sampling_options(p)
    add_output_options(p)


def run(args: argparse.Namespace) -> int:

    from .. import batch
    from ..cases import case_inputs, pair_cases
    from ..distributed import dist_env, rank_device, shard, share_cpu_threads
    from ..files import input_spec
    from ..io import read_volume
    from ..outputs import cast_output, check_output_folder, output_dtype
    from ..sampling.informed import pick_informed
    from ..sampling.pipeline import run_to_end, sample_volume
    from ..volume import same_grid

    if args.pairs is None and args.masks is None:
        raise ValueError("give --masks DIR (and optionally --images DIR), or --pairs CSV")
    rank, world, local = dist_env()
    device = rank_device(args.device, local)
    cases = pair_cases(args.masks, args.images, args.pairs)
    inputs = [*case_inputs(cases, args.pairs), ("--informed-from", args.informed_from)]
    check_output_folder(args.out, inputs=inputs)
    options = replace(sampling_options(args), device=device)
    share_cpu_threads(device)
    informed_volume = read_volume(args.informed_from)
    dtype = output_dtype(args.dtype, informed_volume)  # outputs take the informed volume's units
    bundle = load_model(args.model)
    informed = pick_informed(informed_volume, bundle.config, position=args.position, name=str(args.informed_from))
    informed_spec = {**input_spec(args.informed_from), "position": args.position}

    jobs = []
    for case in shard(cases, rank, world):
        seed = batch.job_seed(args.seed, case.name, "harmonize")
        spec = {
            "command": "harmonize",
            "case": case.name,
            "seed": seed,
            "informed": informed_spec,
            "image": input_spec(case.image),
            "mask": input_spec(case.mask),
            "options": batch.options_spec(replace(options, seed=seed)),
            "model": batch.model_spec(bundle),
        }
        jobs.append(batch.Job(case.name, case, spec, batch.output_suffix(case)))

    def produce(job: batch.Job):
        mask = read_volume(job.case.mask)
        geometry = mask
        if job.case.image is not None:
            geometry = read_volume(job.case.image)
            if not same_grid(geometry, mask):
                raise ValueError(
                    f"image {job.case.image.name} and mask {job.case.mask.name} differ in geometry"
                )
        domain = domain_gate(args, bundle, mask, None if job.case.image is None else geometry,
                             informed=informed_volume, what=f"case {job.case.name}")
        opts = replace(options, seed=job.spec["seed"])
        out = run_to_end(sample_volume(bundle, mask, informed=informed, position=args.position, options=opts))
        array, stored = cast_output(out.volume.array, dtype)
        roles = [("mask", job.case.mask), ("image", job.case.image), ("informed_from", args.informed_from)]
        provenance = {**out.provenance, **run_provenance(args, roles), "output": stored, "domain": domain.to_dict()}
        provenance["batch"] = {"command": "harmonize", "case": job.case.name}
        return {"image": (geometry.with_array(array), None), "mask": (mask, None)}, provenance

    print(f"[rank {rank}] {len(jobs)} of {len(cases)} cases on {device}")
    summary = batch.run_jobs(jobs, args.out, produce, rank=rank, world=world)
    print(summary.line(rank, world))
    return 1 if summary.failed else 0
