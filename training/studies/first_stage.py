"""Issue 17: the KL autoencoder vs a VQ-GAN of the same size, each under a whole GEM-3D chain, on held-out Colin27.

The KL chain is the run's own (the bundled demo model); the VQ chain is the demo recipe run again with
``--first-stage vq``: the same encoder and decoder around an EMA codebook (256 codes, commitment loss), the same
data, seed and step counts in every stage. Each chain is scored on

- reconstruction: the held-out volumes encoded and decoded slice by slice (the sampler's ``LatentCodec``);
- generation: GEM-3D with the true middle informed slice, the studies' sampler (MS-SSIM to the truth, the stripe
  index and its two parts) and FID-A/C/S of the generated held-out volumes against the real ones (the offline
  extractor, per seed);
- downstream: a segmenter trained on the real training cases plus one GEM-3D copy of each from that chain
  (``downstream.py``'s set-up), scored on the real held-out tumour case.

    python -m training.recipes.demo --out runs/demo-vq --first-stage vq --stages vae slice volume-stage1 \\
        volume-stage2 --skip-eval
    python -m training.studies --run runs/demo --out runs/studies --only first_stage --vq-run runs/demo-vq
"""

from __future__ import annotations

from pathlib import Path

from napari_gem3d.metrics.features import fallback_extractor
from napari_gem3d.metrics.fid import ViewFeatures, fid_views

from .context import StudyContext, summarise
from .downstream import score, train_segmenter, training_pairs
from .first_stage_kl_vs_vq import reconstruction_scores

CHAINS = {"KL autoencoder (the run's chain)": "final", "VQ-GAN, same size and schedule": "vq"}
EXPECTED = ("(Not in GEM-3D.) Med-LSDM runs its diffusion in a VQ-GAN latent: at equal size a VQ first stage "
            "should serve generation and a downstream segmenter at least as well as the KL autoencoder.")


def first_stage(ctx: StudyContext, copies: int = 1) -> dict:
    extractor = fallback_extractor()
    real = ViewFeatures(extractor)
    for name in ctx.heldout:
        real.add(ctx.volume(name, ctx.cases[name].image))
    rows = {}
    for label, model in CHAINS.items():
        bundle = ctx.bundle(model)
        recon = reconstruction_scores(bundle, [ctx.cases[n] for n in ctx.heldout]).values()
        row = {"recon_psnr_db": summarise([r["psnr_db"] for r in recon]),
               "recon_ms_ssim": summarise([r["ms_ssim"] for r in recon])}
        measured, fids = [], {}
        for seed in ctx.seeds:
            generated = ViewFeatures(extractor)
            for case in ctx.heldout:
                sample = ctx.sample(case, seed=seed, informed="true", model=model)
                measured.append(ctx.measure(case, sample))
                generated.add(ctx.volume(case, sample.volume))
            for view, value in fid_views(real, generated).items():
                fids.setdefault(view, []).append(value)
        for metric in ("ms_ssim", "stripe_index", "slice_axis_ratio", "in_plane_ratio", "seam_ratio"):
            row[metric] = summarise([m[metric] for m in measured])
        row |= {view: summarise(values) for view, values in fids.items()}
        pairs = training_pairs(ctx, copies, model=model)
        scores = [score(ctx, train_segmenter(pairs, seed)) for seed in ctx.seeds]
        row |= {metric: summarise([s[metric] for s in scores]) for metric in scores[0]}
        row["parameters_first_stage"] = summarise([float(sum(p.numel() for p in bundle.vae.parameters()))])
        rows[label] = row
    return {"rows": rows, "cases": list(ctx.heldout), "seeds": list(ctx.seeds), "downstream_copies": copies,
            "extractor": extractor.name, "bundles": {label: _shown(ctx.bundle_path(m)) for label, m in CHAINS.items()},
            "expected": EXPECTED}



def _shown(path: Path) -> str:
    """A bundle path for the report: relative to the working folder where it lies below it (no home folders)."""
    path = path.resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else path.name
