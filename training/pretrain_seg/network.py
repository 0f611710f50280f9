"""The segmentation network shared by pretraining and the downstream study, and its encoder weights on disk.

The network is MONAI's 2-D ``UNet`` (residual units, 4 levels). Pretraining and fine-tuning build the same
class and differ only in ``out_channels``, so every encoder parameter has the same name and shape in both.
The encoder is the down path plus the bottom block: in MONAI's nested ``SkipConnection`` layout, the keys
``model.(1.submodule.)*0.*`` (down layers) and ``model.(1.submodule.)*{conv,residual}.*`` (the bottom).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from monai.networks.nets import UNet
from safetensors.torch import load_file, save_file

CHANNELS = (16, 32, 64, 128)
STRIDES = (2, 2, 2)
ENCODER_KEY = re.compile(r"^model\.(1\.submodule\.)*(0\.|conv\.|residual\.)")
ENCODER_FILE = "encoder.safetensors"
META_FILE = "encoder.json"


def segmentation_unet(out_channels: int, in_channels: int = 1) -> UNet:
    return UNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels, channels=CHANNELS,
                strides=STRIDES, num_res_units=1)


def encoder_state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone().contiguous() for k, v in net.state_dict().items() if ENCODER_KEY.match(k)}


def save_encoder(net: torch.nn.Module, folder: Path, meta: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(encoder_state(net), str(folder / ENCODER_FILE))
    (folder / META_FILE).write_text(json.dumps({"architecture": {"channels": CHANNELS, "strides": STRIDES,
                                                                 "num_res_units": 1}, **meta}, indent=1))
    return folder / ENCODER_FILE


def load_encoder(net: torch.nn.Module, path: Path) -> list[str]:
    """Copy the encoder weights of ``path`` (a file or the export folder) into ``net``; returns the keys loaded.

    Every stored key must exist in ``net`` with the same shape (else ``ValueError``): a silent partial load
    would make a "pretrained" arm a randomly initialised one.
    """
    path = Path(path)
    weights = load_file(str(path / ENCODER_FILE if path.is_dir() else path))
    own = net.state_dict()
    bad = [k for k, v in weights.items() if k not in own or own[k].shape != v.shape]
    if bad or not weights:
        raise ValueError(f"{path}: encoder weights do not fit this network ({bad[:3] or 'empty file'})")
    net.load_state_dict(weights, strict=False)
    return sorted(weights)
