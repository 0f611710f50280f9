"""Networks, model bundles and the official-checkpoint converter."""

from .bundle import BundleConfig, BundleError, ModelBundle, build_bundle, load_bundle, save_bundle
from .card import ModelCard
from .latent import LatentCodec
from .unet import SliceUNet, UNetConfig, VolumeUNet, build_unet
from .vae import AutoencoderKL, VAEConfig

__all__ = [
    "AutoencoderKL",
    "BundleConfig",
    "BundleError",
    "LatentCodec",
    "ModelCard",
    "ModelBundle",
    "SliceUNet",
    "UNetConfig",
    "VAEConfig",
    "VolumeUNet",
    "build_bundle",
    "build_unet",
    "load_bundle",
    "save_bundle",
]
