"""Bundles between stages: create the first one, read an earlier stage's output, write the next one."""

from __future__ import annotations

import dataclasses
import time

from torch import nn

from napari_gem3d.diffusion.schedule import NoiseSchedule
from napari_gem3d.masks import LabelSpec, official_brain_spec
from napari_gem3d.models import BundleConfig, ModelBundle, UNetConfig, build_bundle, build_unet, load_bundle
from napari_gem3d.models.first_stage import first_stage_config
from napari_gem3d.models.latent import mask_condition_channels, unet_input_channels
from napari_gem3d.models.presets import demo_labels
from napari_gem3d.volume import IntensityNorm

from .config import Config

UNTRAINED = "untrained"  # provenance key: components still at their initialisation


def label_spec(value) -> LabelSpec:
    if value == "demo":
        return demo_labels()
    if value == "official_brain":
        return official_brain_spec()
    if isinstance(value, dict):
        return LabelSpec.from_dict({"levels": None, "max_level": None, **value})
    raise ValueError(f"model.labels must be 'demo', 'official_brain' or a LabelSpec mapping, got {value!r}")


def new_bundle_config(cfg: Config) -> BundleConfig:
    """A fresh bundle configuration from the ``model`` and ``data`` sections (first stage of a chain)."""
    m = cfg.model
    labels = label_spec(m.labels)
    vae = first_stage_config({"in_channels": 1, "out_channels": 1, "ch": 32, "ch_mult": (1, 2, 2),
                              "num_res_blocks": 1, "z_channels": 4, "embed_dim": 4, **m.vae})  # kind: kl | vq
    lat = vae.embed_dim
    mask_condition = m.mask_condition or "pool"
    mask_ch = mask_condition_channels(mask_condition, lat, labels.num_channels, vae.downsampling)
    base = {"out_channels": lat, "model_channels": 32, "channel_mult": (1, 2, 4), "num_res_blocks": 1,
            "attention_resolutions": (4,), "num_head_channels": 32, **m.unet}
    slice_cfg = {**base, "context_dim": 64, **m.slice_unet}
    ins = unet_input_channels(lat, mask_ch)
    return BundleConfig(
        vae=vae,
        unets={
            "volume": UNetConfig(**{**base, "in_channels": ins["volume"], "temporal": True}),
            "baseline": UNetConfig(**{**base, "in_channels": ins["baseline"], "temporal": True}),
            "slice": UNetConfig(**{**slice_cfg, "in_channels": ins["slice"], "temporal": False}),
        },
        schedule=NoiseSchedule(**m.schedule),
        labels=labels,
        scale_factor=1.0,
        mask_condition=mask_condition,
        window=m.window,
        overlap=m.overlap,
        image_size=(cfg.data.image_size, cfg.data.image_size),
        slice_axis=cfg.data.slice_axis,
        intensity=IntensityNorm.from_dict(cfg.data.intensity),
        name=m.name,
        description=m.description,
        provenance={UNTRAINED: ["vae", "volume", "baseline", "slice"], "training": {}},
    )


def start_bundle(cfg: Config, *, required: bool) -> ModelBundle:
    """The earlier stage's bundle (``model.init_bundle``), or a fresh one when allowed."""
    path = cfg.path(cfg.model.init_bundle)
    if path is None:
        if required:
            raise ValueError(
                f"stage {cfg.stage!r} needs model.init_bundle: the bundle written by an earlier stage "
                "(at least the VAE stage's out/bundle)"
            )
        return build_bundle(new_bundle_config(cfg))
    bundle = load_bundle(path)
    if required and "vae" in bundle.config.provenance.get(UNTRAINED, []):
        raise ValueError(f"{path}: its VAE is untrained; run the vae stage first and point init_bundle at its output")
    wanted = cfg.model.mask_condition
    if wanted is not None and wanted != bundle.config.mask_condition:
        bundle = with_mask_condition(bundle, wanted, cfg.stage)
    for m in bundle.modules().values():
        m.requires_grad_(True)
    return bundle


def with_mask_condition(bundle: ModelBundle, mask_condition: str, stage: str) -> ModelBundle:
    """The bundle with another mask condition: its first stage (and slice model, which sees no mask) kept,
    its volume and baseline networks new and untrained (their input channels change). Only a stage that
    trains them from scratch may start from it."""
    if stage not in ("volume-stage1", "baseline"):
        raise ValueError(f"model.mask_condition {mask_condition!r} differs from the init bundle's "
                         f"{bundle.config.mask_condition!r}: only volume-stage1 and baseline train the "
                         f"mask-conditioned networks from scratch; run them with it first and start {stage} "
                         "from their bundle")
    cfg = bundle.config
    lat = cfg.vae.embed_dim
    mask_ch = mask_condition_channels(mask_condition, lat, cfg.labels.num_channels, cfg.vae.downsampling)
    ins = unet_input_channels(lat, mask_ch)
    unets = dict(cfg.unets)
    changed = [name for name in ("volume", "baseline") if name in unets]
    for name in changed:
        unets[name] = dataclasses.replace(unets[name], in_channels=ins[name], mask_injection=0)
    prov = dict(cfg.provenance)
    prov[UNTRAINED] = sorted({*prov.get(UNTRAINED, []), *changed})
    new_cfg = dataclasses.replace(cfg, unets=unets, mask_condition=mask_condition, provenance=prov)
    modules = {name: build_unet(unets[name]) if name in changed else m for name, m in bundle.unets.items()}
    return ModelBundle(new_cfg, bundle.vae, modules)


def with_component(bundle: ModelBundle, name: str, module: nn.Module, unet_cfg: UNetConfig | None = None,
                   **config_changes) -> ModelBundle:
    """A new bundle object with ``name`` replaced by ``module`` (and its config), marked as trained."""
    cfg = bundle.config
    unets = dict(cfg.unets)
    if unet_cfg is not None:
        unets[name] = unet_cfg
    prov = dict(cfg.provenance)
    prov[UNTRAINED] = [c for c in prov.get(UNTRAINED, []) if c != name]
    new_cfg = dataclasses.replace(cfg, unets=unets, provenance=prov, **config_changes)
    modules = dict(bundle.unets)
    vae = bundle.vae
    if name == "vae":
        vae = module
    else:
        modules[name] = module
    return ModelBundle(new_cfg, vae, modules)


def record_stage(bundle: ModelBundle, cfg: Config, info: dict, cases=()) -> ModelBundle:
    """The bundle with this stage in its provenance and, when the config tells one, its model card
    measured on ``cases`` (the stage's training cases)."""
    from .card import training_card

    prov = dict(bundle.config.provenance)
    training = dict(prov.get("training", {}))
    training[cfg.stage] = {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "seed": cfg.seed,
                           "steps": cfg.train.steps, "batch_size": cfg.train.batch_size, "lr": cfg.train.lr, **info}
    prov["training"] = training
    changes: dict = {"provenance": prov}
    if cfg.model.card and cases:
        changes["card"] = training_card(cfg.model.card, cases)
    return ModelBundle(dataclasses.replace(bundle.config, **changes), bundle.vae, dict(bundle.unets))

