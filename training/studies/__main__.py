"""Run the studies on the demo set-up and write ``training/studies/REPORT.md``.

    python -m training.recipes.demo --out runs/demo          # the run the studies read (bundles, cases)
    python -m training.studies --run runs/demo --out runs/studies [--only table2 c1] [--seeds 0 1 2]
    python -m training.studies --run runs/demo --out runs/studies --only pretrain --seg-steps 150 --pretrain-steps 300
    python -m training.studies --run runs/demo --out runs/studies --only first_stage --vq-run runs/demo-vq

Samples are cached under ``OUT/samples/`` and each study's numbers in ``OUT/<study>.json``: re-running
continues where an interrupted run stopped. ``--report-only`` rewrites the report from those files.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ORDER = ("table2", "c1", "coherence", "compat", "c2", "table1", "downstream", "pretrain", "first_stage")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.studies", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="the demo recipe's output folder")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--only", nargs="*", choices=ORDER, default=list(ORDER))
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=25, help="DDIM steps per generation")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seg-steps", type=int, default=None, help="segmenter training steps (pretrain study)")
    p.add_argument("--pretrain-steps", type=int, default=None, help="pretrain-seg steps (pretrain study)")
    p.add_argument("--subjects", nargs="*", type=int, default=[1, 2, 3], help="labelled subjects (pretrain study)")
    p.add_argument("--arms", nargs="*", default=None,
                   help="pretrain study: only these arms (default all); rows of the others already in OUT are kept")
    p.add_argument("--vq-run", type=Path, default=None,
                   help="a demo recipe run with --first-stage vq (the first_stage study; skipped without it)")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)

    import torch

    from napari_gem3d.io import atomic_write

    from .context import StudyContext
    from .downstream import STEPS, downstream
    from .first_stage import first_stage
    from .pretrain_arms import PRETRAIN_STEPS, pretrain_arms
    from .report import coherence_goals, findings, goals_markdown, write_report, write_results
    from .tables import STUDIES

    torch.set_num_threads(args.threads)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    timing_path = out / "timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
    if not args.report_only:
        try:
            ctx = StudyContext.load(args.run.resolve(), out, steps=args.steps, seeds=tuple(args.seeds))
            if args.vq_run is not None:
                ctx.other_runs["vq"] = args.vq_run.resolve()
        except (FileNotFoundError, ValueError) as exc:
            print(f"python -m training.studies: {exc}", file=sys.stderr)
            return 2
        for study in (s for s in ORDER if s in args.only):
            if study == "first_stage" and args.vq_run is None:
                print("[studies] first_stage: skipped (it needs --vq-run)", flush=True)
                continue
            t0 = time.perf_counter()
            print(f"[studies] {study} ...", flush=True)
            if study == "pretrain":
                earlier = out / "pretrain.json"
                result = pretrain_arms(ctx, counts=tuple(args.subjects), seg_steps=args.seg_steps or STEPS,
                                       pretrain_steps=args.pretrain_steps or PRETRAIN_STEPS,
                                       arms=tuple(args.arms) if args.arms else None,
                                       earlier=json.loads(earlier.read_text()) if earlier.is_file() else None)
            elif study == "first_stage":
                result = first_stage(ctx)
            else:
                result = downstream(ctx) if study == "downstream" else STUDIES[study](ctx)
            with atomic_write(out / f"{study}.json", "w") as fh:
                json.dump(result, fh, indent=1)
            elapsed = time.perf_counter() - t0
            # re-read: another run may share this out folder (studies split over processes)
            timing = {**(json.loads(timing_path.read_text()) if timing_path.is_file() else {}), study: elapsed}
            with atomic_write(timing_path, "w") as fh:
                json.dump(timing, fh, indent=1)
            print(f"[studies] {study}: {timing[study]:.0f} s", flush=True)
    header = [
        f"Written by `python -m training.studies` from `{out.name}/` (re-run it to refresh; do not edit by hand).",
        "",
        "The model is the bundled demo model (`training/recipes/demo/REPORT.md`), trained on CPU on three",
        "subjects; evaluation is on the held-out Colin27 volume (as is, and with one synthetic tumour).",
        f"DDIM {args.steps} steps, eta 1, unless a row names another solver; seeds {args.seeds} (mean ± standard "
        "deviation over seeds and cases). GEM-3D rows sample with the model's slice-noise prior (neighbouring",
        "slices correlated rho = the network's trained prior, 0.9 for one trained with independent noise, and",
        "0.995 in the coarse band of 2x2 latent block means; `sampling/slice_prior.py`) unless a row says",
        "rho = 0; the baseline and official_compat rows with independent noise.",
        "Stripe index: the slice-axis/in-plane ratio of neighbouring-voxel differences, generated over real",
        "on 64 x 64 slices (`metrics.consistency.stripe_index`; 1 = as real, > 1 slice-to-slice stripes or",
        "in-plane blur: the two parts, across slices and in plane, say which).",
        "MS-SSIM/PSNR: generated vs real on the real volume's [0.5, 99.5] percentile window mapped to [0, 1].",
        "Consistency ratio: mean |slice z+1 - slice z| of the generated volume over that of the real one",
        "(1 = as smooth as real, > 1 flicker, < 1 over-smooth). Seam ratio: the adjacent-slice difference at",
        "window boundaries over elsewhere (the real volume's value at the same indices is the anatomy's own).",
        "These are small-sample measurements of a CPU-trained demonstration model: they show orderings,",
        "not the paper's absolute numbers.",
        "",
        "Wall time per study (s, shared 2-core CPU): "
        + ", ".join(f"{k} {v:.0f}" for k, v in timing.items()),
    ]
    goals = coherence_goals(out)
    print(f"[studies] report: {write_report(out, header, findings(out), goals=goals_markdown(goals))}")
    print(f"[studies] results: {write_results(out, goals)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
