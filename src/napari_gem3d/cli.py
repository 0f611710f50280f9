"""``gem3d``: the headless twin of the napari widgets.

Each sub-command lives in ``napari_gem3d.commands.<name>`` with ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "sample": ("sample", "generate a volume from a mask (and an image or informed slice)"),
    "demo": ("demo", "run the bundled demo case through the bundled model"),
    "convert-official": ("convert", "convert official GEM-3D checkpoints into a model bundle"),
    "evaluate": ("evaluate", "metrics of generated vs real volumes (MS-SSIM, PSNR, FID-A/C/S, consistency)"),
    "enhance": ("enhance", "N-fold resampling of an image/mask data set (torchrun-sharded, resumable)"),
    "harmonize": ("harmonize", "regenerate a data set with one shared informed slice (sharded, resumable)"),
    "counterfactual": ("counterfactual", "one mask x K informed slices -> K volumes + difference maps"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gem3d", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(f"napari_gem3d.commands.{module}").add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module = importlib.import_module(f"napari_gem3d.commands.{args._module}")
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print(f"gem3d {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError, KeyError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"gem3d {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
