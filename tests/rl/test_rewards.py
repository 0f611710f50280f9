"""Reward-model sanity (reference-rl.md section 8.1, 8): the critics are trained by the real script
(``training.rl.rewards.train.train_critics``) on toy head phantoms (real) vs samples of a tiny
random-weight bundle drawn by THE sampler (generated), and checked on held-out phantoms and samples."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import random_bundle
from phantoms import phantom
from training.rl.rewards.components import (
    IntensityStats,
    MaskDice,
    StatsReference,
    chunk_logits,
    mean_dice,
    segment,
    slice_logits,
)
from training.rl.rewards.critics import CriticSet, CriticSpec
from training.rl.rewards.negatives import KINDS, corrupt
from training.rl.rewards.train import CriticTraining, train_critics
from training.rl.rollout import Condition, Rollout, collect

from napari_gem3d.sampling import InformedSlice
from net_helpers import path_tol

pytestmark = pytest.mark.rl

SHAPE = (12, 16, 16)
DEPTH = 6


def _generated(seeds, bundle):
    conds = []
    for s in seeds:
        img, msk = phantom(1000 + s, SHAPE)
        conds.append(Condition(f"p{s}", msk, SHAPE[0] // 2, InformedSlice(image=img[SHAPE[0] // 2])))
    return [r.volume for r in collect(bundle, conds, group_size=1, seeds=[[s] for s in seeds], steps=3, eta=1.0,
                                      record=False)]


@pytest.fixture(scope="module")
def critics(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    bundle = random_bundle(0, size=16, window=6)
    real = [phantom(s, SHAPE) for s in range(12)]
    gen = _generated(range(12), bundle)
    spec = CriticSpec(image_size=(16, 16), depth=DEPTH, num_classes=7, width=16, seed=0)
    trained = train_critics(real, gen, spec, CriticTraining(steps=150, batch_size=32, lr=5e-3), labels=range(7),
                            log=lambda s: None)
    folder = trained.save(tmp_path_factory.mktemp("critics"))
    held_real = [phantom(s, SHAPE) for s in range(100, 108)]
    held_gen = _generated(range(100, 108), bundle)
    return CriticSet.load(folder), held_real, held_gen


def test_real_beats_generated_on_held_out_data(critics):
    cs, held_real, held_gen = critics
    for kind in ("realism2d", "heldout2d"):
        real = [slice_logits(cs[kind], img).mean() for img, _ in held_real]
        gen = [slice_logits(cs[kind], v).mean() for v in held_gen]
        assert min(real) > max(gen), kind


def test_3d_critic_catches_shuffled_slices_that_the_2d_critic_cannot(critics):
    cs, held_real, _ = critics
    rng = np.random.default_rng(5)
    wins = 0
    for img, _ in held_real:
        shuffled = img[rng.permutation(SHAPE[0])]
        # the 2-D critic scores each slice alone: the volume score is the same set of numbers, up to float32
        # rounding (a slice in another batch row may take another GEMM micro-kernel). Means in float64, so
        # the summation order adds nothing; one small network: path_tol depth 4, 32 eps * max|logit| (~5e-5
        # at |logit| ~ 12; measured on an AMD EPYC: <= 1e-6), far below any real dependence on slice order.
        ref = slice_logits(cs["realism2d"], img)
        assert slice_logits(cs["realism2d"], shuffled).mean(dtype=np.float64) == pytest.approx(
            ref.mean(dtype=np.float64), abs=path_tol(ref, depth=4))
        coherence = cs["coherence3d"]
        wins += chunk_logits(coherence, img, DEPTH).mean() > chunk_logits(coherence, shuffled, DEPTH).mean()
    assert wins == len(held_real)


def test_3d_critic_ranks_every_corruption_below_the_real_chunk_on_average(critics):
    cs, held_real, _ = critics
    rng = np.random.default_rng(7)
    real = np.mean([chunk_logits(cs["coherence3d"], img[:DEPTH], DEPTH)[0] for img, _ in held_real])
    for kind in KINDS:
        bad = np.mean([chunk_logits(cs["coherence3d"], corrupt(img[:DEPTH], rng, kind)[0], DEPTH)[0]
                       for img, _ in held_real])
        assert bad < real, kind


def test_dice_reward_is_one_on_the_ground_truth_pair(critics):
    cs, held_real, _ = critics
    img, msk = held_real[0]
    assert mean_dice(msk, msk) == 1.0
    rollout = Rollout(group=0, seed=0, windows=[], volume=img, latents=np.zeros((1,)))
    truth = Condition("truth", msk, 0, InformedSlice(image=img[0]))
    wrong = Condition("wrong", np.roll(msk, 5, axis=2), 0, InformedSlice(image=img[0]))
    dice = MaskDice(cs)
    on_truth = float(dice.score(rollout, truth)[0])
    assert on_truth > 0.75  # the trained segmenter on a held-out real pair
    assert float(dice.score(rollout, wrong)[0]) < on_truth - 0.2
    assert mean_dice(segment(cs["segmentation"], img), msk) == pytest.approx(on_truth)


def test_intensity_statistics_prefer_real_tissue_values(critics):
    cs, held_real, held_gen = critics
    ref = StatsReference.from_dict(cs.info["stats_reference"])
    stats = IntensityStats(ref)
    for (img, msk), gen in zip(held_real, held_gen, strict=False):
        cond = Condition("c", msk, 0, InformedSlice(image=img[0]))
        real = stats.score(Rollout(0, 0, [], img, np.zeros(1)), cond)[0]
        dim = stats.score(Rollout(0, 0, [], np.clip(img - 0.3, -1, 1), np.zeros(1)), cond)[0]
        fake = stats.score(Rollout(0, 0, [], gen, np.zeros(1)), cond)[0]
        assert real > dim and real > fake
