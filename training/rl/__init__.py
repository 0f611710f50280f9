"""RL fine-tuning of the GEM-3D volume model with PPO on a multi-scale reward (our design).

``python -m training rl --config FILE`` / ``python -m training rl --recipe demo --out DIR``.
Rollouts drive THE sampler generator (``napari_gem3d.sampling.propagate.generate``) with a recorder;
see ``README.md`` here for the design, the rewards and what is ours rather than the paper's.
"""
