"""The training engine shared by every stage: DDP, EMA, checkpoints, the step loop."""
