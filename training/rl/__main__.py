"""``python -m training rl --config FILE [--set key=value ...]`` or ``python -m training rl --recipe demo --out DIR``.

Also ``python -m training.rl ...`` with the same options (under ``torchrun`` for data-parallel runs).
``--recipe demo`` fine-tunes the bundled demo model on the demo recipe's cases (CPU, <= 30 minutes)
using ``training/configs/rl_demo.yaml``; ``--set`` overrides apply on top of it.
"""

from __future__ import annotations

import argparse
import sys

RECIPES = ("demo",)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training rl", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="RL YAML config (see training/configs/rl_demo.yaml)")
    src.add_argument("--recipe", choices=RECIPES, help="a ready-made run")
    p.add_argument("--out", help="output folder (required with --recipe; overrides the config's out)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config entry, e.g. --set ppo.epochs=4 (YAML value)")
    args = p.parse_args(argv)
    from .config import load_rl_config

    try:
        if args.recipe:
            if not args.out:
                p.error("--recipe needs --out DIR")
            from .demo import prepare_demo

            cfg = prepare_demo(args.out, overrides=args.set)
        else:
            from pathlib import Path

            sets = list(args.set) + ([f"out={Path(args.out).resolve()}"] if args.out else [])
            cfg = load_rl_config(args.config, overrides=sets)
    except (ValueError, OSError) as exc:
        print(f"python -m training rl: {exc}", file=sys.stderr)
        return 2
    from .run import run_rl

    try:
        run_rl(cfg, log=lambda s: print(s, flush=True))
    except (ValueError, OSError) as exc:
        print(f"python -m training rl: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
