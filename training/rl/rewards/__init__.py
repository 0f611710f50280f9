"""Reward models for RL fine-tuning (our design; the multi-scale reward paper's networks are not public).

- :mod:`.critics`: the networks (MONAI) and their safetensors + JSON storage;
- :mod:`.negatives`: self-supervised inter-slice corruptions for the 3-D critic;
- :mod:`.train`: training the critics on real vs base-model data (``python -m training.rl critics``);
- :mod:`.components`: reward components on decoded volumes and their weighted set.
"""
