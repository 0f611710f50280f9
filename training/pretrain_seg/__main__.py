"""``python -m training pretrain-seg --config FILE [--set key=value ...]`` (also under torchrun)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training pretrain-seg", description=__doc__)
    p.add_argument("--config", required=True, help="YAML config (see training/configs/pretrain_seg_demo.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config entry, e.g. --set train.steps=100 (YAML value)")
    args = p.parse_args(argv)
    from ..run import run_task
    from .config import load_config
    from .task import PretrainSegTask

    try:
        cfg = load_config(args.config, overrides=args.set)
    except (ValueError, OSError) as exc:
        print(f"python -m training pretrain-seg: {exc}", file=sys.stderr)
        return 2
    run_task(cfg, PretrainSegTask)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
