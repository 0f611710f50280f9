"""Between pixels and latents: image slices, informed slices and masks through the VAE.

Images are grey slices in [-1, 1]. They are repeated to the VAE's input channels, encoded (the KL
posterior mean, or the VQ autoencoder's nearest codes) and multiplied by the latent scale factor;
decoding divides by it and keeps channel 0 (a VQ decoder snaps to the codebook first). Both first
stages (models/first_stage.py) work here alike. Masks reach the latent grid in one of two ways:

* ``"vae"`` (official): the encoded label image (one grey channel) goes through the VAE like
  anatomy;
* ``"pool"`` (our one-hot models): each one-hot channel is area-averaged to the latent grid,
  so the condition is exact label fractions per latent pixel, with no VAE in the way;
* ``"unshuffle"``: each f x f block of every one-hot channel becomes f*f channels of its latent pixel
  (space-to-depth, ``torch.nn.functional.pixel_unshuffle``). Lossless: the network sees where inside
  the block each label is, not only how much of it there is. Pooling keeps only the fractions, so a
  network can paint a training brain's fine detail from memory but has to guess an unseen brain's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import repeat

from .first_stage import FirstStage

MASK_CONDITIONS = ("vae", "pool", "unshuffle")


def mask_condition_channels(mask_condition: str, latent_channels: int, label_channels: int, downsampling: int) -> int:
    """Channels of the mask condition on the latent grid."""
    if mask_condition == "vae":
        return latent_channels
    if mask_condition == "unshuffle":
        return label_channels * downsampling**2
    return label_channels


def unet_input_channels(latent_channels: int, mask_channels: int) -> dict[str, int]:
    """Input channels of each UNet component: the noisy latent, then the mask condition (volume, baseline),
    then the informed-slice latent (volume)."""
    return {"volume": 2 * latent_channels + mask_channels, "baseline": latent_channels + mask_channels,
            "slice": latent_channels}


@dataclass
class LatentCodec:
    vae: FirstStage
    scale_factor: float
    mask_condition: str = "vae"

    def __post_init__(self):
        if self.mask_condition not in MASK_CONDITIONS:
            raise ValueError(f"mask_condition must be one of {MASK_CONDITIONS}, got {self.mask_condition!r}")

    @property
    def downsampling(self) -> int:
        return self.vae.config.downsampling

    @property
    def latent_channels(self) -> int:
        return self.vae.config.embed_dim

    def _to_vae_channels(self, x: torch.Tensor) -> torch.Tensor:
        cin = self.vae.config.in_channels
        if x.shape[1] == cin:
            return x
        if x.shape[1] != 1:
            raise ValueError(f"expected grey images (N, 1, H, W) or (N, {cin}, H, W), got {tuple(x.shape)}")
        return repeat(x, "n 1 h w -> n c h w", c=cin)

    def encode(self, images: torch.Tensor, chunk: int = 32, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(N, 1, H, W)`` in [-1, 1] -> scaled latents ``(N, C, H/f, W/f)``.

        The KL posterior mean, unless a (CPU) ``generator`` is given: then a posterior sample, as the
        official code draws (``official_compat``). A VQ autoencoder's codes are deterministic.
        """
        param = next(self.vae.parameters())
        out = []
        for start in range(0, images.shape[0], chunk):
            x = self._to_vae_channels(images[start : start + chunk].to(param.device, param.dtype))
            out.append(self.vae.encode(x, generator=generator) * self.scale_factor)
        return torch.cat(out)

    def decode(self, latents: torch.Tensor, chunk: int = 16) -> torch.Tensor:
        """Scaled latents -> grey images ``(N, 1, H, W)`` (channel 0 of the decoder output)."""
        param = next(self.vae.parameters())
        out = []
        for start in range(0, latents.shape[0], chunk):
            z = latents[start : start + chunk].to(param.device, param.dtype) / self.scale_factor
            out.append(self.vae.decode(z)[:, :1])
        return torch.cat(out)

    def mask_condition_latents(
        self, encoded_mask: torch.Tensor, generator: torch.Generator | None = None, chunk: int = 32
    ) -> torch.Tensor:
        """Encoded mask slices ``(N, Cm, H, W)`` (from ``LabelSpec.encode``) -> latent-grid condition."""
        if self.mask_condition == "vae":
            if encoded_mask.shape[1] != 1:
                raise ValueError("the 'vae' mask condition expects a single grey channel (official encoding)")
            return self.encode(encoded_mask, chunk=chunk, generator=generator)
        f = self.downsampling
        param = next(self.vae.parameters())
        encoded_mask = encoded_mask.to(param.device, param.dtype)
        if self.mask_condition == "unshuffle":
            return F.pixel_unshuffle(encoded_mask, f)
        return F.avg_pool2d(encoded_mask, kernel_size=f, stride=f)
