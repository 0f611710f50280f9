"""PPO arithmetic (as trl tests it), group advantages, and the direction of one update."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import multiwindow_condition, random_bundle
from training.rl.config import ParamsConfig, PPOConfig, RolloutConfig
from training.rl.policy import gaussian_kl
from training.rl.ppo import clipped_surrogate, combine_advantages, zscore_by_group
from training.rl.rewards.components import FunctionReward, RewardSet
from training.rl.trainer import RLTrainer

pytestmark = pytest.mark.rl


def test_loss_is_one_for_negative_advantage_at_ratio_one():
    lp = torch.zeros(4, requires_grad=True)
    loss, ratio, clipped = clipped_surrogate(lp, torch.zeros(4), torch.full((4,), -1.0), clip=1e-4)
    assert float(loss) == 1.0
    assert torch.equal(ratio, torch.ones(4)) and not clipped.any()


@pytest.mark.parametrize("adv, ratio, grad_zero", [
    (1.0, 1.5, True),  # positive advantage, ratio already above 1 + clip: no further push
    (-1.0, 0.5, True),  # negative advantage, ratio already below 1 - clip
    (1.0, 0.5, False),  # the unclipped (pessimistic) side keeps its gradient
    (-1.0, 1.5, False),
    (1.0, 1.0, False),
])
def test_clipped_side_has_zero_gradient(adv, ratio, grad_zero):
    lp = torch.tensor([float(np.log(ratio))], requires_grad=True)
    loss, _, clipped = clipped_surrogate(lp, torch.zeros(1), torch.tensor([adv]), clip=1e-4)
    loss.backward()
    assert (float(lp.grad.abs()) == 0.0) == grad_zero
    assert bool(clipped[0]) == grad_zero
    if not grad_zero:  # d(-A r)/d lp = -A r
        assert float(lp.grad) == pytest.approx(-adv * ratio, rel=1e-6)


def test_group_zscore_with_batch_fallback():
    v = np.array([1.0, 2.0, 3.0, 5.0, 5.0, 5.0])
    g = np.array([0, 0, 0, 1, 1, 1])
    z, fb = zscore_by_group(v, g)
    np.testing.assert_allclose(z[:3], (v[:3] - 2.0) / np.std(v[:3]))
    np.testing.assert_allclose(z[3:], (5.0 - v.mean()) / v.std())  # constant group: batch statistics
    assert fb.tolist() == [False] * 3 + [True] * 3


def test_combined_advantages_are_normalised_per_group_weighted_and_clipped():
    groups = [0, 0, 0, 0, 1, 1, 1, 1]
    # component a separates group 0 by +-1; component b is 100x larger but per-group normalised away
    a = [np.array([x]) for x in (1, -1, 1, -1, 0, 0, 0, 10)]
    b = [np.array([100 * x]) for x in (0, 1, 2, 3, 1, 1, 1, 2)]
    adv, stats = combine_advantages({"a": a, "b": b}, {"a": 1.0, "b": 0.0}, groups, adv_clip=1.5)
    flat = np.concatenate(adv)
    np.testing.assert_allclose(flat[:4], [1, -1, 1, -1])  # weight 0 removes b entirely
    assert flat[7] == 1.5 and stats["adv/clipped_frac"] == pytest.approx(1 / 8)  # sqrt(3) clipped to 1.5
    # per-window components give one advantage per window, normalised per (group, window index)
    w = [np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([2.0, 0.0]), np.array([0.0, 3.0])]
    adv, _ = combine_advantages({"w": w}, {"w": 1.0}, [0, 0, 0, 0], renormalise=False)
    assert all(x.shape == (2,) for x in adv)
    col0 = np.array([x[0] for x in adv])
    np.testing.assert_allclose(col0, (np.array([1, 0, 2, 0]) - 0.75) / np.std([1, 0, 2, 0]))


def test_kl_is_the_gaussian_kl_over_generated_frames():
    g = torch.Generator().manual_seed(0)
    m, mr = torch.randn(2, 3, 4, 5, 5, generator=g), torch.randn(2, 3, 4, 5, 5, generator=g)
    std = torch.tensor([0.5, 2.0]).reshape(2, 1, 1, 1, 1)
    gen = torch.tensor([[1, 1, 0], [0, 1, 1]], dtype=torch.bool)
    kl = gaussian_kl(m, mr, std, gen)
    for b in range(2):
        p = torch.distributions.Normal(m[b][gen[b]], std[b, 0, 0, 0, 0])
        q = torch.distributions.Normal(mr[b][gen[b]], std[b, 0, 0, 0, 0])
        assert float(kl[b]) == pytest.approx(float(torch.distributions.kl_divergence(p, q).mean()), rel=1e-5)


def _mean_log_prob(trainer, rollout) -> float:
    """The mean log-prob of a rollout's recorded actions under the trainer's current policy."""
    rows = [(0, j, k) for j, ws in enumerate(rollout.windows) for k in range(ws.num_steps)]
    batch = trainer._batch([rollout], [np.zeros(len(rollout.windows))], rows)
    from training.rl.policy import score_steps

    with torch.no_grad():
        return float(score_steps(trainer.unet, batch).log_prob.mean())


@pytest.mark.parametrize("advantage", [1.0, -1.0])
def test_one_update_moves_the_trajectory_log_prob_with_the_advantage(advantage):
    bundle = random_bundle(3)
    reward = RewardSet([FunctionReward("none", lambda r, c: 0.0)])
    trainer = RLTrainer(bundle, reward, rollout=RolloutConfig(steps=4, group_size=2),
                        ppo=PPOConfig(lr=1e-4, updates_per_epoch=1, minibatch=64), params=ParamsConfig(mode="all"),
                        log=lambda s: None)
    (rollout,) = trainer.rollouts([multiwindow_condition()], 0)[:1]
    before = _mean_log_prob(trainer, rollout)
    stats = trainer.update([rollout], [np.full(len(rollout.windows), advantage)])
    after = _mean_log_prob(trainer, rollout)
    assert stats["ratio_dev_first"] < 1e-5 and stats["grad_norm"] > 0
    assert np.sign(after - before) == np.sign(advantage)
    assert abs(after - before) > 1e-4
