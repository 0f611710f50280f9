"""``python -m training <stage> --config FILE [--set key=value ...]`` (also under torchrun)."""

from __future__ import annotations

import argparse
import sys

from . import STAGES


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["rl"]:  # the RL package (training/rl/) parses its own options
        try:
            from .rl.__main__ import main as rl_main
        except ImportError:
            print("the rl stage is not installed (training/rl/)", file=sys.stderr)
            return 2
        return rl_main(argv[1:])
    if argv[:1] == ["pretrain-seg"]:  # diffusion pretraining of the downstream segmenter (training/pretrain_seg/)
        from .pretrain_seg.__main__ import main as pretrain_main

        return pretrain_main(argv[1:])
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    p.add_argument("stage", choices=[*STAGES, "rl", "pretrain-seg"],
                   help="training stage (rl, pretrain-seg: see python -m training rl -h / pretrain-seg -h)")
    p.add_argument("--config", required=True, help="YAML config file (see training/configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config entry, e.g. --set train.steps=100 (YAML value)")
    args = p.parse_args(argv)
    from .config import load_config
    from .run import run_stage

    try:
        cfg = load_config(args.config, stage=args.stage, overrides=args.set)
    except (ValueError, OSError) as exc:
        print(f"python -m training: {exc}", file=sys.stderr)
        return 2
    run_stage(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
