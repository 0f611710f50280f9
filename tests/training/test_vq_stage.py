"""A tiny VQ bundle trains through every stage, saves, loads and samples through the normal sampler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import run_chain
from training.config import config_from_dict, load_config

from napari_gem3d.models import load_bundle
from napari_gem3d.models.vq import VQAutoencoder
from napari_gem3d.sampling import SamplingOptions
from napari_gem3d.sampling.pipeline import run_to_end, sample_volume
from napari_gem3d.volume import Volume

CHAIN = [("vae", "vq"), ("slice", "slice"), ("volume-stage1", "s1"), ("volume-stage2", "s2"), ("baseline", "base")]
CODEBOOK = 32
VQ = {"kind": "vq", "codebook_size": CODEBOOK, "dead_code_steps": 1}
CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


@pytest.fixture(scope="module")
def vq_chain(tmp_path_factory, pairs_data):
    """The five stages on a VQ first stage (2 steps each, PatchGAN on); {stage: (bundle folder, last logs)}."""
    def vq_first_stage(stage, raw):
        if stage == "vae":
            raw["model"]["vae"].update(VQ)
            raw["vae"] = {"adv_weight": 0.1, "adv_start": 0, "disc_layers": 2, "disc_channels": 32}

    ran = run_chain(tmp_path_factory.mktemp("vq_chain"), pairs_data, CHAIN, vq_first_stage)
    return {stage: (folder, result["last"]) for stage, (folder, result) in ran.items()}


def test_vq_stage_logs_code_usage_and_the_adversarial_loss(vq_chain):
    logs = vq_chain["vae"][1]
    assert {"loss/l1", "loss/commitment", "loss/disc", "loss/g_adv", "vq/perplexity", "vq/codes_used",
            "vq/restarts"} <= set(logs)
    assert "loss/kl" not in logs
    assert 1.0 <= logs["vq/perplexity"] <= logs["vq/codes_used"] <= CODEBOOK
    assert logs["vq/restarts"] > 0  # dead_code_steps: 1 restarts every code the first step left unused


def test_vq_first_stage_is_kept_by_every_later_stage(vq_chain):
    first = load_bundle(vq_chain["vae"][0])
    assert isinstance(first.vae, VQAutoencoder) and first.config.vae.codebook_size == CODEBOOK
    assert first.config.scale_factor == pytest.approx(1.0 / first.config.provenance["training"]["vae"]["latent_std"])
    final = load_bundle(vq_chain["baseline"][0])
    assert final.config.vae == first.config.vae and final.config.provenance["untrained"] == []
    reference = first.vae.state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in final.vae.state_dict().items())


@pytest.mark.parametrize("mode", ["gem3d", "baseline"])
def test_vq_bundle_samples_through_the_normal_sampler(vq_chain, mode):
    bundle = load_bundle(vq_chain["baseline"][0])
    labels = np.zeros((16, 16, 7), np.uint8)
    labels[3:13, 3:13, :] = 3
    labels[6:9, 6:9, 2:5] = 5
    mask = Volume(labels, np.diag([1.0, 1.0, 2.0, 1.0]))
    image = Volume((labels.astype(np.float32) * 100 + 20), mask.affine)
    options = SamplingOptions(steps=2, device="cpu", mode=mode)
    out = run_to_end(sample_volume(bundle, mask, image=image if mode == "gem3d" else None, options=options))
    assert out.volume.shape == mask.shape and np.array_equal(out.volume.affine, mask.affine)
    assert np.isfinite(out.volume.array).all() and out.volume.array.std() > 0


def test_example_vq_config_loads():
    cfg = load_config(CONFIGS / "msd_brain_vq.yaml")
    assert cfg.stage == "vae" and cfg.model.vae["kind"] == "vq"
    with pytest.raises(ValueError, match="model.vae.kind"):
        config_from_dict({"out": "x", "model": {"vae": {"kind": "vqgan"}}}, stage="vae")
