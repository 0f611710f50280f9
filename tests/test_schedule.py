"""NoiseSchedule: official tables (golden), other kinds, (de)serialisation, forward process."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from napari_gem3d.diffusion.schedule import NoiseSchedule

GOLDEN = Path(__file__).parent / "data" / "gem3d_official"


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    return load_file(str(GOLDEN / "schedule.safetensors"))


def test_official_float64_tables_match_golden(golden):
    s = NoiseSchedule()
    assert s.betas.dtype == np.float64 and s.betas.shape == (1000,)
    np.testing.assert_allclose(s.betas, golden["betas_fp64"], rtol=0, atol=1e-15)
    np.testing.assert_allclose(s.alphas_cumprod, golden["alphas_cumprod_fp64"], rtol=0, atol=1e-15)


def test_official_float32_buffers_exact(golden):
    s = NoiseSchedule()
    pairs = {
        "alphas_cumprod_f32": "buffer.alphas_cumprod",
        "sqrt_alphas_cumprod_f32": "buffer.sqrt_alphas_cumprod",
        "sqrt_one_minus_alphas_cumprod_f32": "buffer.sqrt_one_minus_alphas_cumprod",
    }
    for ours, theirs in pairs.items():
        table = getattr(s, ours)
        assert table.dtype == torch.float32
        assert np.array_equal(table.numpy(), golden[theirs]), ours


def test_official_spot_values_from_trace():
    trace = json.loads((GOLDEN / "ddim_official_trace.json").read_text())["schedule"]
    s = NoiseSchedule()
    for t, v in trace["alphas_cumprod_fp64_at"].items():
        assert abs(s.alphas_cumprod[int(t)] - v) < 1e-15
    for t, v in trace["alphas_cumprod_fp32_buffer_at"].items():
        assert s.alphas_cumprod_f32[int(t)].item() == v
    assert s.alphas_cumprod[0] == pytest.approx(0.99915, abs=1e-15)


def test_tables_are_read_only():
    s = NoiseSchedule()
    with pytest.raises(ValueError):
        s.betas[0] = 0.5
    with pytest.raises(ValueError):
        s.alphas_cumprod[0] = 0.5


def test_plain_linear_kind():
    s = NoiseSchedule(kind="linear", beta_start=1e-4, beta_end=2e-2, num_train_timesteps=500)
    np.testing.assert_allclose(s.betas, np.linspace(1e-4, 2e-2, 500), rtol=0, atol=1e-17)
    np.testing.assert_allclose(s.alphas_cumprod, np.cumprod(1 - np.linspace(1e-4, 2e-2, 500)), rtol=1e-13)
    scaled = NoiseSchedule(kind="scaled_linear", beta_start=1e-4, beta_end=2e-2, num_train_timesteps=500)
    assert not np.allclose(s.betas, scaled.betas)


def test_cosine_kind_follows_nichol_dhariwal():
    T, s_ = 1000, 0.008
    s = NoiseSchedule(kind="cosine", num_train_timesteps=T, cosine_s=s_)

    def f(t: float) -> float:
        return math.cos((t / T + s_) / (1 + s_) * math.pi / 2) ** 2

    betas = s.betas
    assert betas.max() <= 0.999 and betas.min() > 0
    assert betas[-1] == 0.999  # alpha_bar(T) ~ 0, so the last beta is clipped
    unclipped = np.nonzero(betas < 0.999)[0]
    last = unclipped[-1]
    expected = np.array([f(i + 1) / f(0) for i in range(last + 1)])
    np.testing.assert_allclose(s.alphas_cumprod[: last + 1], expected, rtol=1e-10)
    assert np.all(np.diff(s.alphas_cumprod) < 0)


def test_dict_round_trip_and_json():
    for s in (NoiseSchedule(), NoiseSchedule(kind="cosine", prediction="v", num_train_timesteps=200)):
        d = s.to_dict()
        again = NoiseSchedule.from_dict(json.loads(json.dumps(d)))
        assert again == s
        np.testing.assert_array_equal(again.alphas_cumprod, s.alphas_cumprod)


@pytest.mark.parametrize(
    "d, exc, words",
    [
        ({"kind": "sqrt"}, ValueError, "unknown schedule kind"),
        ({"prediction": "epsilon"}, ValueError, "unknown prediction"),
        ({"beta_schedule": "linear"}, ValueError, "unknown NoiseSchedule keys"),
        ({"beta_start": 0.02, "beta_end": 0.01}, ValueError, "beta_start <= beta_end"),
        ({"num_train_timesteps": 1000.0}, ValueError, "num_train_timesteps"),
        ({"num_train_timesteps": 1}, ValueError, "num_train_timesteps"),
        ({"beta_end": float("nan")}, ValueError, "finite"),
    ],
)
def test_bad_config_is_refused(d, exc, words):
    with pytest.raises(exc, match=words):
        NoiseSchedule.from_dict(d)


def _expected_q_sample(s: NoiseSchedule, x0, noise, t):
    ac = torch.tensor(s.alphas_cumprod)[t].reshape((-1,) + (1,) * (x0.ndim - 1))
    return (ac.sqrt() * x0.double() + (1 - ac).sqrt() * noise.double()).float()


@pytest.mark.parametrize("shape", [(3, 4, 5, 5), (3, 2, 4, 5, 5)])
def test_add_noise_per_sample_t(shape):
    s = NoiseSchedule()
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    t = torch.tensor([0, 500, 999])
    xt = s.add_noise(x0, noise, t)
    assert xt.dtype == torch.float32 and xt.shape == x0.shape
    torch.testing.assert_close(xt, _expected_q_sample(s, x0, noise, t), rtol=0, atol=2e-6)
    # each sample uses its own t
    for b in range(3):
        torch.testing.assert_close(xt[b : b + 1], s.add_noise(x0[b : b + 1], noise[b : b + 1], t[b : b + 1]))


def test_add_noise_scalar_t_and_bf16():
    s = NoiseSchedule()
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(2, 4, 3, 3, generator=g), torch.randn(2, 4, 3, 3, generator=g)
    torch.testing.assert_close(s.add_noise(x0, noise, 250), s.add_noise(x0, noise, torch.tensor([250, 250])))
    xb, nb = x0.bfloat16(), noise.bfloat16()
    out = s.add_noise(xb, nb, torch.tensor([10, 900]))
    assert out.dtype == torch.bfloat16
    ref = s.add_noise(xb.float(), nb.float(), torch.tensor([10, 900])).bfloat16()
    assert torch.equal(out, ref)


def test_add_noise_rejects_bad_t():
    s = NoiseSchedule()
    x = torch.zeros(2, 1, 2, 2)
    with pytest.raises(TypeError, match="integer"):
        s.add_noise(x, x, torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"\[0, 999\]"):
        s.add_noise(x, x, torch.tensor([0, 1000]))
    with pytest.raises(ValueError, match="shape"):
        s.add_noise(x, x, torch.tensor([1, 2, 3]))


def test_training_targets():
    g = torch.Generator().manual_seed(2)
    x0, noise = torch.randn(3, 4, 4, 4, generator=g), torch.randn(3, 4, 4, 4, generator=g)
    t = torch.tensor([3, 400, 990])
    assert torch.equal(NoiseSchedule(prediction="eps").training_target(x0, noise, t), noise)
    assert torch.equal(NoiseSchedule(prediction="x0").training_target(x0, noise, t), x0)
    s = NoiseSchedule(prediction="v")
    v = s.training_target(x0, noise, t)
    ac = torch.tensor(s.alphas_cumprod)[t].reshape(-1, 1, 1, 1)
    expected_v = ac.sqrt() * noise.double() - (1 - ac).sqrt() * x0.double()
    torch.testing.assert_close(v.double(), expected_v, rtol=0, atol=2e-6)
    # the v identities: x0 = sqrt(a) x_t - sqrt(1-a) v, eps = sqrt(1-a) x_t + sqrt(a) v
    xt = s.add_noise(x0, noise, t).double()
    torch.testing.assert_close(ac.sqrt() * xt - (1 - ac).sqrt() * v.double(), x0.double(), rtol=0, atol=1e-5)
    eps = ac.sqrt() * v.double() + (1 - ac).sqrt() * xt
    torch.testing.assert_close(eps, noise.double(), rtol=0, atol=1e-5)
    assert s.training_target(x0.bfloat16(), noise.bfloat16(), t, dtype=torch.float32).dtype == torch.float32
