"""DDIM discretisation, plans, known-frame re-noise levels, and the step (golden + analytic checks)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from napari_gem3d.diffusion import (
    NoiseSchedule,
    ddim_step,
    ddim_timesteps,
    make_ddim_plan,
    renoise_alpha_cumprod,
)

GOLDEN = Path(__file__).parent / "data" / "gem3d_official"
SCHED = NoiseSchedule()


@pytest.fixture(scope="module")
def trace() -> dict:
    return json.loads((GOLDEN / "ddim_official_trace.json").read_text())


@pytest.fixture(scope="module")
def sample_tiny() -> dict[str, torch.Tensor]:
    return load_file(str(GOLDEN / "ddim_official_sample_tiny.safetensors"))


# --------------------------------------------------------------------------- discretisation and plans
@pytest.mark.parametrize("S", [10, 50, 200])
def test_timesteps_match_official(trace, S):
    ts = ddim_timesteps(S)
    assert ts.tolist() == trace[f"S{S}"]["ddim_timesteps_ascending"]


def test_timesteps_examples_and_validation():
    assert ddim_timesteps(200)[[0, 1, 2, -1]].tolist() == [1, 6, 11, 996]
    assert ddim_timesteps(50)[[0, 1, -1]].tolist() == [1, 21, 981]
    for S in (1, 3, 7, 300, 999):  # non-divisors give exactly S distinct steps inside the table
        ts = ddim_timesteps(S)
        assert len(ts) == S and ts[0] == 1 and ts[-1] <= 999 and np.all(np.diff(ts) > 0)
    for bad in (0, 1000, -5):
        with pytest.raises(ValueError, match="num_steps"):
            ddim_timesteps(bad)
    with pytest.raises(TypeError):
        ddim_timesteps(2.5)


@pytest.mark.parametrize("S", [10, 50, 200])
def test_plan_matches_official_trace(trace, S):
    plan = make_ddim_plan(SCHED, S, eta=1.0)
    steps = trace[f"S{S}"]["steps"]
    assert len(plan) == S
    assert plan.t.dtype == plan.t_prev.dtype == torch.int64
    assert plan.a_t.dtype == plan.a_prev.dtype == plan.sigma.dtype == torch.float32
    col = {k: torch.tensor([s[k] for s in steps], dtype=torch.float64) for k in steps[0] if k != "i"}
    assert plan.t.tolist() == col["timestep_fed_to_unet"].long().tolist()
    assert plan.t_prev.tolist() == col["timestep_of_alpha_prev"].long().tolist()
    # float32 values as the official step applies them
    assert torch.equal(plan.a_t.double(), col["alpha_cumprod_t_used"])
    assert torch.equal(plan.a_prev.double(), col["alpha_cumprod_prev_used"])
    torch.testing.assert_close(plan.sigma.double(), col["sigma_used"], rtol=0, atol=1e-7)
    sqrt_1m_at = torch.sqrt(1.0 - plan.a_t)  # what ddim_step computes
    torch.testing.assert_close(sqrt_1m_at.double(), col["sqrt_one_minus_alpha_t_used"], rtol=0, atol=1e-7)
    # and the float64 values, up to float32 rounding
    torch.testing.assert_close(plan.a_t.double(), col["alpha_cumprod_t_fp64"], rtol=0, atol=1e-6)
    torch.testing.assert_close(plan.a_prev.double(), col["alpha_cumprod_prev_fp64"], rtol=0, atol=1e-6)
    torch.testing.assert_close(plan.sigma.double(), col["sigma_fp64"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("S", [1, 7, 10, 50, 200, 999])
@pytest.mark.parametrize("eta", [1.0, 0.3])
def test_last_step_goes_to_alpha0_and_sigma_positive(S, eta):
    plan = make_ddim_plan(SCHED, S, eta=eta)
    assert plan.t_prev[-1].item() == 0
    assert plan.a_prev[-1].item() == SCHED.alphas_cumprod_f32[0].item() == np.float32(0.99915)
    assert bool((plan.sigma > 0).all()) and bool(torch.isfinite(plan.sigma).all())
    assert torch.all(plan.t[:-1] > plan.t[1:]) and torch.equal(plan.t_prev[:-1], plan.t[1:])
    if S >= 10:  # official: last step sigma ~ 0.0206 * eta for any S
        assert plan.sigma[-1].item() == pytest.approx(0.020648 * eta, rel=1e-4)


def test_eta_scales_sigma_and_is_validated():
    s1, s0 = make_ddim_plan(SCHED, 50, eta=1.0), make_ddim_plan(SCHED, 50, eta=0.0)
    assert torch.count_nonzero(s0.sigma) == 0
    torch.testing.assert_close(make_ddim_plan(SCHED, 50, eta=0.5).sigma, 0.5 * s1.sigma)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="eta"):
            make_ddim_plan(SCHED, 50, eta=bad)


def test_plan_to_and_coefficients():
    plan = make_ddim_plan(SCHED, 10, official_compat=True).to("cpu")
    assert plan.official_compat and plan.device.type == "cpu"
    a_t, a_prev, sigma = plan.coefficients(3)
    assert a_t.ndim == 0 and a_t.item() == plan.a_t[3].item() and sigma.item() == plan.sigma[3].item()
    assert a_prev.item() == plan.a_prev[3].item()


# --------------------------------------------------------------------------- known-frame re-noise levels
@pytest.mark.parametrize("S", [10, 50, 200])
@pytest.mark.parametrize("compat", [True, False])
def test_renoise_levels_match_trace(trace, S, compat):
    key = "official" if compat else "corrected"
    d = trace[f"S{S}"]
    expected = [d[f"initial_known_slice_alpha_{key}"]] + [s[f"known_slice_alpha_{key}"] for s in d["steps"]]
    got = renoise_alpha_cumprod(SCHED, S, official_compat=compat)
    assert got.dtype == torch.float32 and got.shape == (S + 1,)
    assert got.double().tolist() == expected
    plan = make_ddim_plan(SCHED, S, official_compat=compat)
    assert torch.equal(plan.renoise_a, got)
    if not compat:  # corrected = the level x is at: a_t of the first step, then a_prev of each step
        assert plan.renoise_a[0] == plan.a_t[0] and torch.equal(plan.renoise_a[1:], plan.a_prev)


def test_official_known_frame_paste_uses_compat_levels(sample_tiny):
    """Case B of the official 10-step run: frame 0 of every intermediate is the re-noised known latent."""
    plan = make_ddim_plan(SCHED, 10, official_compat=True)
    corrected = make_ddim_plan(SCHED, 10).renoise_a
    prev = sample_tiny["input.previous"][0, 0]
    for k in range(11):
        a = plan.renoise_a[k]
        n = sample_tiny[f"B_prev_first.noise.{2 * k:02d}.prev"][0, 0]
        frame0 = sample_tiny[f"B_prev_first.x_inter.{k:02d}"][0]
        torch.testing.assert_close(frame0, a.sqrt() * prev + (1 - a).sqrt() * n, rtol=0, atol=1e-5)
        if k < 9:  # the corrected level differs except after the last two steps
            wrong = corrected[k].sqrt() * prev + (1 - corrected[k]).sqrt() * n
            assert (frame0 - wrong).abs().max() > 1e-2


# --------------------------------------------------------------------------- step vs the official run
def test_step_replays_official_free_run(sample_tiny):
    """Case A (no known frame): with eps re-derived from the stored pred_x0, each step must reproduce
    the official next latent from the recorded noise (last step to alpha_bar[0], noise on every step)."""
    plan = make_ddim_plan(SCHED, 10)
    x = sample_tiny["A_free.x_inter.00"]
    for i in range(10):
        a_t, a_prev, sigma = plan.coefficients(i)
        px0 = sample_tiny[f"A_free.pred_x0.{i:02d}"].double()
        eps = ((x.double() - a_t.double().sqrt() * px0) / (1 - a_t.double()).sqrt()).float()
        out = ddim_step(eps, x, a_t, a_prev, sigma, noise=sample_tiny[f"A_free.noise.{i:02d}.ddim"])
        expected = sample_tiny[f"A_free.x_inter.{i + 1:02d}"]
        scale = expected.abs().max()
        assert (out.x_prev - expected).abs().max() <= 1e-5 * scale
        assert (out.pred_x0 - px0.float()).abs().max() <= 1e-5 * px0.abs().max()
        x = expected
    torch.testing.assert_close(x, sample_tiny["A_free.output.sample_fp32"], rtol=0, atol=0)


# --------------------------------------------------------------------------- log-prob
def _normal_lp(out):
    return torch.distributions.Normal(out.mean, out.std).log_prob(out.x_prev.float())


def test_log_prob_is_mean_gaussian_density_4d_per_sample_sigma():
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(3, 4, 6, 6, generator=g), torch.randn(3, 4, 6, 6, generator=g)
    plan = make_ddim_plan(SCHED, 20)
    idx = torch.tensor([0, 7, 19])
    coeffs = plan.a_t[idx], plan.a_prev[idx], plan.sigma[idx]
    out = ddim_step(eps, x, *coeffs, generator=g, return_log_prob=True)
    assert out.log_prob.shape == (3,) and out.log_prob.dtype == torch.float32
    torch.testing.assert_close(out.log_prob, _normal_lp(out).mean(dim=(1, 2, 3)), rtol=1e-6, atol=1e-6)
    # a sample drawn from N(mean, sigma^2) has mean log-density close to -1/2 - log sigma - log(2 pi)/2
    ent = -0.5 - plan.sigma[idx].log() - 0.5 * np.log(2 * np.pi)
    torch.testing.assert_close(out.log_prob, ent, rtol=0, atol=0.2)


def test_log_prob_with_frame_mask_covers_generated_frames_only():
    g = torch.Generator().manual_seed(1)
    B, F = 3, 5
    x, eps = torch.randn(B, F, 2, 4, 4, generator=g), torch.randn(B, F, 2, 4, 4, generator=g)
    mask = torch.tensor(
        [
            [False, True, True, True, True],
            [True, True, True, True, False],
            [False, False, False, False, False],
        ]
    )
    a_t, a_prev, sigma = make_ddim_plan(SCHED, 10).coefficients(4)
    out = ddim_step(eps, x, a_t, a_prev, sigma, generator=g, frame_mask=mask, return_log_prob=True)
    lp = _normal_lp(out)
    for b in range(2):
        torch.testing.assert_close(out.log_prob[b], lp[b][mask[b]].mean(), rtol=1e-6, atol=1e-6)
    assert out.log_prob[2].item() == 0.0  # no policy frame: empty action, log-prob 0 (never NaN)
    # known frames do not influence the log-prob
    x_prev = out.x_prev.clone()
    x_prev[0, 0] += 100.0
    again = ddim_step(eps, x, a_t, a_prev, sigma, prev_sample=x_prev, frame_mask=mask, return_log_prob=True)
    assert again.log_prob[0] == out.log_prob[0]
    full = ddim_step(eps, x, a_t, a_prev, sigma, prev_sample=x_prev, return_log_prob=True)
    assert full.log_prob[0] < out.log_prob[0] - 1.0


def test_zero_sigma_log_prob_is_refused_but_step_works():
    x = torch.randn(2, 4, 3, 3)
    eps = torch.randn(2, 4, 3, 3)
    plan = make_ddim_plan(SCHED, 10, eta=0.0)
    a_t, a_prev, sigma = plan.coefficients(0)
    with pytest.raises(ValueError, match="sigma == 0"):
        ddim_step(eps, x, a_t, a_prev, sigma, return_log_prob=True)
    with pytest.raises(ValueError, match="sigma == 0"):
        ddim_step(eps, x, 0.5, 0.6, torch.tensor([0.1, 0.0]), return_log_prob=True)
    out = ddim_step(eps, x, a_t, a_prev, sigma)
    assert torch.equal(out.x_prev, out.mean)


# --------------------------------------------------------------------------- randomness
def test_generator_determinism_and_injected_noise():
    x, eps = torch.randn(2, 3, 4, 5, 5), torch.randn(2, 3, 4, 5, 5)
    coeffs = make_ddim_plan(SCHED, 10).coefficients(2)
    a = ddim_step(eps, x, *coeffs, generator=torch.Generator().manual_seed(7)).x_prev
    b = ddim_step(eps, x, *coeffs, generator=torch.Generator().manual_seed(7)).x_prev
    c = ddim_step(eps, x, *coeffs, generator=torch.Generator().manual_seed(8)).x_prev
    assert torch.equal(a, b) and not torch.allclose(a, c)
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
    out = ddim_step(eps, x, *coeffs, noise=z)
    assert torch.equal(out.x_prev, a)
    assert torch.equal(out.x_prev, out.mean + out.std * z)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prev_sample_scoring_equals_sampling(dtype):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 3, 6, 6, generator=g).to(dtype)
    eps = torch.randn(2, 4, 3, 6, 6, generator=g).to(dtype)
    mask = torch.tensor([[False, True, True, True], [True, True, True, False]])
    coeffs = make_ddim_plan(SCHED, 10).coefficients(5)
    sampled = ddim_step(eps, x, *coeffs, generator=g, frame_mask=mask, return_log_prob=True)
    assert sampled.x_prev.dtype == dtype
    scored = ddim_step(eps, x, *coeffs, prev_sample=sampled.x_prev, frame_mask=mask, return_log_prob=True)
    assert scored.x_prev is sampled.x_prev
    assert torch.equal(scored.log_prob, sampled.log_prob)
    # a different action scores differently
    moved = sampled.x_prev + 0.5
    other = ddim_step(eps, x, *coeffs, prev_sample=moved, frame_mask=mask, return_log_prob=True)
    assert torch.all(other.log_prob < sampled.log_prob)


# --------------------------------------------------------------------------- closed form
def _exact_model(x0: torch.Tensor, prediction: str):
    """A 'model' that knows x0: returns the exact eps / v / x0 for x_t at noise level a_t."""

    def model(x_t: torch.Tensor, a_t: torch.Tensor) -> torch.Tensor:
        a = a_t.double()
        eps = (x_t.double() - a.sqrt() * x0.double()) / (1 - a).sqrt()
        if prediction == "eps":
            return eps.float()
        if prediction == "v":
            return (a.sqrt() * eps - (1 - a).sqrt() * x0.double()).float()
        return x0.clone()

    return model


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
@pytest.mark.parametrize("S", [10, 50])
def test_deterministic_loop_lands_on_analytic_result(prediction, S):
    """eta = 0 and an exact model: pred_x0 == x0 at every step and eps-hat stays eps_T, so the result is
    sqrt(abar_0) x0 + sqrt(1 - abar_0) eps_T (the official last step ends at abar_0, not at x0)."""
    g = torch.Generator().manual_seed(4)
    x0, x_T = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    plan = make_ddim_plan(SCHED, S, eta=0.0)
    model = _exact_model(x0, prediction)
    x = x_T
    for i in range(S):
        out = ddim_step(model(x, plan.a_t[i]), x, *plan.coefficients(i), prediction=prediction)
        torch.testing.assert_close(out.pred_x0, x0, rtol=0, atol=2e-5)
        x = out.x_prev
    a_first, a0 = plan.a_t[0].double(), plan.a_prev[-1].double()
    eps_T = (x_T.double() - a_first.sqrt() * x0.double()) / (1 - a_first).sqrt()
    expected = a0.sqrt() * x0.double() + (1 - a0).sqrt() * eps_T
    torch.testing.assert_close(x.double(), expected, rtol=0, atol=1e-5)
    assert (x.double() - x0.double()).abs().max() > 1e-3  # not x0 itself


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_stochastic_loop_matches_float64_recursion(prediction):
    """eta = 1 with injected z: eps-hat evolves as (sqrt(1-ap-s^2) eps + s z)/sqrt(1-ap)."""
    g = torch.Generator().manual_seed(5)
    S = 10
    x0, x_T = torch.randn(2, 3, 4, 4, 4, generator=g), torch.randn(2, 3, 4, 4, 4, generator=g)
    zs = [torch.randn(x0.shape, generator=g) for _ in range(S)]
    plan = make_ddim_plan(SCHED, S, eta=1.0)
    model = _exact_model(x0, prediction)
    x = x_T
    for i in range(S):
        out = ddim_step(model(x, plan.a_t[i]), x, *plan.coefficients(i), prediction=prediction, noise=zs[i])
        x = out.x_prev
    a = plan.a_t[0].double()
    eps = (x_T.double() - a.sqrt() * x0.double()) / (1 - a).sqrt()
    for i in range(S):
        ap, s = plan.a_prev[i].double(), plan.sigma[i].double()
        x_ref = ap.sqrt() * x0.double() + (1 - ap - s**2).sqrt() * eps + s * zs[i].double()
        eps = (x_ref - ap.sqrt() * x0.double()) / (1 - ap).sqrt()
    torch.testing.assert_close(x.double(), x_ref, rtol=0, atol=2e-5)


def test_v_prediction_consistent_with_training_target():
    s = NoiseSchedule(prediction="v")
    g = torch.Generator().manual_seed(6)
    x0, noise = torch.randn(3, 4, 5, 5, generator=g), torch.randn(3, 4, 5, 5, generator=g)
    plan = make_ddim_plan(s, 20)
    idx = torch.tensor([0, 9, 19])
    x_t = s.add_noise(x0, noise, plan.t[idx])
    v = s.training_target(x0, noise, plan.t[idx])
    # ddim_step uses sqrt of the float32 a_t; add_noise the float32 of the float64 sqrt: agree to ~1e-6
    out = ddim_step(v, x_t, plan.a_t[idx], plan.a_prev[idx], plan.sigma[idx], prediction="v", noise=noise)
    torch.testing.assert_close(out.pred_x0, x0, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- dtypes, broadcasting, options
def test_bf16_inputs_are_computed_in_fp32():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 4, 3, 5, 5, generator=g).bfloat16()
    eps = torch.randn(2, 4, 3, 5, 5, generator=g).bfloat16()
    z = torch.randn(x.shape, generator=g)
    coeffs = make_ddim_plan(SCHED, 10).coefficients(1)
    lo = ddim_step(eps, x, *coeffs, noise=z, return_log_prob=True)
    hi = ddim_step(eps.float(), x.float(), *coeffs, noise=z)
    assert lo.x_prev.dtype == torch.bfloat16
    assert lo.mean.dtype == lo.pred_x0.dtype == lo.log_prob.dtype == torch.float32
    assert torch.equal(lo.mean, hi.mean) and torch.equal(lo.pred_x0, hi.pred_x0)
    assert torch.equal(lo.x_prev, hi.x_prev.bfloat16())
    # bf16 arithmetic would differ visibly
    bf = (x - (1 - coeffs[0]).sqrt().bfloat16() * eps) / coeffs[0].sqrt().bfloat16()
    assert not torch.equal(bf.float(), lo.pred_x0)


@pytest.mark.parametrize("shape", [(3, 4, 5, 5), (3, 2, 4, 5, 5)])
def test_per_sample_coefficients_broadcast(shape):
    g = torch.Generator().manual_seed(8)
    x, eps, z = (torch.randn(shape, generator=g) for _ in range(3))
    plan = make_ddim_plan(SCHED, 10)
    idx = torch.tensor([0, 4, 9])
    batched = ddim_step(eps, x, plan.a_t[idx], plan.a_prev[idx], plan.sigma[idx], noise=z)
    for b, i in enumerate(idx.tolist()):
        single = ddim_step(eps[b : b + 1], x[b : b + 1], *plan.coefficients(i), noise=z[b : b + 1])
        assert torch.equal(batched.x_prev[b : b + 1], single.x_prev)
    # python floats behave like 0-d tensors
    a_t, a_prev, sigma = plan.coefficients(4)
    f = ddim_step(eps, x, a_t.item(), a_prev.item(), sigma.item(), noise=z)
    assert torch.equal(f.x_prev, ddim_step(eps, x, a_t, a_prev, sigma, noise=z).x_prev)


def test_clip_x0_clamps_and_rederives_eps():
    g = torch.Generator().manual_seed(9)
    x, eps = 3 * torch.randn(2, 4, 5, 5, generator=g), torch.randn(2, 4, 5, 5, generator=g)
    a_t, a_prev, sigma = make_ddim_plan(SCHED, 10).coefficients(0)
    free = ddim_step(eps, x, a_t, a_prev, sigma, noise=torch.zeros_like(x))
    assert free.pred_x0.abs().max() > 1.0  # no clipping by default
    out = ddim_step(eps, x, a_t, a_prev, sigma, noise=torch.zeros_like(x), clip_x0=1.0)
    assert out.pred_x0.abs().max() <= 1.0
    eps_hat = (x - a_t.sqrt() * out.pred_x0) / (1 - a_t).sqrt()
    expected = a_prev.sqrt() * out.pred_x0 + (1 - a_prev - sigma**2).sqrt() * eps_hat
    torch.testing.assert_close(out.mean, expected, rtol=1e-6, atol=1e-6)


def test_bad_step_inputs_are_refused():
    x4, x5 = torch.zeros(2, 4, 3, 3), torch.zeros(2, 3, 4, 3, 3)
    with pytest.raises(ValueError, match="model_output shape"):
        ddim_step(x4[:1], x4, 0.5, 0.6, 0.1)
    with pytest.raises(ValueError, match="4-D"):
        ddim_step(x4[0], x4[0], 0.5, 0.6, 0.1)
    with pytest.raises(ValueError, match="not both"):
        ddim_step(x4, x4, 0.5, 0.6, 0.1, noise=x4, prev_sample=x4)
    with pytest.raises(ValueError, match="5-D"):
        ddim_step(x4, x4, 0.5, 0.6, 0.1, frame_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        ddim_step(x5, x5, 0.5, 0.6, 0.1, frame_mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match="a_t must be"):
        ddim_step(x4, x4, torch.tensor([0.5, 0.5, 0.5]), 0.6, 0.1)
    with pytest.raises(ValueError, match="unknown prediction"):
        ddim_step(x4, x4, 0.5, 0.6, 0.1, prediction="epsilon")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_step_makes_no_host_sync_on_cuda():
    plan = make_ddim_plan(SCHED, 10).to("cuda")
    x = torch.randn(2, 16, 4, 8, 8, device="cuda")
    mask = torch.ones(2, 16, dtype=torch.bool, device="cuda")
    gen = torch.Generator(device="cuda").manual_seed(0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i in range(len(plan)):
            out = ddim_step(x, x, *plan.coefficients(i), generator=gen, frame_mask=mask)
            x = out.x_prev
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(x).all()
