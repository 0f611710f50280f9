"""Network helpers shared by the invariant tests, and the tolerance for float32 results of different code paths."""

from __future__ import annotations

import torch

#: float32 machine epsilon, 2**-23 (1.19e-7): the relative spacing of float32 numbers
EPS32 = float(torch.finfo(torch.float32).eps)


def randomise(module: torch.nn.Module, seed: int = 0, scale: float = 0.2) -> None:
    """Overwrite every parameter with N(0, scale^2) draws, so zero-initialised layers become non-trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)


def path_tol(reference, depth: int = 1) -> float:
    """Largest |difference| allowed between two float32 computations of ``reference`` along different
    code paths: another BLAS/oneDNN kernel (MKL dispatches differently on an AVX-512 Xeon, an AMD EPYC,
    or under MKL_ENABLE_INSTRUCTIONS), another batch or chunk size, frozen versus trainable weights.

    ``8 * depth * eps32 * max|reference|``: a few float32 roundings per op on either side (8 eps of the
    largest value, ~1e-6 relative for one op), times ``depth`` for results that accumulate the roundings
    of several ops in sequence (a network, a sampling loop); each caller says why its depth is enough.
    Works for tensors and numpy arrays. Exact equality stays where the code promises it (the same call
    twice, weights written and read back, integer results, adding exact zeros to the same path).
    """
    return 8 * depth * EPS32 * float(abs(reference).max())
