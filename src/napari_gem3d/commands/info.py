"""gem3d info: the model card of a bundle (what the model knows), its grid and its components."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, default=None, help="model bundle folder (default: the bundled demo model)")


def run(args: argparse.Namespace) -> int:
    from .. import __version__
    from .common import load_model

    bundle = load_model(args.model)
    cfg = bundle.config
    print(f"model: {cfg.name} (hash {bundle.model_hash[:16]}, napari-gem3d {__version__})")
    if cfg.description:
        print(f"description: {cfg.description}")
    print(f"components: vae, {', '.join(sorted(bundle.unets))}; window {cfg.window} slices, overlap {cfg.overlap}")
    if not cfg.card.known:
        print("model card: none (a bundle from before model cards): its domain is unknown and cannot be checked")
    for line in cfg.card.describe(cfg.labels.names, cfg.image_size, cfg.slice_axis):
        print(line)
    from ..sampling.request import model_slice_noise_correlation

    if "volume" in cfg.unets:
        trained = cfg.unets["volume"].noise_correlation
        how = "the noise prior its GEM-3D network was trained with" if trained else (
            "trained with independent noise; correlated sampling noise as a stop-gap")
        print(f"slice-noise correlation by default: {model_slice_noise_correlation(cfg):g} ({how})")
    from ..sampling.threads import ENV, WORKERS_ENV, choose_threads

    choice = choose_threads()
    measured = (f"{choice.idle_cores:g} of {choice.cores} cores idle now" if choice.idle_cores is not None
                else choice.how)
    workers = (f", as {choice.workers} workers side by side (at most one core is idle)" if choice.workers > 1 else "")
    print(f"CPU threads a generation would use now: {choice.threads}{workers} ({measured}; "
          f"{ENV}=N and {WORKERS_ENV}=N override)")
    return 0
