"""Conditions for RL from the training package's cached cases (model grid, [-1, 1] images).

A condition is a sub-volume of a case: its mask, its true slice at the start position as the informed
slice (``is_true_slice``: pasted as a known frame, as GEM-3D's "true informed slice" evaluation), and
its true image (for evaluation metrics only).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_gem3d.sampling import InformedSlice

from .rollout import Condition


def case_condition(case, z0: int, length: int, start: int) -> Condition:
    """Slices ``[z0, z0 + length)`` of ``case`` with the true slice ``z0 + start`` as the informed slice."""
    image = np.asarray(case.image[z0 : z0 + length], np.float32)
    mask = np.asarray(case.mask[z0 : z0 + length]).astype(np.int64)
    informed = InformedSlice(image=image[start].copy(), is_true_slice=True,
                             source={"kind": "picked", "volume": case.name, "index": int(z0 + start)})
    return Condition(f"{case.name}[{z0}:{z0 + length}]", mask, int(start), informed, image)


def _length(case, slices: int) -> int:
    return min(slices, case.num_slices) if slices > 0 else case.num_slices


def random_conditions(cases: Sequence, n: int, slices: int, rng: np.random.Generator, start: str = "middle"
                      ) -> list[Condition]:
    """``n`` random sub-volumes (a random case, a random offset; start in the middle or at random)."""
    if not cases:
        raise ValueError("no training cases to draw RL conditions from")
    out = []
    for _ in range(n):
        case = cases[int(rng.integers(len(cases)))]
        length = _length(case, slices)
        z0 = int(rng.integers(0, case.num_slices - length + 1))
        s = length // 2 if start == "middle" else int(rng.integers(length))
        out.append(case_condition(case, z0, length, s))
    return out


def centre_conditions(cases: Sequence, slices: int) -> list[Condition]:
    """One fixed condition per case: the centred sub-volume, informed slice in its middle (evaluation)."""
    out = []
    for case in cases:
        length = _length(case, slices)
        z0 = (case.num_slices - length) // 2
        out.append(case_condition(case, z0, length, length // 2))
    return out
