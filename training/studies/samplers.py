"""The fast samplers the studies run beside DDIM, and the names their rows carry (tables and report)."""

from __future__ import annotations

from napari_gem3d.sampling.request import QUALITY_PRESETS

#: The fast deterministic solver of the plugin's default ("Fast" in the sampling dock, ``--quality fast``)
FAST = dict(zip(("solver", "steps"), QUALITY_PRESETS["fast"][:2], strict=True))
FAST_NAME = f"DPM-Solver++ {FAST['steps']} steps"
#: The stochastic (SDE) form, with the slice-indexed step noise, at 8 steps (its best held-out stripe index)
FAST_SDE = {"solver": "dpmpp2m_sde", "steps": 8}
FAST_SDE_NAME = f"DPM-Solver++ 2M SDE {FAST_SDE['steps']} steps"
#: The solvers whose rows the coherence goals and claims compare, by row-name suffix
GOAL_SOLVERS = ("DDIM eta 1", FAST_NAME, FAST_SDE_NAME)
