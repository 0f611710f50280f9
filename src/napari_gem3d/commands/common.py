"""Options and helpers shared by several sub-commands."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_sampling_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--model", type=Path, default=None, help="model bundle folder (default: the bundled demo model)")
    g.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    g.add_argument("--eta", type=float, default=1.0, help="DDIM eta (default 1.0, as the official sampler)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps")
    g.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"], help="half precision on GPU only")
    g.add_argument("--mode", default="gem3d", choices=["gem3d", "baseline"])
    g.add_argument("--no-inpaint", action="store_true", help="do not paste the overlap frames (ablation)")
    g.add_argument("--official-compat", action="store_true", help="reproduce the official sampler, bugs included")
    g.add_argument("--position", type=float, default=0.5, help="relative start position p in [0, 1]")
    g.add_argument("--decode-chunk", type=_positive_int, default=None, metavar="N",
                   help="slices per VAE call (default: automatic, 2^20 pixels: 4 slices of 512x512); "
                        "lower it if the GPU runs out of memory")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def sampling_options(args: argparse.Namespace):
    from ..sampling import SamplingOptions

    return SamplingOptions(
        steps=args.steps, eta=args.eta, seed=args.seed, device=args.device, precision=args.precision,
        mode=args.mode, inpaint_overlap=not args.no_inpaint, official_compat=args.official_compat,
        decode_chunk=args.decode_chunk,
    )


def load_model(path: Path | None, device: str = "cpu"):
    """The bundle at ``path`` or the bundled demo model, with a clear message if it is missing."""
    from .. import demo_model_path
    from ..models import load_bundle

    path = path or demo_model_path()
    if not (Path(path) / "config.json").exists() and path == demo_model_path():
        raise FileNotFoundError(
            f"the bundled demo model is missing at {path}; reinstall napari-gem3d or pass --model BUNDLE"
        )
    return load_bundle(path, device="cpu")


def run_with_progress(gen, total_hint: int | None = None, desc: str = "windows"):
    """Drive a sampling generator with a tqdm bar; returns the generator's value."""
    from tqdm import tqdm

    bar = None
    try:
        while True:
            try:
                update = next(gen)
            except StopIteration as stop:
                return stop.value
            if bar is None:
                bar = tqdm(total=update.total, desc=desc, unit="window")
            bar.update(1)
            bar.set_postfix_str(f"slices {update.z0}-{update.z1 - 1} ({update.direction})")
    finally:
        if bar is not None:
            bar.close()
