"""Options and helpers shared by several sub-commands."""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..sampling.request import DEFAULT_QUALITY, QUALITY_PRESETS, SOLVERS


def add_sampling_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--model", type=Path, default=None, help="model bundle folder (default: the bundled demo model)")
    g.add_argument("--quality", default=None, choices=list(QUALITY_PRESETS),
                   help=f"the sampler: fast = DPM-Solver++(2M), {QUALITY_PRESETS['fast'][1]} steps (the default: on "
                        "held-out brains as good as standard in a third of the time, with lower window seams); "
                        "standard = deterministic DDIM "
                        "(eta 0), 25 steps; official = DDIM, 50 steps, eta 1, the paper's (the default with "
                        "--official-compat). --solver, --steps and --eta override it")
    g.add_argument("--steps", type=_positive_int, default=None, help="denoising steps (default: the quality's)")
    g.add_argument("--eta", type=float, default=None,
                   help="DDIM eta: 0 deterministic, 1 the official sampler's noise (default: the quality's, 0 for "
                        "standard, 1 for official; the dpmpp2m solvers ignore it)")
    g.add_argument("--solver", default=None, choices=list(SOLVERS),
                   help="ddim (the official sampler), dpmpp2m (DPM-Solver++(2M), deterministic) or dpmpp2m_sde "
                        "(its stochastic form: fresh correlated noise at every step, as DDIM at eta 1; "
                        "docs/benchmarks.md); default: the quality's. Given alone, the steps and eta are those of "
                        "the first quality with that solver (ddim: standard's 25 steps, eta 0)")
    g.add_argument("--seed", type=int, default=0, help="noise seed, a whole number from 0 to 2**64-1 (default 0)")
    g.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps")
    g.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="fp32 (default); bf16 or fp16 on a GPU only (refused on the CPU)")
    g.add_argument("--mode", default="gem3d", choices=["gem3d", "baseline"])
    g.add_argument("--no-inpaint", action="store_true", help="do not paste the overlap frames (ablation)")
    g.add_argument("--official-compat", action="store_true", help="reproduce the official sampler, bugs included")
    g.add_argument("--position", type=float, default=0.5, help="relative start position p in [0, 1]")
    g.add_argument("--paste-informed", action="store_true",
                   help="put the scan's own start slice into the result as a known frame (the default before "
                        "2026-12-07; not with --official-compat). Default: that slice only sets the appearance "
                        "and every slice is generated, as the official sampler does, which gave fewer "
                        "slice-to-slice stripes on held-out brains (docs/evidence.md)")
    g.add_argument("--lesion-guidance", type=_lesion_guidance, default=1.0, metavar="W",
                   help="lesion guidance: each lesion label's effect on the network's output W times (1 to 10; "
                        "default 1: as the network draws it), measured against the mask with that label taken "
                        "out; one more network pass per lesion label in each window that holds it. The demo "
                        "model draws lesions faint: 3 brought held-out tumours near their real contrast "
                        "(docs/make-mask.md#lesion-guidance)")
    g.add_argument("--slice-noise-correlation", default="auto", type=_correlation, metavar="RHO",
                   help="correlation of the noise between neighbouring slices, 0 <= RHO < 1 (default auto: in GEM-3D "
                        "mode the noise prior the model was trained with, 0.9 for a model trained with "
                        "independent noise; 0 for the baseline and --official-compat). Lowers slice-to-slice "
                        "stripes (docs/evidence.md); 0 reproduces the paper's independent noise")
    g.add_argument("--slice-noise-coarse-correlation", default="auto", type=_correlation, metavar="RHO",
                   help="correlation between neighbouring slices of the noise's coarse band (the mean of each 2x2 "
                        "latent block; default auto: 0.995, or the fine band's if higher; 0 with independent "
                        "noise). Equal to --slice-noise-correlation: one band, as before 2026-12-07")
    g.add_argument("--threads", default="auto", type=_threads,
                   help="CPU threads: auto (default: the cores idle when the run starts, or one worker per core "
                        "when at most one is idle; GEM3D_THREADS=N and GEM3D_WORKERS=N override) or a count")
    g.add_argument("--force", action="store_true",
                   help="generate even when the domain check finds the inputs outside the model's domain "
                        "(the findings are recorded in the provenance and the output's description)")
    g.add_argument("--decode-chunk", type=_positive_int, default=None, metavar="N",
                   help="slices per VAE call (default: automatic, 2^20 pixels: 4 slices of 512x512); "
                        "lower it if the GPU runs out of memory")


def add_output_options(p: argparse.ArgumentParser, dtype: bool = True) -> None:
    """``--dtype`` (how generated volumes are stored) and ``--record-paths`` (provenance privacy)."""
    from ..outputs import OUTPUT_DTYPES

    g = p.add_argument_group("output")
    if dtype:
        g.add_argument("--dtype", default="auto", choices=OUTPUT_DTYPES,
                       help="stored type of generated volumes; auto (default): the source image's integer type "
                            "(rounded and clipped, recorded in the provenance), else float32")
    g.add_argument("--record-paths", action="store_true",
                   help="store the inputs' absolute paths in the provenance (default: file names and sha256 "
                        "only, so folder names do not leak)")


def _correlation(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected auto or a number in [0, 1), got {text!r}")
    return value


def _lesion_guidance(text: str) -> float:
    from ..sampling.request import MAX_LESION_GUIDANCE

    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 1.0 <= value <= MAX_LESION_GUIDANCE:
        raise argparse.ArgumentTypeError(f"expected a number from 1 (no guidance) to {MAX_LESION_GUIDANCE:g}, "
                                         f"got {text!r}")
    return value


def slice_noise_correlation(value: float | str, mode: str, official_compat: bool) -> float | None:
    """The correlation to ask for: ``auto`` is the model's in GEM-3D mode (None, resolved by the sampler from
    the bundle: the prior its network was trained with, else 0.9) and 0 where it does not apply."""
    if value != "auto":
        return float(value)
    return None if mode == "gem3d" and not official_compat else 0.0


def _threads(text: str) -> int | str:
    return "auto" if text == "auto" else _positive_int(text)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def sampler_settings(args: argparse.Namespace) -> tuple[str, int, float]:
    """``--solver``, ``--steps`` and ``--eta`` where given, else the ``--quality`` preset's: ``fast`` by default,
    ``official`` with ``--official-compat`` (the official sampler is DDIM), and with ``--solver`` alone the first
    preset of that solver (``--solver ddim`` is standard's 25 steps, not DDIM at fast's few)."""
    quality = getattr(args, "quality", None)
    given_solver = getattr(args, "solver", None)
    if quality is None and getattr(args, "official_compat", False):
        quality = "official"
    elif quality is None:
        quality = next((name for name, preset in QUALITY_PRESETS.items() if preset[0] == given_solver),
                       DEFAULT_QUALITY)
    solver, steps, eta = QUALITY_PRESETS[quality]
    if getattr(args, "official_compat", False) and given_solver is None:
        solver = "ddim"
    given_eta = getattr(args, "eta", None)
    return (given_solver or solver, getattr(args, "steps", None) or steps,
            eta if given_eta is None else float(given_eta))


def sampling_options(args: argparse.Namespace):
    """The options of ``args``, checked now: values, seed range, the device and the precision on it."""
    from ..sampling import SamplingOptions
    from ..sampling.device import effective_precision, resolve_device

    rho = slice_noise_correlation(getattr(args, "slice_noise_correlation", "auto"), args.mode, args.official_compat)
    solver, steps, eta = sampler_settings(args)
    options = SamplingOptions(
        steps=steps, eta=eta, seed=args.seed, device=args.device, precision=args.precision,
        mode=args.mode, inpaint_overlap=not args.no_inpaint, official_compat=args.official_compat,
        decode_chunk=args.decode_chunk, solver=solver,
        cpu_threads=getattr(args, "threads", "auto"),
        slice_noise_correlation=rho,
        slice_noise_coarse_correlation=coarse_slice_noise_correlation(
            getattr(args, "slice_noise_coarse_correlation", "auto"), rho),
        paste_informed=bool(getattr(args, "paste_informed", False)),
        lesion_guidance=float(getattr(args, "lesion_guidance", 1.0)),
    )
    effective_precision(options.precision, resolve_device(options.device))
    if getattr(args, "position", None) is not None and not 0.0 <= args.position <= 1.0:
        raise ValueError(f"--position must be a relative position from 0 to 1, got {args.position}")
    return options


def coarse_slice_noise_correlation(value: float | str, rho: float | None) -> float | None:
    """The coarse band's correlation to ask for: ``auto`` is the model's default with the model's rho (None),
    else :func:`coarse_correlation_for` the asked rho; a number is taken as given."""
    from ..sampling.request import coarse_correlation_for

    if value != "auto":
        return float(value)
    return None if rho is None else coarse_correlation_for(rho)


def _private(token: str, record_paths: bool) -> str:
    """A command-line word with any folder part dropped (``--out=/a/b.nii.gz`` -> ``--out=b.nii.gz``)."""
    if record_paths:
        return token
    head, sep, value = token.partition("=") if token.startswith("--") else ("", "", token)
    if os.sep in value or (os.altsep and os.altsep in value):
        value = Path(value).name
    return f"{head}{sep}{value}"


def run_provenance(args: argparse.Namespace, inputs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Who made an output and from what: package version, the command line and each input's sha256.

    Inputs are recorded by file name and sha256; absolute paths only with ``--record-paths``.
    """
    from .. import __version__
    from ..files import input_spec

    record = bool(getattr(args, "record_paths", False))
    argv = getattr(args, "argv", None) or []
    files = {}
    for role, path in inputs:
        if path is None:
            continue
        key = base = role.lstrip("-").replace("-", "_")
        n = 2
        while key in files:  # several files for one option (counterfactual --informed-from A B)
            key, n = f"{base}_{n}", n + 1
        files[key] = {**input_spec(Path(path)), **({"path": str(Path(path).resolve())} if record else {})}
    return {
        "package_version": __version__,
        "command": shlex.join(["gem3d", *(_private(t, record) for t in argv)]),
        "inputs": files,
    }


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


def domain_gate(args: argparse.Namespace, bundle, mask, image=None, informed=None, what: str = "the inputs"):
    """The domain check of :mod:`napari_gem3d.domain`: refuses out-of-domain inputs unless ``--force``."""
    from ..domain import require_domain

    return require_domain(bundle.config, mask, image, informed=informed, force=bool(getattr(args, "force", False)),
                          what=what)
