"""``gem3d``: the headless twin of the napari widgets.

Each sub-command lives in ``napari_gem3d.commands.<name>`` with ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .domain import DomainError

COMMANDS = {
    "info": ("info", "the model card of a bundle: modality, labels, geometry, training data, limits"),
    "check": ("check", "is an image + mask inside the model's domain? (exit 0 in domain, 3 out)"),
    "make-mask": ("make_mask", "a model-ready label mask (brain, CSF/GM/WM, lesions) from your own brain MR scan"),
    "sample": ("sample", "generate a volume from a mask (and an image or informed slice)"),
    "regenerate": ("regenerate", "after a mask edit, regenerate only the slices whose mask changed"),
    "demo": ("demo", "run the bundled demo case through the bundled model"),
    "convert-official": ("convert", "convert official GEM-3D checkpoints into a model bundle"),
    "evaluate": ("evaluate", "metrics of generated vs real volumes (MS-SSIM, PSNR, FID-A/C/S, consistency)"),
    "enhance": ("enhance", "N-fold resampling of an image/mask data set (torchrun-sharded, resumable)"),
    "harmonize": ("harmonize", "regenerate a data set with one shared informed slice (sharded, resumable)"),
    "counterfactual": ("counterfactual", "one mask x K informed slices -> K volumes + difference maps"),
}


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line that names the problem and where the help is (exit 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gem3d", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(f"napari_gem3d.commands.{module}").add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        text = f"missing entry {exc.args[0]!r}"
    return text or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Run one sub-command; a refused input is one line on stderr and exit 2 (130 when interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error (2), already printed
        return int(exit_.code or 0)
    args.argv = argv  # recorded in the provenance of what the command writes
    module = importlib.import_module(f"napari_gem3d.commands.{args._module}")
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print(f"gem3d {args.command}: interrupted", file=sys.stderr)
        return 130
    except MemoryError as exc:
        detail = f" ({_one_line(exc)})" if str(exc).strip() else ""
        print(f"gem3d {args.command}: error: out of memory{detail}; use smaller inputs, a lower --decode-chunk, "
              "or a machine with more memory", file=sys.stderr)
        return 2
    except DomainError as exc:  # every finding on its own line
        print(f"gem3d {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, OSError, RuntimeError, KeyError) as exc:
        print(f"gem3d {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
