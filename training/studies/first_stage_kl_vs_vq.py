"""KL vs VQ first stage at equal size on the demo data: held-out reconstruction PSNR and MS-SSIM.

Both autoencoders are the demo recipe's (ch 32, ch_mult 1-2-2, 4 latent channels at f4); they differ only in
the bottleneck (KL: posterior, kl_weight 1e-6; VQ: EMA codebook + commitment loss). Both train the same steps,
batch, learning rate, seed and data (the demo recipe's training cases) and are scored on the held-out Colin27
volumes (with and without a synthetic tumour), encoded and decoded slice by slice through ``LatentCodec``
(the sampler's path), in the model range [-1, 1]:

    python -m training.studies.first_stage_kl_vs_vq --out runs/kl_vs_vq --steps 300

A small, CPU-sized comparison: it says how the two bottlenecks compare after a short equal training, not which
is better when trained to convergence.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from napari_gem3d.metrics.similarity import ms_ssim, psnr
from napari_gem3d.models import load_bundle

from ..config import config_from_dict
from ..engine.dist import DistInfo
from ..recipes.demo.__main__ import FIRST_STAGES as KINDS  # the two bottlenecks
from ..recipes.demo.__main__ import base_config  # held out: VAL_CASES (Colin27)
from ..recipes.demo.build import build_cases
from ..run import run_stage
from ..stages.common import split_cases


def stage_config(out: Path, raw: Path, kind: str, steps: int, batch: int) -> dict:
    cfg = base_config(out / kind, raw)
    cfg.update(stage="vae", out=str(out / kind / "vae"))
    cfg["data"]["cache_dir"] = str(out / "cache")
    cfg["model"]["vae"].update(KINDS[kind])
    cfg["model"].pop("card")
    cfg["train"].update(steps=steps, batch_size=batch, lr=2e-4, ckpt_every=0, log_every=max(1, steps // 10),
                        warmup_steps=min(100, steps // 5))
    cfg["val"]["steps"] = 0
    return cfg


@torch.no_grad()
def reconstruction_scores(bundle, cases) -> dict[str, dict[str, float]]:
    codec = bundle.codec
    scores = {}
    for case in cases:
        image = np.array(case.image, np.float32)
        recon = codec.decode(codec.encode(torch.from_numpy(image)[:, None]))[:, 0].clamp(-1, 1).numpy()
        scores[case.name] = {"psnr_db": psnr(image, recon, data_range=2.0),
                             "ms_ssim": ms_ssim(image, recon, data_range=2.0)[0]}
    return scores


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/kl_vs_vq"))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args(argv)
    raw = build_cases(args.out / "raw")
    results = {}
    for kind in KINDS:
        cfg = config_from_dict(stage_config(args.out, raw, kind, args.steps, args.batch))
        t0 = time.perf_counter()
        last = run_stage(cfg, progress=False)["last"]
        seconds = time.perf_counter() - t0
        bundle = load_bundle(args.out / kind / "vae" / "bundle")
        _, held_out = split_cases(cfg, bundle.config.labels, DistInfo(0, 1, 0, torch.device("cpu")))
        results[kind] = {"parameters": sum(p.numel() for p in bundle.vae.parameters()),
                         "train_seconds": round(seconds, 1), "last_logs": last,
                         "held_out": reconstruction_scores(bundle, held_out)}
        print(kind, json.dumps(results[kind], indent=1), flush=True)
    (args.out / "results.json").write_text(json.dumps({"steps": args.steps, "batch": args.batch, **results}, indent=1))
    return results


if __name__ == "__main__":
    main()
