"""Named bundle configurations: the official size, and tiny ones for tests and benchmarks."""

from __future__ import annotations

from ..diffusion.schedule import NoiseSchedule
from ..masks import LabelSpec, official_brain_spec
from ..volume import IntensityNorm
from .bundle import BundleConfig
from .unet import UNetConfig
from .vae import VAEConfig

DEMO_LABELS = {
    0: "outside brain",
    1: "CSF",
    2: "grey matter",
    3: "white matter",
    4: "oedema",
    5: "enhancing tumour rim",
    6: "necrotic tumour core",
}


def demo_labels() -> LabelSpec:
    """Brain tissue + synthetic-tumour labels of the bundled demo model (one-hot)."""
    return LabelSpec(DEMO_LABELS, "onehot")


def official_config(unets: tuple[str, ...] = ("volume", "baseline", "slice")) -> BundleConfig:
    """The published GEM-3D brain configuration (random weights unless loaded from a conversion).

    ``unets`` picks the networks (``("volume",)``: what GEM-3D sampling needs, ~0.37e9 of the ~1.1e9 parameters).
    """
    from .convert import OFFICIAL_PARAMS
    from .official import unet_config_from_official, vae_config_from_official

    every = {
        "volume": lambda: unet_config_from_official("volume", OFFICIAL_PARAMS["volume"], temporal=True),
        "baseline": lambda: unet_config_from_official("base", OFFICIAL_PARAMS["base"], temporal=True),
        "slice": lambda: unet_config_from_official("slice", OFFICIAL_PARAMS["slice"], temporal=False),
    }
    unknown = set(unets) - set(every)
    if unknown or not unets:
        raise ValueError(f"unets must name some of {sorted(every)}, got {list(unets)}")
    return BundleConfig(
        vae=vae_config_from_official(OFFICIAL_PARAMS["vae"]),
        unets={name: every[name]() for name in unets},
        schedule=NoiseSchedule(),
        labels=official_brain_spec(),
        image_size=(512, 512),
        intensity=IntensityNorm("minmax"),
        name="gem3d-official-size",
    )


def small_config(
    image_size: int = 32,
    *,
    labels: LabelSpec | None = None,
    model_channels: int = 32,
    channel_mult: tuple[int, ...] = (1, 2),
    num_res_blocks: int = 1,
    vae_ch: int = 32,
    vae_mult: tuple[int, ...] = (1, 2),
    window: int = 16,
    overlap: int = 1,
    with_slice: bool = True,
    name: str = "tiny",
) -> BundleConfig:
    """A small one-hot, pooled-mask configuration (tests, benchmarks, CPU training)."""
    labels = labels or demo_labels()
    lat = 4
    unet = dict(
        out_channels=lat, model_channels=model_channels, channel_mult=channel_mult, num_res_blocks=num_res_blocks,
        attention_resolutions=(2 ** (len(channel_mult) - 1),), num_head_channels=32,
    )
    unets = {
        "volume": UNetConfig(in_channels=2 * lat + labels.num_channels, temporal=True, **unet),
        "baseline": UNetConfig(in_channels=lat + labels.num_channels, temporal=True, **unet),
    }
    if with_slice:
        unets["slice"] = UNetConfig(in_channels=lat, context_dim=64, **unet)
    return BundleConfig(
        vae=VAEConfig(in_channels=1, out_channels=1, ch=vae_ch, ch_mult=vae_mult, num_res_blocks=1,
                      z_channels=lat, embed_dim=lat),
        unets=unets,
        schedule=NoiseSchedule(),
        labels=labels,
        scale_factor=1.0,
        mask_condition="pool",
        window=window,
        overlap=overlap,
        image_size=(image_size, image_size),
        intensity=IntensityNorm("percentile"),
        name=name,
    )
