"""Axial slices of a held-out brain: the real one, its VAE round trip, and each model's generation.

    python docs/make_heldout_slices.py --run runs/demo --out docs/images/heldout_colin27_slices.png \\
        --model "before=OLD_BUNDLE" --model "now=src/napari_gem3d/data/demo_model" [--case colin27]

``--run`` is a demo recipe run folder (its ``configs/baseline.yaml`` names the cases, Colin27 held out).
Every model gets the true middle slice as its informed slice, the fast sampler when the figure was made
(DPM-Solver++ 8 steps; the Fast preset has 6 since 2026-12-07), the model's slice-noise prior and the same seed;
the shown slices are away from that start slice, and the last column is a sagittal cut. The VAE row is the first
model's autoencoder: no generation can be sharper.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(REPO))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from training.config import load_config
    from training.data.preprocess import prepare_cases
    from training.stages.common import sample_mask

    from napari_gem3d.io import atomic_path
    from napari_gem3d.models import load_bundle
    from napari_gem3d.sampling import InformedSlice

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--model", action="append", required=True, help="NAME=BUNDLE (repeat)")
    p.add_argument("--case", default="colin27")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    models = [m.split("=", 1) for m in args.model]
    first = load_bundle(models[0][1])
    cases = prepare_cases(load_config(args.run / "configs" / "baseline.yaml"), first.config.labels)
    case = next(c for c in cases if c.name == args.case)
    img, mask = np.asarray(case.image, np.float32), np.asarray(case.mask)
    start = mask.shape[0] // 2
    with torch.no_grad():
        vae = first.codec.decode(first.codec.encode(torch.from_numpy(img[:, None])))[:, 0].numpy()
    rows = [("real", img), ("VAE round trip", vae)]
    for name, path in models:
        informed = InformedSlice(image=img[start].copy(), source={"kind": "picked"}, is_true_slice=True)
        result = sample_mask(load_bundle(path), mask, start=start, informed=informed, seed=args.seed, mode="gem3d",
                             slice_noise_correlation=None, solver="dpmpp2m", steps=8)
        rows.append((name, result.volume))
    picks = [start - 12, start - 4, start + 6, start + 14]
    fig, axes = plt.subplots(len(rows), len(picks) + 1, figsize=(2.1 * (len(picks) + 1), 2.2 * len(rows)),
                             squeeze=False)
    for r, (name, vol) in enumerate(rows):
        for j, k in enumerate(picks):
            axes[r][j].imshow(vol[k], cmap="gray", vmin=-1, vmax=1)
            axes[r][j].set_title(f"{name}, slice {k}", fontsize=7)
        axes[r][-1].imshow(vol[:, :, vol.shape[2] // 2], cmap="gray", vmin=-1, vmax=1, origin="lower", aspect="auto")
        axes[r][-1].set_title(f"{name}, sagittal", fontsize=7)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"held-out {args.case}: informed slice {start} (not shown), seed {args.seed}, "
                 "DPM-Solver++ 8 steps", fontsize=9)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
