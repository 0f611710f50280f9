"""The two first stages behind one interface: the KL autoencoder (default) and the VQ-GAN autoencoder.

Both have ``config`` (``downsampling``, ``embed_dim``, ``in_channels``), ``encode(x, generator=None)`` and
``decode(z)``: :class:`~napari_gem3d.models.latent.LatentCodec` and everything after it use only these.
A bundle records the kind beside the VAE's config; a bundle without it is ``kl``.
"""

from __future__ import annotations

from .vae import AutoencoderKL, VAEConfig
from .vq import VQAutoencoder, VQConfig

FirstStage = AutoencoderKL | VQAutoencoder
FIRST_STAGE_KINDS = {"kl": (VAEConfig, AutoencoderKL), "vq": (VQConfig, VQAutoencoder)}


def first_stage_config(values: dict, kind: str | None = None) -> VAEConfig:
    """The config of ``kind`` (or ``values["kind"]``; default ``kl``) from its fields."""
    values = dict(values)
    told = values.pop("kind", None)
    if kind is not None and told is not None and told != kind:
        raise ValueError(f"first-stage kind {kind!r} but its config says {told!r}")
    kind = kind or told or "kl"
    if kind not in FIRST_STAGE_KINDS:
        raise ValueError(f"first-stage kind must be one of {sorted(FIRST_STAGE_KINDS)}, got {kind!r}")
    return FIRST_STAGE_KINDS[kind][0].from_dict(values)


def build_first_stage(config: VAEConfig) -> FirstStage:
    return FIRST_STAGE_KINDS[config.kind][1](config)
