"""The demo RL recipe: fine-tune the bundled demo model on the demo recipe's cases, on a CPU.

``python -m training rl --recipe demo --out DIR`` builds (or reuses) the demo recipe's case pairs under
``DIR/raw`` (``training.recipes.demo``: the same subjects, synthetic tumours and held-out Colin27),
takes the data section the demo model was trained with, fills ``training/configs/rl_demo.yaml`` with
it and writes the resolved config to ``DIR/config.yaml`` before running it.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .config import RLConfig, load_rl_config

TEMPLATE = Path(__file__).resolve().parents[1] / "configs" / "rl_demo.yaml"


def prepare_demo(out: str | Path, overrides: list[str] = ()) -> RLConfig:
    from ..recipes.demo.__main__ import base_config
    from ..recipes.demo.build import build_cases

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    raw = build_cases(out / "raw")
    cfg = yaml.safe_load(TEMPLATE.read_text())
    cfg["out"] = str(out)
    cfg["data"] = base_config(out, raw)["data"]
    path = out / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return load_rl_config(path, overrides=overrides)
