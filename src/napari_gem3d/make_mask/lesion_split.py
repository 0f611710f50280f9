"""The user's lesions split into the card's lesion subregions, as the demo model's training tumours were made."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..masks import fill_holes
from .roles import LESION_ORDER

# the demo training tumours (training/recipes/demo/tumours.py), as fractions of the tissue contrasts
_CORE_FRAC = 0.125  # core ~ CSF + U(0, 0.25) (GM - CSF)
_OEDEMA_FRAC = 0.45  # oedema target ~ GM - U(0.4, 0.7) (GM - CSF) = CSF + 0.45 (GM - CSF) ...
_OEDEMA_BLEND = 0.85  # ... painted at 85 % over the GM/WM underneath
_RIM_FRAC = 0.45  # rim ~ WM + U(0.3, 0.6) (WM - CSF)
_ENH_FRAC = 0.15  # clearly enhancing: brighter than WM + 0.15 (WM - CSF), halfway to the weakest training rim
_ENH_THROUGHOUT = 0.9  # a lesion this much rim-like (and clearly enhancing) enhances throughout: all rim
_SHELLS = (0.27, 0.54)  # depth shells: radius fraction of core | rim | oedema (R 1.85 R, core 0.5 R)
_MIN_CLASS_FRACTION = 0.05


def _depth_fraction(comp: np.ndarray, spacing) -> np.ndarray:
    """Relative radius inside a lesion: 0 at its deepest voxel, 1 at its edge."""
    depth = ndimage.distance_transform_edt(np.pad(comp, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    dmax = float(depth[comp].max()) if comp.any() else 0.0
    return 1.0 - depth / max(dmax, 1e-6)


def _shell_roles(comp: np.ndarray, spacing, roles: list[str]) -> np.ndarray:
    """Index into ``roles`` (ordered inside -> outside) by depth shell."""
    rho = _depth_fraction(comp, spacing)
    full = {"core": 0, "rim": 1, "oedema": 2}
    cuts = {"core": _SHELLS[0], "rim": _SHELLS[1], "oedema": np.inf}
    # roles absent from the card give their shell to the next role outwards (or the last one)
    out = np.full(comp.shape, len(roles) - 1, np.int8)
    lower = -np.inf
    for i, role in enumerate(sorted(roles, key=full.get)):
        upper = cuts[role] if i < len(roles) - 1 else np.inf
        out[(rho > lower) & (rho <= upper)] = i
        lower = upper
    return out


def _prototypes(means_by_role: dict[str, float]) -> dict[str, float]:
    csf, gm, wm = means_by_role["csf"], means_by_role["gm"], means_by_role["wm"]
    oedema_target = csf + _OEDEMA_FRAC * (gm - csf)
    return {
        "core": csf + _CORE_FRAC * (gm - csf),
        "oedema": _OEDEMA_BLEND * oedema_target + (1 - _OEDEMA_BLEND) * 0.5 * (gm + wm),
        "rim": wm + _RIM_FRAC * (wm - csf),
    }


def _intensity_roles(v: np.ndarray, comp: np.ndarray, protos: dict[str, float], t_enh: float,
                     present: list[str]) -> tuple[np.ndarray | None, str]:
    """Role index per voxel of one lesion by intensity, or (None, "depth shells") when it does not separate."""
    nvox = max(int(comp.sum()), 1)
    dist = np.stack([np.abs(v - protos[r]) for r in present])
    near = np.argmin(dist, axis=0)
    onehot = np.stack([ndimage.gaussian_filter(((near == j) & comp).astype(np.float32), 0.7)
                       for j in range(len(present))])  # ~1 voxel majority smoothing
    idx = np.argmax(onehot, axis=0).astype(np.int8)
    if "rim" in present and "core" in present and "oedema" in present:  # inside the rim: core, never oedema
        rim = comp & (idx == present.index("rim"))
        idx[fill_holes(rim) & comp & (idx == present.index("oedema"))] = present.index("core")
    fractions = np.array([np.count_nonzero(comp & (idx == j)) for j in range(len(present))]) / nvox
    if "rim" in present and fractions[present.index("rim")] >= _ENH_THROUGHOUT:
        if float(np.median(v[comp])) <= t_enh:  # about as bright as white matter: nothing to separate
            return None, "depth shells"
        # enhancing throughout: all of it is the enhancing label. Its darker part is still brighter than white
        # matter, so it is not the CSF-dark necrosis of the training tumours' core (brain1 with its darker half
        # labelled core came out darker than white matter, all rim brighter: docs/make-mask.md)
        return np.full(comp.shape, present.index("rim"), np.int8), "intensity (enhancing throughout: all rim)"
    if np.count_nonzero(fractions >= _MIN_CLASS_FRACTION) >= 2:
        return idx, "intensity"
    return None, "depth shells"


def split_lesions(lesion: np.ndarray, corrected: np.ndarray, means_by_role: dict[str, float], spacing,
                  roles: dict[str, int], *, intensity_ok: bool = True) -> tuple[np.ndarray, list[dict]]:
    """Card lesion labels for each connected lesion (0 outside the lesions) and a report per lesion."""
    out = np.zeros(lesion.shape, np.int16)
    present = [r for r in LESION_ORDER if r in roles]
    lab, n = ndimage.label(lesion, structure=np.ones((3, 3, 3), bool))
    protos = _prototypes(means_by_role)
    t_enh = means_by_role["wm"] + _ENH_FRAC * (means_by_role["wm"] - means_by_role["csf"])
    objs = ndimage.find_objects(lab)
    reports = []
    sigma = [1.0 / s for s in spacing]  # ~1 mm smoothing against texture noise
    for i, sl in enumerate(objs, start=1):
        pad = [max(2, int(np.ceil(3 / s))) for s in spacing]
        box = tuple(slice(max(0, s.start - p), min(nn, s.stop + p))
                    for s, p, nn in zip(sl, pad, lesion.shape, strict=True))
        comp = lab[box] == i
        nvox = int(comp.sum())
        method = "depth shells"
        idx = None
        if intensity_ok and len(present) > 1:
            v = ndimage.gaussian_filter(corrected[box].astype(np.float32), sigma)
            idx, method = _intensity_roles(v, comp, protos, t_enh, present)
        if idx is None and len(present) > 1:
            idx = _shell_roles(comp, spacing, present)
        elif idx is None:
            idx = np.zeros(comp.shape, np.int8)
        values = np.array([roles[r] for r in present], np.int16)
        region = out[box]
        region[comp] = values[idx[comp]]
        reports.append({
            "lesion": i, "voxels": nvox, "method": method,
            "voxels_by_role": {r: int(np.count_nonzero(comp & (idx == j))) for j, r in enumerate(present)},
        })
    return out, reports
