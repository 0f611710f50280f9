"""gem3d enhance: N-fold resampling of an image/mask data set (dataset enhancement), sharded and resumable.

Each case gets ``--times`` new images from its own mask, each with its own seed, and the informed slice
is the case's own image slice at ``--position`` (or at a position drawn from ``--position-range`` with
the job's seed). Run on several GPUs/processes with
``torchrun --nproc_per_node K -m napari_gem3d.cli enhance ...``; rerunning skips finished outputs.
Layout, pairing and resuming rules: :mod:`napari_gem3d.batch`.
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
    p.add_argument("--images", type=Path, help="folder of images (paired with masks by name)")
    p.add_argument("--masks", type=Path, help="folder of label volumes")
    p.add_argument("--pairs", type=Path, help="CSV with columns case,image,mask instead of the two folders")
    p.add_argument("--out", type=Path, required=True, help="output folder (images/, masks/, provenance/)")
    p.add_argument("--times", type=int, default=1, help="new images per case (default 1)")
    p.add_argument(
        "--position-range",
        type=float,
        nargs=2,
        default=(0.25, 0.75),
        metavar=("LO", "HI"),
        help="informed-slice positions are drawn from [LO, HI] unless --position is given",
    )
    add_sampling_options(p)
    add_output_options(p)
    p.set_defaults(position=None)  # None: a random position per job


def _draw_position(seed: int, lo: float, hi: float) -> float:
    import numpy as np

    return round(float(lo + (hi - lo) * np.random.default_rng(seed).random()), 6)


def run(args: argparse.Namespace) -> int:
    from .. import batch
    from ..cases import case_inputs, pair_cases
    from ..distributed import dist_env, rank_device, shard, share_cpu_threads
    from ..files import input_spec
    from ..io import read_volume
    from ..outputs import cast_output, check_output_folder, output_dtype
    from ..sampling.pipeline import run_to_end, sample_volume

    if args.times < 1:
        raise ValueError(f"--times must be >= 1, got {args.times}")
    lo, hi = args.position_range
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"--position-range needs 0 <= LO <= HI <= 1, got {lo} {hi}")
    if args.pairs is None and (args.images is None or args.masks is None):
        raise ValueError("give --images DIR and --masks DIR, or --pairs CSV")
    rank, world, local = dist_env()
    device = rank_device(args.device, local)
    cases = pair_cases(args.masks, args.images, args.pairs)
    missing = [c.name for c in cases if c.image is None]
    if missing:
        raise ValueError(f"enhancement needs an image for every case; none for {missing[:5]}")
    check_output_folder(args.out, inputs=case_inputs(cases, args.pairs))
    options = replace(sampling_options(args), device=device)
    share_cpu_threads(device)
    bundle = load_model(args.model)
    todo = [(c, k) for c in cases for k in range(1, args.times + 1)]

    jobs = []
    for case, k in shard(todo, rank, world):
        seed = batch.job_seed(args.seed, case.name, k)
        position = args.position if args.position is not None else _draw_position(seed, lo, hi)
        spec = {
            "command": "enhance",
            "case": case.name,
            "replicate": k,
            "seed": seed,
            "position": position,
            "image": input_spec(case.image),
            "mask": input_spec(case.mask),
            "options": batch.options_spec(replace(options, seed=seed)),
            "model": batch.model_spec(bundle),
        }
        jobs.append(batch.Job(f"{case.name}_gen{k:02d}", case, spec, batch.output_suffix(case)))

    def produce(job: batch.Job):
        image, mask = read_volume(job.case.image), read_volume(job.case.mask)
        domain = domain_gate(args, bundle, mask, image, what=f"case {job.case.name}")
        opts = replace(options, seed=job.spec["seed"])
        out = run_to_end(
            sample_volume(bundle, mask, image=image, position=job.spec["position"], options=opts)
        )
        array, stored = cast_output(out.volume.array, output_dtype(args.dtype, image))
        provenance = {**out.provenance, **run_provenance(args, [("image", job.case.image), ("mask", job.case.mask)])}
        provenance["batch"] = {"command": "enhance", "case": job.case.name, "replicate": job.spec["replicate"]}
        provenance["output"], provenance["domain"] = stored, domain.to_dict()
        return {"image": (image.with_array(array), None), "mask": (mask, None)}, provenance

    print(f"[rank {rank}] {len(jobs)} of {len(todo)} jobs ({len(cases)} cases x {args.times}) on {device}")
    summary = batch.run_jobs(jobs, args.out, produce, rank=rank, world=world)
    print(summary.line(rank, world))
    return 1 if summary.failed else 0
