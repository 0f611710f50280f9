"""VQ-GAN first stage: the KL autoencoder's encoder and decoder around a vector-quantised bottleneck.

``encoder -> quant (1x1, z_channels -> embed_dim) -> codebook -> post_quant (1x1) -> decoder``, with the
encoder and decoder of :mod:`napari_gem3d.models.vae` (the encoder without the log-variance half).

**Codebook learning: EMA updates plus a commitment loss.** The codebook is MONAI's ``EMAQuantizer``
(van den Oord et al. 2017, appendix; VQ-VAE-2): each code moves as an exponential moving average of the
encodings assigned to it (a running k-means), and the encoder pays the commitment loss
``commitment_cost * ||z_e - sg[e]||^2``, which keeps its outputs near their codes. EMA instead of the
gradient codebook loss ``||sg[z_e] - e||^2`` because the codebook then does not depend on the optimiser: the
learning rate, Adam's per-parameter scaling, weight decay, gradient clipping and the training engine's
parameter EMA never touch it (the codebook is not a trainable parameter), and EMA codebooks are the ones
reported to converge fastest and to collapse least.

**Dead-code restarts.** A code no encoding chose for ``dead_code_steps`` consecutive training steps is set to
a random encoding of the current batch (as in Jukebox and SoundStream), so the whole codebook stays in use.
Usage counts of every training step are returned by :meth:`VQAutoencoder.forward` for the logs (perplexity:
:func:`napari_gem3d.models.codebook.codebook_perplexity`). The codebook lives in :mod:`.codebook`.

**The interface is the KL autoencoder's** (what :class:`~napari_gem3d.models.latent.LatentCodec` and every
later stage use):

* ``encode(x)`` returns the **quantised** latent (nearest code vectors): what the diffusion models learn. It is
  deterministic; a ``generator`` (the KL posterior sample of ``official_compat``) is ignored: there is no
  posterior to sample. ``encode`` and ``decode`` never update the codebook, in any mode: only the training
  pass ``forward`` does (in training mode).
* ``decode(z)`` **quantises first** (nearest code, straight-through), then decodes. The decoder has only ever
  seen code vectors, and a diffusion sample is only close to the codebook (the denoiser's residual error);
  snapping it to the nearest codes puts it back where the decoder was trained, as VQ-regularised latent
  diffusion models decode (the quantiser is part of the decoder). Latents from ``encode`` are code vectors
  already, so their decoding is unchanged by the snap; the straight-through estimator keeps ``decode``
  differentiable (identity gradient) for whatever backpropagates through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .vae import Decoder, Encoder, VAEConfig, check_images


@dataclass(frozen=True)
class VQConfig(VAEConfig):
    """The KL autoencoder's fields (``embed_dim`` = code vector length = latent channels) plus the codebook."""

    kind: ClassVar[str] = "vq"

    codebook_size: int = 512
    commitment_cost: float = 0.25
    codebook_decay: float = 0.99  # EMA decay of the code vectors and their cluster sizes
    dead_code_steps: int = 100  # restart a code unused for this many training steps (0: never)

    def __post_init__(self):
        super().__post_init__()
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size must be >= 2, got {self.codebook_size}")
        if not 0.0 < self.codebook_decay < 1.0:
            raise ValueError(f"codebook_decay must be in (0, 1), got {self.codebook_decay}")
        if self.dead_code_steps < 0:
            raise ValueError(f"dead_code_steps must be >= 0, got {self.dead_code_steps}")


class VQAutoencoder(nn.Module):
    """``encode(x) -> quantised latent``; ``decode(z)`` quantises, then decodes; images in [-1, 1]."""

    def __init__(self, cfg: VQConfig):
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg, double_z=False)
        self.quant = nn.Conv2d(cfg.z_channels, cfg.embed_dim, 1)
        from .codebook import CodebookQuantizer  # MONAI is imported only when a VQ model is built

        self.quantizer = CodebookQuantizer(cfg)
        self.post_quant = nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)
        self.decoder = Decoder(cfg)

    def requires_grad_(self, requires_grad: bool = True) -> VQAutoencoder:
        """The codebook stays frozen whatever is asked: EMA updates it, never an optimiser."""
        super().requires_grad_(requires_grad)
        self.quantizer.embedding.weight.requires_grad_(False)
        return self

    def encode_continuous(self, x: torch.Tensor) -> torch.Tensor:
        """The encoding before quantisation, ``z_e``."""
        check_images(x, self.config, "VQ autoencoder")
        return self.quant(self.encoder(x))

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The nearest code vectors of ``z_e`` (deterministic: ``generator`` is ignored)."""
        return self.quantizer.snap(self.encode_continuous(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self._decode_codes(self.quantizer.snap(z))

    def _decode_codes(self, q: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant(q))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass: reconstruction, commitment loss, code usage counts (updates the codebook in training)."""
        quantized, commitment, counts = self.quantizer(self.encode_continuous(x))
        return self._decode_codes(quantized), commitment, counts
