"""VQ first stage: straight-through gradient, EMA codebook, dead-code restarts, perplexity, one interface."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from napari_gem3d.models import BundleError, LatentCodec, build_bundle, load_bundle, save_bundle
from napari_gem3d.models.codebook import CodebookQuantizer, codebook_perplexity
from napari_gem3d.models.first_stage import first_stage_config
from napari_gem3d.models.presets import small_config
from napari_gem3d.models.vae import AutoencoderKL
from napari_gem3d.models.vq import VQAutoencoder, VQConfig

TINY = {"in_channels": 1, "out_channels": 1, "ch": 32, "ch_mult": (1, 2), "num_res_blocks": 1}


def _model(**changes) -> VQAutoencoder:
    torch.manual_seed(0)
    return VQAutoencoder(VQConfig(**{**TINY, "codebook_size": 16, **changes}))


def _quantizer(codebook: torch.Tensor, dead_code_steps: int = 0, decay: float = 0.99) -> CodebookQuantizer:
    """A quantizer whose codebook is ``codebook`` (K, D), each code's EMA state as if chosen once."""
    k, d = codebook.shape
    q = CodebookQuantizer(VQConfig(**TINY, embed_dim=d, codebook_size=k, dead_code_steps=dead_code_steps,
                                   codebook_decay=decay))
    with torch.no_grad():
        q.embedding.weight.copy_(codebook)
        q.ema_w.copy_(codebook)
        q.ema_cluster_size.fill_(1.0)
    return q


def _grid(rows: torch.Tensor) -> torch.Tensor:
    """(N*4, D) rows -> (N, D, 2, 2) latents whose channels-last rows are ``rows`` in order."""
    return rows.reshape(-1, 2, 2, rows.shape[1]).permute(0, 3, 1, 2).contiguous()


def _corners(spread: float = 10.0) -> torch.Tensor:
    return spread * torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])


def test_straight_through_gradient_reaches_the_encoder_equal_to_the_decoder_input_gradient():
    model = _model().train()
    seen = {}

    def keep(name):
        def hook(_module, args, output=None):
            t = output if output is not None else args[0]
            t.retain_grad()
            seen[name] = t
        return hook

    model.quant.register_forward_hook(keep("z_e"))
    model.post_quant.register_forward_pre_hook(keep("q"))
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    recon, commitment, _ = model(x)
    recon.abs().mean().backward(retain_graph=True)
    z_e, q = seen["z_e"], seen["q"]
    assert not torch.equal(q.detach(), z_e.detach())  # quantisation changed the values ...
    assert q.grad.abs().sum() > 0
    assert torch.equal(z_e.grad, q.grad)  # ... and passed the gradient through unchanged
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.stem.parameters())

    # the commitment loss adds exactly its own gradient, beta * 2 (z_e - e) / numel, on the encoder side only
    g_recon = z_e.grad.clone()
    model.zero_grad()
    z_e.grad, q.grad = None, None
    (recon.abs().mean() + commitment).backward()
    beta = model.config.commitment_cost
    expected = g_recon + beta * 2 * (z_e - q).detach() / z_e.numel()
    torch.testing.assert_close(z_e.grad, expected)
    assert model.quantizer.embedding.weight.grad is None  # the codebook learns by EMA only


def test_codebook_is_never_a_trainable_parameter():
    model = _model().requires_grad_(True)
    assert not model.quantizer.embedding.weight.requires_grad
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("quantizer."))


def test_ema_moves_used_codes_toward_their_assigned_encodings():
    codebook = _corners()
    q = _quantizer(codebook, decay=0.9).train()
    g = torch.Generator().manual_seed(1)
    rows = torch.tensor([[1.5, 1.0]]) + 0.3 * torch.randn(16, 2, generator=g)  # all nearest to code 0
    before = q.embedding.weight.clone()
    _, _, counts = q(_grid(rows))
    after = q.embedding.weight
    target = rows.mean(0)
    assert counts[0] == len(rows) and counts[1:].sum() == 0
    assert (after[0] - target).norm() < (before[0] - target).norm()
    # repeated steps converge on the mean of the assigned encodings (0.9^100 of the start is left)
    for _ in range(100):
        q(_grid(rows))
    torch.testing.assert_close(q.embedding.weight[0], target, atol=1e-3, rtol=0)


def test_encode_decode_and_eval_passes_never_update_the_codebook():
    model = _model()
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    for mode in (True, False):
        model.train(mode)
        state = {k: v.clone() for k, v in model.quantizer.state_dict().items()}
        model.decode(model.encode(x))
        if not mode:
            model(x)
        assert all(torch.equal(v, state[k]) for k, v in model.quantizer.state_dict().items())


def test_unused_codes_are_restarted_from_encodings_after_n_steps():
    n = 3
    q = _quantizer(_corners(), dead_code_steps=n).train()
    g = torch.Generator().manual_seed(2)
    rows = torch.tensor([[1.0, 1.0]]) + 0.5 * torch.randn(32, 2, generator=g)
    for step in range(1, n):
        q(_grid(rows))
        assert int(q.restarts) == 0 and q.unused_steps.tolist() == [0, step, step, step]
    q(_grid(rows))
    assert int(q.restarts) == 3 and q.unused_steps.tolist() == [0, 0, 0, 0]
    for code in q.embedding.weight[1:]:
        assert (rows == code).all(dim=1).any(), "a restarted code is one of the step's encodings"
    assert torch.equal(q.ema_w[1:], q.embedding.weight[1:])
    _, _, counts = q(_grid(rows))  # the restarted codes are taken up by the encodings they came from
    assert (counts[1:] > 0).all()


def test_no_restarts_when_disabled():
    q = _quantizer(_corners(), dead_code_steps=0).train()
    rows = torch.full((8, 2), 0.5)
    for _ in range(5):
        q(_grid(rows))
    assert int(q.restarts) == 0 and q.unused_steps.tolist() == [0, 5, 5, 5]


def test_perplexity_of_known_assignments():
    assert float(codebook_perplexity(torch.tensor([8.0, 0, 0, 0]))) == pytest.approx(1.0)
    for m in (2, 3, 7):
        counts = torch.zeros(9)
        counts[:m] = 5
        assert float(codebook_perplexity(counts)) == pytest.approx(m)
    p = (0.75, 0.25)
    assert float(codebook_perplexity(torch.tensor([3.0, 1.0, 0.0]))) == pytest.approx(
        math.exp(-sum(v * math.log(v) for v in p)))


def test_quantizer_counts_the_known_assignment():
    codebook = _corners()
    q = _quantizer(codebook).eval()
    idx = torch.tensor([0, 0, 1, 2, 2, 2, 3, 0])
    _, _, counts = q(_grid(codebook[idx] + 0.1))
    assert torch.equal(counts, torch.bincount(idx, minlength=4).float())
    assert float(codebook_perplexity(counts)) == pytest.approx(float(codebook_perplexity(torch.tensor([3.0, 1, 3, 1]))))


def test_encode_gives_code_vectors_and_decode_snaps_to_them():
    model = _model().eval()
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        z = model.encode(x)
        rows = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        codes = model.quantizer.embedding.weight
        dist = (rows[:, None] - codes[None]).norm(dim=-1)
        assert float(dist.min(dim=1).values.max()) < 1e-5
        gaps = (codes[:, None] - codes[None]).norm(dim=-1)
        small = 0.1 * float(gaps[gaps > 0].min())  # well inside every code's cell
        nudged = z + small * torch.nn.functional.normalize(torch.randn_like(z), dim=1)
        torch.testing.assert_close(model.decode(nudged), model.decode(z), atol=1e-5, rtol=0)
        assert model.decode(z).shape == x.shape


def test_codec_uses_the_vq_model_through_the_same_interface():
    model = _model().eval()
    codec = LatentCodec(model, scale_factor=0.5, mask_condition="pool")
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        z = codec.encode(x)
        z_sampled = codec.encode(x, generator=torch.Generator().manual_seed(0))  # no posterior: same codes
        assert torch.equal(z, z_sampled)
        torch.testing.assert_close(z, 0.5 * model.encode(x))
        assert codec.decode(z).shape == x.shape and codec.latent_channels == model.config.embed_dim


def _vq_bundle_config():
    cfg = small_config(32)
    return dataclasses.replace(cfg, vae=VQConfig(**{**cfg.vae.to_dict(), "codebook_size": 32}))


def test_vq_bundle_records_its_kind_and_round_trips(tmp_path):
    bundle = build_bundle(_vq_bundle_config())
    assert isinstance(bundle.vae, VQAutoencoder)
    folder = save_bundle(bundle, tmp_path / "vq")
    data = json.loads((folder / "config.json").read_text())
    assert data["components"]["vae"]["kind"] == "vq"
    assert data["components"]["vae"]["config"]["codebook_size"] == 32
    loaded = load_bundle(folder)
    assert isinstance(loaded.vae, VQAutoencoder) and loaded.config == bundle.config
    ours, theirs = bundle.vae.state_dict(), loaded.vae.state_dict()
    assert set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert not loaded.vae.quantizer.embedding.weight.requires_grad


def test_kl_bundle_records_kl_and_one_without_a_kind_loads_as_kl(tmp_path):
    folder = save_bundle(build_bundle(small_config(32)), tmp_path / "kl")
    data = json.loads((folder / "config.json").read_text())
    assert data["components"]["vae"]["kind"] == "kl"
    del data["components"]["vae"]["kind"]  # a bundle written before the VQ first stage existed
    (folder / "config.json").write_text(json.dumps(data))
    assert isinstance(load_bundle(folder).vae, AutoencoderKL)
    data["components"]["vae"]["kind"] = "vqvae"
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="config.json.*kind"):
        load_bundle(folder)


def test_first_stage_config_picks_the_kind():
    assert type(first_stage_config(TINY)).__name__ == "VAEConfig"
    assert isinstance(first_stage_config({**TINY, "kind": "vq", "codebook_size": 8}), VQConfig)
    with pytest.raises(ValueError, match="codebook_size"):
        first_stage_config({**TINY, "codebook_size": 8})  # a KL autoencoder has no codebook
    with pytest.raises(ValueError, match="kind"):
        first_stage_config({**TINY, "kind": "vq"}, kind="kl")
