"""Step log-probabilities, rollout recording and the ratio-1 invariant (reference-rl.md section 8.1, 1-3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import multiwindow_condition, random_bundle
from training.rl.config import ParamsConfig, PPOConfig, RolloutConfig
from training.rl.policy import StepBatch, network_output, score_steps, set_trainable
from training.rl.rewards.components import FunctionReward, RewardSet
from training.rl.rollout import collect
from training.rl.trainer import RLTrainer

from napari_gem3d.diffusion import ddim_step, make_ddim_plan
from napari_gem3d.diffusion.schedule import NoiseSchedule

pytestmark = pytest.mark.rl


def _rollouts(bundle, n=2, steps=5):
    return collect(bundle, [multiwindow_condition()], group_size=n, seeds=[list(range(n))], steps=steps, eta=1.0)


def _batch(rows) -> StepBatch:
    """rows: (WindowSteps, k) pairs -> a StepBatch (advantages 0)."""
    return StepBatch(
        x_t=torch.stack([w.x_t[k] for w, k in rows]), x_prev=torch.stack([w.x_prev[k] for w, k in rows]),
        cond=torch.stack([w.cond for w, _ in rows]), generated=torch.stack([w.generated for w, _ in rows]),
        t=torch.stack([w.t[k] for w, k in rows]), a_t=torch.stack([w.a_t[k] for w, k in rows]),
        a_prev=torch.stack([w.a_prev[k] for w, k in rows]), sigma=torch.stack([w.sigma[k] for w, k in rows]),
        old_log_prob=torch.stack([w.log_prob[k] for w, k in rows]), advantage=torch.zeros(len(rows)),
    )


def test_step_log_prob_is_the_normal_density_mean_over_generated_frames():
    g = torch.Generator().manual_seed(0)
    x_t, out = torch.randn(3, 5, 4, 6, 6, generator=g), torch.randn(3, 5, 4, 6, 6, generator=g)
    plan = make_ddim_plan(NoiseSchedule(), 10, 1.0)
    a_t, a_prev, sigma = plan.a_t[[0, 4, 9]], plan.a_prev[[0, 4, 9]], plan.sigma[[0, 4, 9]]
    generated = torch.tensor([[1, 1, 1, 1, 1], [0, 1, 1, 1, 0], [0, 0, 0, 1, 1]], dtype=torch.bool)
    step = ddim_step(out, x_t, a_t, a_prev, sigma, generator=g, frame_mask=generated, return_log_prob=True)
    dist = torch.distributions.Normal(step.mean, sigma.reshape(-1, 1, 1, 1, 1))
    dens = dist.log_prob(step.x_prev)  # (B, F, C, H, W)
    expected = torch.stack([dens[b][generated[b]].mean() for b in range(3)])
    torch.testing.assert_close(step.log_prob, expected, rtol=1e-6, atol=1e-6)
    # the known frames really are excluded: changing them leaves the log-prob unchanged
    x2 = step.x_prev.clone()
    x2[~generated] += 10.0
    again = ddim_step(out, x_t, a_t, a_prev, sigma, prev_sample=x2, frame_mask=generated, return_log_prob=True)
    torch.testing.assert_close(again.log_prob, step.log_prob)


def test_recorded_steps_are_what_the_sampler_did():
    bundle = random_bundle()
    (r,) = _rollouts(bundle, n=1)
    plan = [w for w in r.plan if w.write]
    assert len(r.windows) == len(plan) == 3
    for ws, w in zip(r.windows, plan, strict=False):
        assert ws.window == w
        # known frames (true start slice, overlaps) are environment input, not policy actions
        assert ws.generated.tolist() == [f not in w.known for f in range(w.length)]
        assert (~ws.generated).any()
        # sigma > 0 on every recorded step; the last step goes to alpha-bar[0] < 1, not to 1
        assert bool((ws.sigma > 0).all()) and int(ws.t_prev[-1]) == 0 and float(ws.a_prev[-1]) < 1.0
        # the recorded old log-prob is Normal(mean, sigma).log_prob(x_prev) over generated frames
        for k in range(ws.num_steps):
            with torch.no_grad():
                out = network_output(bundle.volume, ws.x_t[k][None], ws.cond[None], ws.t[k][None])
                mean = ddim_step(out, ws.x_t[k][None], ws.a_t[k], ws.a_prev[k], ws.sigma[k],
                                 prev_sample=ws.x_prev[k][None]).mean[0]
            dens = torch.distributions.Normal(mean, ws.sigma[k]).log_prob(ws.x_prev[k])
            torch.testing.assert_close(ws.log_prob[k], dens[ws.generated].mean(), rtol=1e-5, atol=1e-5)
    # exact conditions: the informed part of a later window is the sampled latent it propagates from
    lat_channels = r.latents.shape[1]
    for ws in r.windows:
        if ws.window.informed_slice is not None:
            np.testing.assert_array_equal(ws.cond[0, -lat_channels:].numpy(), r.latents[ws.window.informed_slice])
            inf = ws.cond[:, -lat_channels:]
            assert torch.equal(inf, inf[:1].expand_as(inf))


@pytest.mark.parametrize("mode", ["all", "lora"])
def test_unchanged_model_gives_ratio_one(mode):
    bundle = random_bundle(1)
    if mode == "lora":  # adapters added before the rollout, as the trainer does
        set_trainable(bundle.volume, "lora")
    rollouts = _rollouts(bundle, n=2)
    rows = [(ws, k) for r in rollouts for ws in r.windows for k in range(ws.num_steps)]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(rows))
    devs = []
    for chunk in np.array_split(order, 5):  # minibatches that mix windows, steps and rollouts
        batch = _batch([rows[i] for i in chunk])
        with torch.no_grad():
            lp = score_steps(bundle.volume, batch).log_prob
        devs.append(float((torch.exp(lp - batch.old_log_prob) - 1).abs().max()))
    assert max(devs) < 1e-5


def test_trainer_first_minibatch_ratio_is_one():
    bundle = random_bundle(2)
    reward = RewardSet([FunctionReward("bright", lambda r, c: float(r.latents.mean()))])
    trainer = RLTrainer(bundle, reward, rollout=RolloutConfig(steps=4, group_size=3, conditions=1),
                        ppo=PPOConfig(minibatch=4, updates_per_epoch=2, kl_beta=0.1), params=ParamsConfig(mode="lora"),
                        log=lambda s: None)
    log = trainer.epoch([multiwindow_condition()], 0)
    assert log["ratio_dev_first"] < 1e-5
    assert log["rows"] == 3 * 3 * 4  # 3 samples x 3 windows x 4 steps
    assert log["kl_ref"] >= 0.0 and np.isfinite(log["loss"])
