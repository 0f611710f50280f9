"""napari-gem3d training: raw volumes -> model bundle (VAE, slice LDM, volume LDM stages 1/2, baseline).

Run one stage with ``python -m training <stage> --config FILE`` (under ``torchrun`` for DDP).
This package imports :mod:`napari_gem3d`; the library never imports it.
"""

STAGES = ("vae", "slice", "volume-stage1", "volume-stage2", "baseline")
