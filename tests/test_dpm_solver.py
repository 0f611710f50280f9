"""DPM-Solver++(2M): its plan, closed-form accuracy and order, known frames, options and the generator.

Closed form: data x0 ~ N(mu, s^2) per element. The optimal networks are
eps*(x, t) = sqrt(1 - a) (x - sqrt(a) mu) / (a s^2 + 1 - a) (v* follows), a = alpha-bar(t), and the
probability-flow ODE maps x_T (taken at the first timestep, a_T) along
x(a) = sqrt(a) mu + q(a) z,  q(a) = sqrt(a s^2 + 1 - a),  z = (x_T - sqrt(a_T) mu) / q(a_T),
so x0 = mu + s z. Every solver here is affine in x_T and exact when z = 0, so its error is K z with one
scalar K per run: errors are compared through K (``error_coefficient``).
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import torch

from napari_gem3d.diffusion import (
    DDIMPlan,
    DPMPlan,
    NoiseSchedule,
    ddim_timesteps,
    make_ddim_plan,
    make_dpm_plan,
)
from napari_gem3d.diffusion.dpm import dpm_plan_for_timesteps
from napari_gem3d.sampling import Cancelled, CancelToken, SamplingOptions
from napari_gem3d.sampling.denoise import Known, SeededNoise, denoise
from sampler_helpers import PointMassNet, collect, phantom_mask, request, tiny_bundle

EPS = NoiseSchedule()  # the official schedule: scaled linear, eps-prediction
V_COSINE = NoiseSchedule(kind="cosine", prediction="v")
SCHEDULES = pytest.mark.parametrize("schedule", [EPS, V_COSINE], ids=["eps-scaled_linear", "v-cosine"])
MU, SD = 0.5, 1.0  # unit-variance latents with an offset


# ----------------------------------------------------------------------------------------- closed form
def gaussian_net(schedule: NoiseSchedule, mu: float = MU, s: float = SD):
    """The optimal eps (or v) network for x0 ~ N(mu, s^2), evaluated in float64."""
    ac = torch.tensor(np.array(schedule.alphas_cumprod))

    def net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = ac[t].reshape(-1, *([1] * (x.ndim - 1)))
        xd = x.double()
        eps = (1 - a).sqrt() * (xd - a.sqrt() * mu) / (a * s**2 + 1 - a)
        if schedule.prediction == "eps":
            return eps.float()
        x0 = (xd - (1 - a).sqrt() * eps) / a.sqrt()
        return (a.sqrt() * eps - (1 - a).sqrt() * x0).float()

    return net


def x_T(seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(seed))


def standard_z(schedule, plan, xt: torch.Tensor, mu: float = MU, s: float = SD) -> torch.Tensor:
    a_T = float(schedule.alphas_cumprod[int(plan.t[0])])
    return (xt.double() - math.sqrt(a_T) * mu) / math.sqrt(a_T * s**2 + 1 - a_T)


def exact(z: torch.Tensor, a: float, mu: float = MU, s: float = SD) -> torch.Tensor:
    """The probability-flow ODE solution at alpha-bar ``a`` (a = 1: x0 = mu + s z)."""
    return math.sqrt(a) * mu + math.sqrt(a * s**2 + 1 - a) * z


def error_coefficient(got: torch.Tensor, z: torch.Tensor, a: float) -> float:
    e = got.double() - exact(z, a)
    k = float((e * z).sum() / (z * z).sum())
    assert torch.allclose(e, k * z, atol=2e-5), "the error of a linear solver on this problem is K z"
    return k


def solve(schedule, plan, xt, levels=()):
    """Run denoise on the Gaussian problem; also return x right after landing on each timestep in ``levels``."""
    seen = {}

    def hook(i, x_t, x_next, log_prob):
        assert log_prob is None or isinstance(plan, DDIMPlan)
        if i + 1 < len(plan) and int(plan.t[i + 1]) in levels:
            seen[int(plan.t[i + 1])] = x_next.clone()

    out = denoise(gaussian_net(schedule), xt, plan, [SeededNoise(0, 0)], prediction=schedule.prediction,
                  on_step=hook)
    return out, seen


def last_two_steps(schedule, t_a: int, t_b: int, delta: float, s: float = SD) -> float:
    """Predicted K of the run's last two steps, from the error coefficient ``delta`` at t_a.

    t_a -> t_b (= 1) is a first-order step: x_b = (sig_b/sig_a) x_a + (al_b - al_a sig_b/sig_a) D(x_a); then
    t_b -> clean returns D(x_b). D(x) = mu + g (x - al mu), g = al s^2 / q^2, is the exact posterior mean,
    D = mu + s rho z on the exact path (rho = al s / q). With x_a = exact + delta z this gives
    K = s (rho_b - 1) + g_b kappa + F delta, kappa = (sig_b/sig_a) q_a + c s rho_a - q_b,
    F = g_b (sig_b/sig_a + c g_a), c = al_b - al_a sig_b/sig_a.
    """
    def parts(t):
        a = float(schedule.alphas_cumprod[t])
        al, sig, q = math.sqrt(a), math.sqrt(1 - a), math.sqrt(a * s**2 + 1 - a)
        return al, sig, q, al * s / q, al * s**2 / q**2

    al_a, sig_a, q_a, rho_a, g_a = parts(t_a)
    al_b, sig_b, q_b, rho_b, g_b = parts(t_b)
    c = al_b - al_a * sig_b / sig_a
    kappa = sig_b / sig_a * q_a + c * s * rho_a - q_b
    return s * (rho_b - 1) + g_b * kappa + g_b * (sig_b / sig_a + c * g_a) * delta


@SCHEDULES
@pytest.mark.parametrize("steps", [10, 12])
def test_closed_form_few_steps_lands_on_the_analytic_x0(schedule, steps):
    xt = x_T()
    plan = make_dpm_plan(schedule, steps)
    t_a = int(plan.t[-2])  # the timestep before the last one (t = 1 + T // steps ... ; the last is t = 1)
    out, seen = solve(schedule, plan, xt, levels=(t_a,))
    z = standard_z(schedule, plan, xt)
    k = error_coefficient(out, z, 1.0)
    delta = error_coefficient(seen[t_a], z, float(schedule.alphas_cumprod[t_a]))
    # Tolerance, derived: the second-order steps up to t_a leave a small error (delta: under 0.5% of s), and
    # the two first-order steps that follow (t_a -> 1, then the posterior mean at t = 1) add a known amount:
    assert abs(delta) < 0.005 * SD
    assert k == pytest.approx(last_two_steps(schedule, t_a, 1, delta), abs=2e-5)
    rms = float((out.double() - exact(z, 1.0)).pow(2).mean().sqrt())
    bound = abs(last_two_steps(schedule, t_a, 1, 0.0)) + 1.2 * abs(delta)  # |F| < 1.2 on these levels
    assert rms <= bound * float(z.pow(2).mean().sqrt()) + 1e-5
    assert rms < 0.05  # 1/20 of the data's spread s = 1

    # DDIM (eta = 0) with the same timesteps, against its own endpoint (it stops at alpha-bar[0], not 1)
    ddim, _ = solve(schedule, make_ddim_plan(schedule, steps, 0.0), xt)
    k_ddim = error_coefficient(ddim, z, float(schedule.alphas_cumprod[0]))
    assert abs(k_ddim) > 2.5 * abs(k), (k_ddim, k)


def fixed_grid(n: int) -> np.ndarray:
    """n uniform intervals from t = 961 to 161, then 81 and 1: refining it halves every step up to t = 161."""
    return np.append(np.linspace(961, 161, n + 1).round().astype(np.int64), [81, 1])


def ddim_plan_on(schedule, ts: np.ndarray) -> DDIMPlan:
    t = torch.from_numpy(ts)
    t_prev = torch.from_numpy(np.append(ts[1:], 0))
    ac = schedule.alphas_cumprod_f32
    return DDIMPlan(t=t, t_prev=t_prev, a_t=ac[t], a_prev=ac[t_prev], sigma=torch.zeros(len(ts)), eta=0.0,
                    renoise_a=torch.cat([ac[t[:1]], ac[t_prev]]))


@SCHEDULES
def test_second_order_error_drops_about_4x_when_steps_double(schedule):
    """On one grid refined twice, measured at t = 161 (away from t = 1, where DDIM's uniform spacing makes the
    steps in log-SNR shrink only logarithmically): DPM-Solver++(2M) ~4x per doubling, DDIM 2x."""
    xt = x_T()
    a = float(schedule.alphas_cumprod[161])
    dpm, ddim = [], []
    for n in (10, 20, 40):
        ts = fixed_grid(n)
        for plan, errors in ((dpm_plan_for_timesteps(schedule, ts), dpm), (ddim_plan_on(schedule, ts), ddim)):
            _, seen = solve(schedule, plan, xt, levels=(161,))
            errors.append(abs(error_coefficient(seen[161], standard_z(schedule, plan, xt), a)))
    dpm_ratios = [dpm[i] / dpm[i + 1] for i in range(2)]
    ddim_ratios = [ddim[i] / ddim[i + 1] for i in range(2)]
    assert all(3.2 < r < 8 for r in dpm_ratios), dpm_ratios  # second order (-> 4 as steps grow)
    assert all(1.8 < r < 2.2 for r in ddim_ratios), ddim_ratios  # first order
    assert dpm[0] < ddim[0] / 5


# ----------------------------------------------------------------------------------------- the plan
@pytest.mark.parametrize("steps", [1, 2, 3, 10, 50])
def test_plan_uses_the_ddim_timesteps_and_lands_on_clean_data(steps):
    plan, ddim = make_dpm_plan(EPS, steps), make_ddim_plan(EPS, steps)
    assert isinstance(plan, DPMPlan) and len(plan) == steps and plan.eta == 0.0
    assert torch.equal(plan.t, ddim.t) and torch.equal(plan.a_t, ddim.a_t)
    assert plan.t.dtype == torch.int64 and all(v.dtype == torch.float32 for v in (plan.a_t, plan.coef, plan.w))
    assert torch.equal(plan.renoise_a[:-1], plan.a_t)  # the level of x at each model call
    assert torch.equal(plan.renoise_a[1:], plan.a_next) and plan.renoise_a[-1] == 1.0
    assert plan.ratio[-1] == 0.0 and plan.coef[-1] == 1.0  # last step: x = x0 predicted at t = 1
    assert plan.w[0] == 0.0 and torch.all(plan.w[-2:] == 0.0)  # first order: first, onto t = 1, to clean
    assert torch.all(plan.w[1:-2] > 0.0)
    moved = plan.to("cpu")
    assert isinstance(moved, DPMPlan) and torch.equal(moved.coef, plan.coef)


def test_plan_coefficients_match_the_solver_formula():
    plan = make_dpm_plan(EPS, 10, lower_order_final=False)
    ac = EPS.alphas_cumprod
    lam = [0.5 * math.log(ac[t] / (1 - ac[t])) for t in plan.t.tolist()]
    for i in range(1, 8):
        t, tn = int(plan.t[i]), int(plan.t[i + 1])
        h, h_prev = lam[i + 1] - lam[i], lam[i] - lam[i - 1]
        assert float(plan.ratio[i]) == pytest.approx(math.sqrt((1 - ac[tn]) / (1 - ac[t])), rel=1e-6)
        assert float(plan.coef[i]) == pytest.approx(math.sqrt(ac[tn]) * (1 - math.exp(-h)), rel=1e-6)
        assert float(plan.w[i]) == pytest.approx(h / (2 * h_prev), rel=1e-6)  # 1 / (2 r), r = h_prev / h
    assert plan.w[-2] > 1.5  # onto t = 1: the widest step in log-SNR (why lower_order_final is the default)
    assert make_dpm_plan(EPS, 10).w[-2] == 0.0


def test_plan_validation():
    with pytest.raises(ValueError, match="decrease"):
        dpm_plan_for_timesteps(EPS, np.array([1, 5, 9]))
    with pytest.raises(ValueError, match="decrease"):
        dpm_plan_for_timesteps(EPS, np.array([1000, 5]))
    with pytest.raises(ValueError, match="integer"):
        dpm_plan_for_timesteps(EPS, np.array([9.0, 1.0]))
    with pytest.raises(ValueError, match="num_steps"):
        make_dpm_plan(EPS, 0)


# ----------------------------------------------------------------------------------------- known frames
class Recording:
    """A NoiseSource that keeps every draw."""

    def __init__(self, seed: int, stream: int):
        self.inner = SeededNoise(seed, stream)
        self.draws: list[tuple[str, torch.Tensor]] = []

    def draw(self, kind, shape):
        t = self.inner.draw(kind, shape)
        self.draws.append((kind, t.clone()))
        return t


def known_frames(batch=2, frames=5, seed=3) -> Known:
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(batch, frames, dtype=torch.bool)
    mask[0, [0, 4]] = True
    mask[1, 2] = True
    lat = torch.randn(batch, frames, 2, 4, 4, generator=g) * mask[:, :, None, None, None]
    return Known(mask, lat)


def mixing_net(x, t):  # frames see each other (as the volume UNet), so known frames steer the others
    return 0.3 * x + 0.2 * x.mean(dim=1, keepdim=True) + 1e-3 * t.float().reshape(-1, 1, 1, 1, 1)


def test_known_frames_are_renoised_from_known_draws_at_the_level_of_x():
    steps = 6
    plan = make_dpm_plan(EPS, steps)
    known = known_frames()
    noises = [Recording(0, b) for b in range(2)]
    x = torch.randn(2, 5, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    inputs = []

    def hook(i, x_t, x_next, log_prob):
        assert log_prob is None
        inputs.append(x_t.clone())

    out = denoise(mixing_net, x, plan, noises, known=known, on_step=hook)
    assert len(inputs) == steps
    for b, noise in enumerate(noises):
        assert [k for k, _ in noise.draws] == ["known"] * (steps + 1)  # deterministic: no "ddim" draws
        frames = torch.nonzero(known.mask[b]).flatten()
        kn = known.latents[b, frames]
        states = [*inputs, out]  # x at each model call (level a_t[i]), then the result (level 1)
        for j, state in enumerate(states):
            a = plan.renoise_a[j]
            assert a == (plan.a_t[j] if j < steps else 1.0)
            expected = a.sqrt() * kn + (1.0 - a).sqrt() * noise.draws[j][1]
            assert torch.equal(state[b, frames], expected)
        assert torch.equal(out[b, frames], kn)  # the final step lands at t = 0: the clean known latents


def per_frame_net(x, t):  # no mixing across frames
    return 0.3 * x + 1e-3 * t.float().reshape(-1, 1, 1, 1, 1)


def test_generated_frames_do_not_depend_on_known_values_when_the_network_ignores_them():
    plan = make_dpm_plan(EPS, 8)
    x = torch.randn(2, 5, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    known = known_frames()
    other = Known(known.mask, known.latents * -3.0 + 1.0)
    outs = [denoise(per_frame_net, x, plan, [SeededNoise(0, b) for b in range(2)], known=k)
            for k in (known, other, None)]
    free = ~known.mask
    assert torch.equal(outs[0][free], outs[1][free]) and torch.equal(outs[0][free], outs[2][free])
    assert not torch.equal(outs[0][known.mask], outs[1][known.mask])
    mixed = [denoise(mixing_net, x, plan, [SeededNoise(0, b) for b in range(2)], known=k) for k in (known, other)]
    assert not torch.allclose(mixed[0][free], mixed[1][free])  # sanity: a mixing network does see them


def test_cancel_is_checked_before_every_model_call():
    token = CancelToken()
    calls = []

    def net(x, t):
        calls.append(int(t[0]))
        if len(calls) == 3:
            token.cancel()
        return per_frame_net(x, t)

    with pytest.raises(Cancelled):
        denoise(net, torch.zeros(1, 5, 2, 4, 4), make_dpm_plan(EPS, 8), [SeededNoise(0, 0)], cancel=token)
    assert len(calls) == 3


# ----------------------------------------------------------------------------------------- options
def test_sampling_options_solver():
    assert SamplingOptions().solver == "ddim"
    assert SamplingOptions(solver="dpmpp2m", eta=0.5).solver == "dpmpp2m"
    with pytest.raises(ValueError, match=r"solver must be one of 'ddim', 'dpmpp2m', 'dpmpp2m_sde', got 'euler'"):
        SamplingOptions(solver="euler")
    with pytest.raises(ValueError, match="official_compat"):
        SamplingOptions(solver="dpmpp2m", official_compat=True)


def test_cli_solver_option():
    from napari_gem3d.commands.common import add_sampling_options, sampling_options

    p = argparse.ArgumentParser()
    add_sampling_options(p)

    def chosen(*argv):
        options = sampling_options(p.parse_args(["--device", "cpu", *argv]))
        return options.solver, options.steps, options.eta

    assert chosen() == ("dpmpp2m", 6, 0.0)  # --quality fast, the default
    assert chosen("--quality", "standard") == ("ddim", 25, 0.0)  # deterministic DDIM
    assert chosen("--quality", "official") == ("ddim", 50, 1.0)  # the paper's
    assert chosen("--quality", "standard", "--eta", "1") == ("ddim", 25, 1.0)
    assert chosen("--official-compat") == ("ddim", 50, 1.0)  # the official sampler unless asked otherwise
    assert chosen("--official-compat", "--steps", "20") == ("ddim", 20, 1.0)
    assert chosen("--steps", "12") == ("dpmpp2m", 12, 0.0)
    assert chosen("--solver", "ddim") == ("ddim", 25, 0.0)  # the first DDIM preset: standard
    assert chosen("--solver", "ddim", "--eta", "1") == ("ddim", 25, 1.0)
    assert chosen("--solver", "dpmpp2m_sde") == ("dpmpp2m_sde", 6, 0.0)  # no preset of its own: fast's steps
    assert chosen("--quality", "official", "--solver", "dpmpp2m", "--steps", "10") == ("dpmpp2m", 10, 1.0)
    assert chosen("--solver", "dpmpp2m_sde", "--steps", "6") == ("dpmpp2m_sde", 6, 0.0)
    for bad in (["--solver", "euler"], ["--quality", "best"], ["--steps", "0"]):
        with pytest.raises(SystemExit):
            p.parse_args(bad)


# ----------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def bundle():
    return tiny_bundle()


def test_generate_with_dpm_solver(bundle):
    _, result = collect(bundle, request(steps=8, solver="dpmpp2m", seed=2))
    assert np.isfinite(result.volume).all() and np.isfinite(result.latents).all()
    assert result.provenance["solver"] == "dpmpp2m" and result.provenance["steps"] == 8
    _, again = collect(bundle, request(steps=8, solver="dpmpp2m", seed=2, eta=0.0))
    assert np.array_equal(result.volume, again.volume)  # deterministic, and eta does not apply
    _, ddim = collect(bundle, request(steps=8, seed=2))
    assert ddim.provenance["solver"] == "ddim"
    assert not np.allclose(result.latents, ddim.latents)


def test_generate_lands_on_the_point_mass(bundle, monkeypatch):
    """x0-hat constant along the path: the solver is exact and ends on x0 itself (DDIM stops at abar[0])."""
    monkeypatch.setitem(bundle.unets, "baseline", PointMassNet(bundle.config.schedule))
    req = request(mode="baseline", steps=5, solver="dpmpp2m", mask=phantom_mask(20))
    _, result = collect(bundle, req)
    enc = torch.from_numpy(bundle.config.labels.encode(req.mask))
    target = bundle.codec.mask_condition_latents(enc)[:, :4]
    assert torch.allclose(torch.from_numpy(result.latents), target, atol=1e-5)


def test_generate_informed_with_dpm_solver(bundle):
    from napari_gem3d.sampling.informed import generate_informed

    a = generate_informed(bundle, 0.3, seed=1, steps=4, device="cpu", solver="dpmpp2m")
    b = generate_informed(bundle, 0.3, seed=1, steps=4, device="cpu")
    assert np.isfinite(a.latent).all() and not np.allclose(a.latent, b.latent)
    with pytest.raises(ValueError, match="solver"):
        generate_informed(bundle, 0.3, steps=4, device="cpu", solver="euler")


def test_timesteps_helper_agrees():
    assert make_dpm_plan(EPS, 25).t.tolist() == ddim_timesteps(25)[::-1].tolist()


# ----------------------------------------------------------------------------------------- the SDE form
@SCHEDULES
@pytest.mark.parametrize("steps", [6, 25])
def test_sde_plan_keeps_the_marginal_of_an_exact_prediction(schedule, steps):
    """x ~ N(alpha x0, sigma^2) and an exact x0 -> the next x ~ N(alpha' x0, sigma'^2): the mean's coefficient
    ratio * alpha + coef is alpha' and ratio^2 sigma^2 + noise^2 is sigma'^2 at every step (float64 algebra on
    the float32 table); the last step lands on D (ratio 0, coef 1, no noise). The ODE table draws no noise."""
    sde, ode = make_dpm_plan(schedule, steps, stochastic=True), make_dpm_plan(schedule, steps)
    alpha_next = torch.cat([sde.alpha[1:], torch.ones(1)]).double()
    sigma_next = torch.cat([sde.sigma[1:], torch.zeros(1)]).double()
    r, c, n = sde.ratio.double(), sde.coef.double(), sde.noise.double()
    torch.testing.assert_close(r * sde.alpha.double() + c, alpha_next, rtol=0, atol=1e-6)
    torch.testing.assert_close((r * sde.sigma.double()) ** 2 + n**2, sigma_next**2, rtol=0, atol=1e-6)
    assert (float(r[-1]), float(c[-1]), float(n[-1])) == (0.0, 1.0, 0.0) and bool((n[:-1] > 0).all())
    assert (sde.solver, sde.eta, ode.solver, ode.eta) == ("dpmpp2m_sde", 1.0, "dpmpp2m", 0.0)
    assert not ode.stochastic and bool((ode.noise == 0).all()) and torch.equal(sde.w, ode.w)
    assert bool((sde.ratio[:-1] < ode.ratio[:-1]).all())  # exp(-h) < 1: the SDE forgets more of x


def test_sde_samples_the_point_mass_marginals():
    """A network whose x0 prediction is exact for a point mass at c: started from N(alpha_T c, sigma_T^2),
    the SDE steps stay on the forward marginals N(alpha_t c, sigma_t^2) (checked on 4096 samples per level:
    mean within 4 standard errors, variance within 10 %) and land exactly on c."""
    schedule = EPS
    plan = make_dpm_plan(schedule, 6, stochastic=True)
    c = 0.7
    batch = 4096

    def net(x, t):  # eps prediction consistent with x0 = c exactly
        a = schedule.alphas_cumprod_f32[t].view(-1, *([1] * (x.dim() - 1)))
        return (x - a.sqrt() * c) / (1 - a).sqrt()

    levels = []

    def hook(i, x_t, x_next, log_prob):
        levels.append((i, x_next.double()))

    x = math.sqrt(float(plan.a_t[0])) * c + math.sqrt(1 - float(plan.a_t[0])) * torch.randn(
        batch, 1, 1, 1, generator=torch.Generator().manual_seed(0))
    noises = [SeededNoise(0, b) for b in range(batch)]
    out = denoise(net, x, plan, noises, prediction="eps", on_step=hook)
    for i, xs in levels[:-1]:
        a = float(plan.a_next[i])
        mean, var = float(xs.mean()), float(xs.var())
        assert abs(mean - math.sqrt(a) * c) < 4 * math.sqrt((1 - a) / batch) + 1e-6, (i, mean)
        assert var == pytest.approx(1 - a, rel=0.1), (i, var)
    assert torch.allclose(out, torch.full_like(out, c), atol=1e-5)


def test_generate_with_the_sde_solver_draws_step_noise_from_the_slice_fields(bundle):
    """Seeded and repeatable; a different seed differs; with the slice prior its step noise is the slice-indexed
    fields (provenance step_noise "slices"), so a regeneration would not warn of seams."""
    from napari_gem3d.sampling.regenerate import seam_warning

    _, one = collect(bundle, request(steps=6, solver="dpmpp2m_sde", seed=3, slice_noise_correlation=0.9))
    _, again = collect(bundle, request(steps=6, solver="dpmpp2m_sde", seed=3, slice_noise_correlation=0.9))
    _, other = collect(bundle, request(steps=6, solver="dpmpp2m_sde", seed=4, slice_noise_correlation=0.9))
    _, ode = collect(bundle, request(steps=6, solver="dpmpp2m", seed=3, slice_noise_correlation=0.9))
    assert np.array_equal(one.volume, again.volume) and not np.allclose(one.latents, other.latents)
    assert not np.allclose(one.latents, ode.latents)
    assert one.provenance["solver"] == "dpmpp2m_sde" and one.provenance["step_noise"] == "slices"
    assert seam_warning(one.provenance) is None and ode.provenance["step_noise"] is None
    _, windows = collect(bundle, request(steps=6, solver="dpmpp2m_sde", seed=3, slice_noise_correlation=0.0))
    assert windows.provenance["step_noise"] == "windows"
    warning = seam_warning(windows.provenance)  # names the SDE solver, not DDIM
    assert warning.startswith("this result was made with the DPM-Solver++(2M) SDE solver") and "DDIM (" not in warning
