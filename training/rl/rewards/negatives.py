"""Self-supervised negatives for the 3-D critic: real chunks made inconsistent between slices.

Every corruption keeps the *set* of slice appearances close to real (so a slice-wise critic cannot
tell), and breaks what only a volumetric view sees:

- ``shuffle``: a random block of >= 3 consecutive slices is permuted;
- ``shift``: the slices after a random boundary are translated in-plane by 1-4 pixels (a window seam);
- ``jump``: the slices after a random boundary get an intensity jump (gain 0.8-1.25 or offset +-0.1-0.3);
- ``swap``: two non-adjacent slices change places.
"""

from __future__ import annotations

import numpy as np

KINDS = ("shuffle", "shift", "jump", "swap")


def _boundary(depth: int, rng: np.random.Generator) -> int:
    return int(rng.integers(1, depth))


def corrupt(chunk: np.ndarray, rng: np.random.Generator, kind: str | None = None) -> tuple[np.ndarray, str]:
    """A corrupted copy of ``chunk`` (D, h, w) in [-1, 1] and the corruption's name."""
    x = np.array(chunk, dtype=np.float32, copy=True)
    d = x.shape[0]
    if d < 3:
        raise ValueError(f"3-D critic chunks need at least 3 slices, got {d}")
    kind = kind or KINDS[int(rng.integers(len(KINDS)))]
    if kind == "shuffle":
        n = int(rng.integers(3, d + 1))
        z0 = int(rng.integers(0, d - n + 1))
        perm = rng.permutation(n)
        while np.all(perm == np.arange(n)):
            perm = rng.permutation(n)
        x[z0 : z0 + n] = x[z0 : z0 + n][perm]
    elif kind == "shift":
        b = _boundary(d, rng)
        dy, dx = (int(v) * int(rng.choice([-1, 1])) for v in rng.integers(1, 5, size=2))
        x[b:] = np.roll(x[b:], (dy, dx), axis=(1, 2))
    elif kind == "jump":
        b = _boundary(d, rng)
        if rng.random() < 0.5:
            gain = float(rng.choice([rng.uniform(0.8, 0.9), rng.uniform(1.1, 1.25)]))
            x[b:] = (x[b:] + 1.0) * gain - 1.0
        else:
            x[b:] = x[b:] + float(rng.choice([-1, 1]) * rng.uniform(0.1, 0.3))
        x = np.clip(x, -1.0, 1.0)
    elif kind == "swap":
        i = int(rng.integers(0, d - 2))
        j = int(rng.integers(i + 2, d))
        x[[i, j]] = x[[j, i]]
    else:
        raise ValueError(f"unknown corruption {kind!r}; known: {KINDS}")
    return x, kind
