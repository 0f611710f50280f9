"""Two gloo ranks, each updating on its half of the recorded steps, end with the gradient of one process
that updates on all of them (gradients are all-reduced before every optimizer step)."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from helpers import multiwindow_condition, random_bundle
from safetensors.torch import load_file, save_file
from training.rl.config import ParamsConfig, PPOConfig, RolloutConfig
from training.rl.rewards.components import FunctionReward, RewardSet
from training.rl.trainer import DistState, RLTrainer

pytestmark = pytest.mark.rl


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _trainer(rank=0, world=1) -> RLTrainer:
    reward = RewardSet([FunctionReward("bright", lambda r, c: float(r.latents.mean()))])
    return RLTrainer(random_bundle(4), reward, rollout=RolloutConfig(steps=3, group_size=2),
                     ppo=PPOConfig(updates_per_epoch=1, minibatch=6, grad_clip=0.0, lr=1e-4),
                     params=ParamsConfig(mode="all"), dist=DistState(rank, world), log=lambda s: None)


def _grads(trainer: RLTrainer) -> dict[str, torch.Tensor]:
    names = {id(p): n for n, p in trainer.unet.named_parameters()}
    return {names[id(p)]: p.grad.detach().clone() for p in trainer.trainable if p.grad is not None}


def _worker(rank, world, port, rollouts, adv, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        trainer = _trainer(rank, world)
        mine = slice(rank * len(rollouts) // world, (rank + 1) * len(rollouts) // world)
        trainer.update(rollouts[mine], adv[mine])
        save_file(_grads(trainer), os.path.join(out, f"grads-{rank}.safetensors"))
    finally:
        torch.distributed.destroy_process_group()


def test_two_gloo_ranks_average_gradients_like_one_process(tmp_path):
    single = _trainer()
    rollouts = single.rollouts([multiwindow_condition()], 0)  # 2 rollouts x 3 windows x 3 steps
    adv = [np.full(len(r.windows), a) for r, a in zip(rollouts, (1.0, -0.5), strict=False)]
    mp.spawn(_worker, args=(2, _free_port(), rollouts, adv, str(tmp_path)), nprocs=2, join=True)
    ranks = [load_file(str(tmp_path / f"grads-{r}.safetensors")) for r in range(2)]
    single.update(rollouts, adv)
    ref = _grads(single)
    assert ref and ranks[0].keys() == ref.keys()
    assert sum(bool(g.abs().sum() > 0) for g in ref.values()) >= 10
    scale = max(float(g.abs().max()) for g in ref.values())  # summation orders differ: float32 round-off
    for k in ref:
        assert torch.equal(ranks[0][k], ranks[1][k]), k
        torch.testing.assert_close(ranks[0][k], ref[k], rtol=1e-4, atol=1e-5 * scale)
    # it can fail: one rank's half alone gives another gradient
    half = _trainer()
    half.update(rollouts[:1], adv[:1])
    assert any(not torch.allclose(g, ref[k], rtol=1e-2, atol=1e-2 * scale)
               for k, g in _grads(half).items())
