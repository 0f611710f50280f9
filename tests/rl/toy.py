"""A tiny GEM-3D bundle pretrained in seconds on toy latent volumes (RL integration tests).
"""

from __future__ import annotations

import numpy as np
import torch
from training.rl.rollout import Condition

from napari_gem3d.models import build_bundle
from napari_gem3d.models.presets import small_config
from napari_gem3d.sampling import InformedSlice

SIZE = 8  # image size; latents are 4 x 4 x 4
LEVEL = 0.6
NOISE = 0.05


def toy_conditions(n: int = 2, slices: int = 4, seed: int = 0) -> list[Condition]:
    """Masks with a square lesion; uninformative informed slices (not the true slice: no known frame)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        mask = np.full((slices, SIZE, SIZE), 2, np.int64)
        y, x = rng.integers(1, 4, size=2)
        mask[:, y : y + 3, x : x + 3] = 5
        img = np.zeros((SIZE, SIZE), np.float32)
        out.append(Condition(f"toy{i}", mask, slices // 2, InformedSlice(image=img)))
    return out


def _conditioning(bundle, cond: Condition) -> torch.Tensor:
    """(Z, Cc, h, w): pooled mask latents + the informed latent, as propagate.generate builds them."""
    codec = bundle.codec
    with torch.no_grad():
        mask_lat = codec.mask_condition_latents(torch.from_numpy(bundle.config.labels.encode(cond.mask)))
        ref = codec.encode(torch.from_numpy(cond.informed.image)[None, None])
    return torch.cat([mask_lat, ref.expand(mask_lat.shape[0], -1, -1, -1)], dim=1)


def pretrained_toy_bundle(steps: int = 300, batch: int = 32, seed: int = 0, conditions=None, lr: float = 3e-3):
    """The tiny bundle with its volume UNet pretrained on the toy distribution."""
    torch.manual_seed(seed)
    bundle = build_bundle(small_config(SIZE, channel_mult=(1,), window=4, with_slice=False, name="toy"))
    conditions = conditions or toy_conditions()
    conds = [_conditioning(bundle, c) for c in conditions]
    unet = bundle.volume.train()
    sched = bundle.config.schedule
    ac = sched.alphas_cumprod_f32
    opt = torch.optim.Adam(unet.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    frames, lat = bundle.config.window, bundle.codec.latent_channels
    h, w = bundle.config.latent_size
    for _ in range(steps):
        ci = torch.randint(len(conds), (batch,), generator=g)
        z0 = [int(torch.randint(conds[c].shape[0] - frames + 1, (1,), generator=g)) for c in ci]
        cond = torch.stack([conds[c][s : s + frames] for c, s in zip(ci.tolist(), z0, strict=False)])
        v = LEVEL * (2 * torch.randint(2, (batch, 1, 1, 1, 1), generator=g).float() - 1)
        x0 = v + NOISE * torch.randn(batch, frames, lat, h, w, generator=g)
        t = torch.randint(1, sched.num_train_timesteps, (batch,), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        a = ac[t].reshape(-1, 1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        loss = torch.mean((unet(torch.cat([xt, cond], dim=2), t) - eps) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    unet.eval()
    return bundle
