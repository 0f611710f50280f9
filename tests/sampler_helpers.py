"""Small builders shared by the sampler tests."""

from __future__ import annotations

import numpy as np
import torch

from napari_gem3d.models import build_bundle
from napari_gem3d.models.presets import small_config
from napari_gem3d.sampling import InformedSlice, SamplingOptions, SamplingRequest
from napari_gem3d.sampling.pipeline import run_to_end
from napari_gem3d.sampling.propagate import generate

SIZE = 32


def tiny_bundle(seed: int = 0, **kw):
    return bundle_from_config(small_config(SIZE, **kw), seed)


def write_cli_case(root):
    """A CLI test's files under ``root``: the tiny model (``model/``), ``image.nii.gz`` and ``mask.nii.gz``
    (the synthetic case); returns (image, mask) Volumes. Callers pin torch to one thread meanwhile."""
    from napari_gem3d.io import write_volume
    from napari_gem3d.models import save_bundle
    from study_helpers import synthetic_case

    save_bundle(tiny_bundle(window=8), root / "model")
    image, mask = synthetic_case()
    write_volume(image, root / "image.nii.gz")
    write_volume(mask, root / "mask.nii.gz")
    return image, mask


def bundle_from_config(config, seed: int = 0):
    """Fresh networks for ``config`` in eval mode, zero-initialised UNet layers given small random weights."""
    torch.manual_seed(seed)
    bundle = build_bundle(config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # zero-initialised output layers would make every eps 0: randomise them
        for m in bundle.unets.values():
            for _name, p in m.named_parameters():
                if p.ndim > 1 and p.abs().sum() == 0:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    for m in bundle.modules().values():
        m.eval()
    return bundle


def phantom_mask(num_slices: int = 40, size: int = SIZE, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:num_slices, :size, :size]
    r = np.sqrt(((y - size / 2) / (size * 0.4)) ** 2 + ((x - size / 2) / (size * 0.35)) ** 2)
    mask = np.where(r < 1, 3, 0).astype(np.uint8)
    mask[(r < 0.7) & (r > 0.5)] = 2
    mask[r < 0.2] = 1
    c = (num_slices // 2, int(size * 0.6), int(size * 0.4))
    tumour = ((z - c[0]) / 5) ** 2 + ((y - c[1]) / 4) ** 2 + ((x - c[2]) / 4) ** 2
    mask[tumour < 1] = 4
    mask[tumour < 0.5] = 5
    mask[tumour < 0.2] = 6
    mask[rng.random(mask.shape) < 0.001] = 1
    return mask


def request(mask=None, start=None, mode="gem3d", informed_image=None, true_slice=False, **opts) -> SamplingRequest:
    mask = phantom_mask() if mask is None else mask
    start = mask.shape[0] // 2 if start is None else start
    informed = None
    if mode == "gem3d":
        img = informed_image
        if img is None:
            img = np.linspace(-1, 1, SIZE * SIZE, dtype=np.float32).reshape(SIZE, SIZE)
        informed = InformedSlice(image=img, source={"kind": "test"}, is_true_slice=true_slice)
    options = SamplingOptions(**{"steps": 4, "device": "cpu", "mode": mode, **opts})
    return SamplingRequest(mask=mask, start=start, informed=informed, options=options)


def collect(bundle, req, **kw):
    updates = []
    gen = generate(bundle, req, **kw)
    while True:
        try:
            updates.append(next(gen))
        except StopIteration as stop:
            return updates, stop.value


__all__ = ["bundle_from_config", "collect", "phantom_mask", "request", "run_to_end", "tiny_bundle", "write_cli_case"]


class PointMassNet(torch.nn.Module):
    """A closed-form eps network: x0-hat is always the first 4 condition channels (the pooled mask), so a
    sampler that is exact on a constant x0-hat lands on that mask's latent."""

    def __init__(self, schedule):
        super().__init__()
        self.ac = schedule.alphas_cumprod_f32

    def forward(self, x, t):
        xt, target = x[:, :, :4], x[:, :, 4:8]
        a = self.ac[t].reshape(-1, 1, 1, 1, 1)
        return (xt - a.sqrt() * target) / (1 - a).sqrt()
