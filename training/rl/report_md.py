"""Before/after tables of one or more RL ``report.json`` files, as Markdown.

    python -m training.rl.report_md runs/rl-demo/report.json [runs/other/report.json ...] > REPORT.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

FIDELITY = (("ms_ssim_to_truth", "higher"), ("FID-A", "lower"), ("FID-C", "lower"), ("FID-S", "lower"))


def run_markdown(path: Path) -> list[str]:
    report = json.loads(Path(path).read_text())
    before, after, cmp = report["before"], report["after"], report["comparison"]
    weights = report["config"]["reward"]["weights"]
    training = report["training"]
    lines = [
        f"### `{path}`",
        "",
        f"Reward weights {weights}; {training['epochs_run']} epochs; held-out conditions "
        f"{report['heldout_conditions']} x {report['samples_per_condition']} seeds; wall time "
        f"{report['timing_s'].get('total_s', float('nan')):.0f} s.",
        "",
        "| held-out measure | before | after | change | change in base std | trained on it |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, value in before["rewards"].items():
        std = before["rewards_std"].get(name, float("nan"))
        delta = after["rewards"][name] - value
        z = delta / std if std else float("nan")
        lines.append(f"| reward `{name}` (± {std:.3g}) | {value:.4g} | {after['rewards'][name]:.4g} | {delta:+.4g} | "
                     f"{z:+.2f} | {'yes' if weights.get(name, 0) else 'no (weight 0)'} |")
    lines.append(f"| held-out 2-D critic (early stopping) | {before['heldout2d']:.4g} | {after['heldout2d']:.4g} | "
                 f"{after['heldout2d'] - before['heldout2d']:+.4g} | | no |")
    for name, better in FIDELITY:
        b, a = before["fidelity"].get(name), after["fidelity"].get(name)
        if b is None or a is None:
            continue
        lines.append(f"| {name} ({better} is better) | {b:.4g} | {a:.4g} | {a - b:+.4g} | | no |")
    lines += [
        "",
        f"Combined reward change {cmp['combined_reward_delta_z']:+.2f} (weighted, in base-model standard "
        f"deviations); reward raised: **{cmp['reward_raised']}**; held-out fidelity worse on: "
        f"**{', '.join(cmp['fidelity_worse']) or 'nothing'}**. "
        f"FID extractor: {before['fidelity'].get('fid_extractor')}.",
        "",
    ]
    curve = training.get("heldout_reward_curve") or []
    if curve:
        lines += [
            "Held-out curve (every evaluation during training; same conditions and seeds as the table, no FID):",
            "",
            "| epoch | rollouts trained on | combined reward change (base std) | MS-SSIM change "
            "| held-out 2-D critic |",
            "|---:|---:|---:|---:|---:|",
            *(f"| {p['epoch']} | {p['rollouts']} | {p['combined_reward_delta_z']:+.2f} | {p['ms_ssim_delta']:+.4f} | "
              f"{p['heldout2d']:.4g} |" for p in curve),
            "",
        ]
    return lines


def main(argv: list[str] | None = None) -> int:
    paths = [Path(p) for p in (argv if argv is not None else sys.argv[1:])]
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    for p in paths:
        print("\n".join(run_markdown(p)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
