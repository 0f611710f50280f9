"""Every stage runs a few steps on tiny synthetic data and writes a bundle the sampler loads and runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from train_helpers import run_chain, tiny_config
from training.config import config_from_dict
from training.engine.dist import DistInfo
from training.engine.loop import run_loop
from training.run import run_stage
from training.stages.diffusion import DiffusionTask

from napari_gem3d.models import load_bundle
from napari_gem3d.models.unet import is_temporal_name
from napari_gem3d.sampling import InformedSlice, SamplingOptions, SamplingRequest
from napari_gem3d.sampling.pipeline import run_to_end
from napari_gem3d.sampling.propagate import generate

CHAIN = [("vae", "vae"), ("slice", "slice"), ("volume-stage1", "s1"), ("volume-stage2", "s2"), ("baseline", "base")]
CPU = DistInfo(0, 1, 0, torch.device("cpu"))


@pytest.fixture(scope="module")
def chain(tmp_path_factory, pairs_data):
    """Run the five stages in order (2 steps each); returns {stage: bundle folder}."""
    def validate_some(stage, raw):
        if stage in ("vae", "volume-stage2"):
            raw["val"]["steps"] = 2  # validation montages (the other stages skip them to stay fast)

    ran = run_chain(tmp_path_factory.mktemp("chain"), pairs_data, CHAIN, validate_some)
    for folder, result in ran.values():
        assert result["bundle"] == str(folder)
    return {stage: folder for stage, (folder, _) in ran.items()}


def _sample(bundle, mode: str) -> np.ndarray:
    z, (h, w) = 7, bundle.config.image_size
    mask = np.zeros((z, h, w), np.int64)
    mask[:, 3:13, 3:13] = 3
    mask[2:5, 6:9, 6:9] = 5
    informed = InformedSlice(image=np.zeros((h, w), np.float32), is_true_slice=True) if mode == "gem3d" else None
    opts = SamplingOptions(steps=2, device="cpu", mode=mode)
    return run_to_end(generate(bundle, SamplingRequest(mask=mask, start=3, informed=informed, options=opts))).volume


@pytest.mark.parametrize("stage", [s for s, _ in CHAIN])
def test_every_stage_writes_a_loadable_bundle_that_samples(chain, stage):
    bundle = load_bundle(chain[stage])
    untrained = bundle.config.provenance["untrained"]
    component = {"vae": "vae", "slice": "slice", "volume-stage1": "volume", "volume-stage2": "volume",
                 "baseline": "baseline"}[stage]
    assert component not in untrained
    assert stage in bundle.config.provenance["training"]
    vol = _sample(bundle, "baseline" if stage == "baseline" else "gem3d")
    assert vol.shape == (7, 16, 16) and np.isfinite(vol).all()


def test_validation_montages_are_written(chain):
    for stage, _name in (("vae", "vae"), ("volume-stage2", "s2")):
        pngs = list((chain[stage].parent / "val").glob("*.png"))
        assert len(pngs) == 1 and pngs[0].stat().st_size > 1000 and pngs[0].read_bytes()[:4] == b"\x89PNG"


def test_vae_stage_records_latent_scale(chain):
    bundle = load_bundle(chain["vae"])
    rec = bundle.config.provenance["training"]["vae"]
    assert bundle.config.scale_factor == pytest.approx(1.0 / rec["latent_std"])
    assert bundle.config.scale_factor != 1.0


def test_stage_outputs_chain_and_keep_earlier_components(chain):
    vae = load_bundle(chain["vae"]).vae.state_dict()
    final = load_bundle(chain["baseline"])
    for k, v in final.vae.state_dict().items():
        assert torch.equal(v, vae[k])
    s1 = load_bundle(chain["volume-stage1"])
    assert not s1.config.unets["volume"].temporal
    assert final.config.unets["volume"].temporal
    assert set(final.config.provenance["training"]) == {s for s, _ in CHAIN}
    assert final.config.provenance["untrained"] == []


def test_stage2_starts_equal_to_stage1_and_trains_only_temporal_parameters(chain, tmp_path, pairs_data):
    raw = tiny_config(tmp_path, pairs_data, "volume-stage2", "s2", train={"steps": 1, "batch_size": 1})
    raw["model"]["init_bundle"] = str(chain["volume-stage1"])
    task = DiffusionTask(config_from_dict(raw), CPU)
    stage1 = load_bundle(chain["volume-stage1"]).volume
    x = torch.randn(1, 4, stage1.config.in_channels, 8, 8)
    t = torch.tensor([321])
    with torch.no_grad():
        assert torch.allclose(task.unet(x, t), stage1(x, t), atol=1e-5)
    run_loop(task, progress=False)
    temporal = [(n, p) for n, p in task.unet.named_parameters() if is_temporal_name(n)]
    frozen = [(n, p) for n, p in task.unet.named_parameters() if not is_temporal_name(n)]
    assert temporal and frozen
    assert all(not p.requires_grad and p.grad is None for _, p in frozen)
    assert all(p.requires_grad and p.grad is not None for _, p in temporal)
    assert any(float(p.grad.abs().sum()) > 0 for _, p in temporal)
    # the frozen 2-D weights are still exactly stage 1's
    ref = stage1.state_dict()
    assert all(torch.equal(p.detach(), ref[n]) for n, p in frozen)


def test_fixed_batch_overfit_loss_falls(chain, tmp_path, pairs_data):
    raw = tiny_config(tmp_path, pairs_data, "volume-stage1", "overfit",
                      train={"steps": 1, "batch_size": 2, "lr": 2e-3, "ema_decay": 0.0})
    raw["model"]["init_bundle"] = str(chain["vae"])
    task = DiffusionTask(config_from_dict(raw), CPU)
    from training.data.datasets import collate
    from training.engine.loop import StepContext, _optimizer

    ds = task.dataset()
    batch = collate([ds[(0, 0)], ds[(0, 1)]])
    ctx = StepContext(task.cfg, CPU, {"unet": task.unet}, {"unet": task.unet},
                      {"unet": _optimizer(task.unet, 2e-3, task.cfg)}, None, "unet")
    losses = [float(task.train_step(batch, 0, ctx)["loss/diffusion"]) for _ in range(40)]
    assert losses[-1] < 0.5 * losses[0], losses


def test_vae_with_patch_adversarial_loss(tmp_path, pairs_data):
    raw = tiny_config(tmp_path, pairs_data, "vae", "gan", train={"steps": 2},
                      vae={"adv_weight": 0.1, "adv_start": 0, "disc_layers": 2, "disc_channels": 32})
    result = run_stage(config_from_dict(raw), progress=False)
    assert {"loss/disc", "loss/g_adv"} <= set(result["last"])
    assert load_bundle(tmp_path / "gan" / "bundle").vae is not None
    raw["vae"].update(perceptual_weight=1.0, perceptual_weights=str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="perceptual_weights"):
        run_stage(config_from_dict({**raw, "out": str(tmp_path / "p")}), progress=False)


def test_mask_injection_trains_in_stage1_and_stays_frozen_in_stage2(chain, tmp_path, pairs_data):
    raw = tiny_config(tmp_path, pairs_data, "volume-stage1", "inj1", train={"steps": 2, "batch_size": 1})
    raw["model"].update(init_bundle=str(chain["vae"]), mask_injection=True)
    result = run_stage(config_from_dict(raw), progress=False)
    bundle = load_bundle(result["bundle"])
    cfg = bundle.config.unets["volume"]
    assert cfg.mask_injection == bundle.config.labels.num_channels  # the pooled one-hot mask channels
    trained = [conv.weight for conv in bundle.volume.inject]
    assert any(w.abs().sum() > 0 for w in trained)  # zero-initialised, moved by training
    assert np.isfinite(_sample(bundle, "gem3d")).all()

    raw2 = tiny_config(tmp_path, pairs_data, "volume-stage2", "inj2", train={"steps": 1, "batch_size": 1})
    raw2["model"]["init_bundle"] = result["bundle"]
    task = DiffusionTask(config_from_dict(raw2), CPU)
    run_loop(task, progress=False)
    assert task.unet.config.mask_injection == cfg.mask_injection and task.unet.config.temporal
    for conv, before in zip(task.unet.inject, trained, strict=True):
        assert not conv.weight.requires_grad and torch.equal(conv.weight, before)


def test_stage2_noise_prior_is_correlated_along_frames_and_recorded(chain, tmp_path, pairs_data):
    """diffusion.slice_noise_correlation: every frame's noise N(0, I), neighbouring frames correlated rho (the
    sampler's prior), and the trained network's config says which prior it learned."""
    from training.data.datasets import collate
    from training.engine.loop import StepContext

    rho = 0.8
    raw = tiny_config(tmp_path, pairs_data, "volume-stage2", "corr", train={"steps": 1, "batch_size": 2},
                      diffusion={"slice_noise_correlation": rho, "t_sampling": "per_window"})
    raw["model"]["init_bundle"] = str(chain["volume-stage1"])
    task = DiffusionTask(config_from_dict(raw), CPU)
    assert task.unet_cfg.noise_correlation == rho
    ds = task.dataset()
    ctx = StepContext(task.cfg, CPU, {"unet": task.unet}, {"unet": task.unet}, {}, None, "unet")
    noise = torch.cat([task.window_inputs(collate([ds[(s, 0)], ds[(s, 1)]]), ctx)[2] for s in range(40)])
    n = noise.transpose(0, 1).flatten(1).double()  # (frames, values)
    assert n.var(dim=1).sub(1).abs().max() < 0.05  # each frame standard normal
    neighbours = (n[1:] * n[:-1]).mean(dim=1)
    assert neighbours.sub(rho).abs().max() < 0.05, neighbours
    two_apart = (n[2:] * n[:-2]).mean()
    assert abs(float(two_apart) - rho**2) < 0.05  # AR(1), not a shared offset
    result = run_stage(config_from_dict(raw), progress=False)
    assert load_bundle(result["bundle"]).config.unets["volume"].noise_correlation == rho


def test_noise_prior_is_refused_where_slices_train_alone(tmp_path, pairs_data, chain):
    raw = tiny_config(tmp_path, pairs_data, "volume-stage1", "corr1", diffusion={"slice_noise_correlation": 0.5})
    raw["model"]["init_bundle"] = str(chain["vae"])
    with pytest.raises(ValueError, match="volume-stage2 or baseline"):
        DiffusionTask(config_from_dict(raw), CPU)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        config_from_dict({**raw, "diffusion": {"slice_noise_correlation": 1.0}})


def test_a_time_budget_stops_the_stage_exports_and_resumes(tmp_path, pairs_data, chain):
    """train.max_minutes: the stage stops after the budget (checkpoint, export, result says so); running it
    again continues from that step; storage fp16 writes half-size files that load back as fp32."""
    raw = tiny_config(tmp_path, pairs_data, "volume-stage1", "budget",
                      train={"steps": 500, "batch_size": 1, "max_minutes": 0.0005, "storage": "fp16"})
    raw["model"]["init_bundle"] = str(chain["vae"])
    first = run_stage(config_from_dict(raw), progress=False)
    assert 1 <= first["steps"] < 500 and first["configured_steps"] == 500
    bundle = load_bundle(first["bundle"])
    assert next(bundle.volume.parameters()).dtype == torch.float32
    from safetensors.torch import load_file

    stored = load_file(str(tmp_path / "budget" / "bundle" / "volume.safetensors"))
    assert {t.dtype for t in stored.values() if t.is_floating_point()} == {torch.float16}
    second = run_stage(config_from_dict(raw), progress=False)
    assert second["resumed_from"] == first["steps"] and second["steps"] > first["steps"]
    with pytest.raises(ValueError, match="storage"):
        config_from_dict({**raw, "train": {**raw["train"], "storage": "int8"}})
