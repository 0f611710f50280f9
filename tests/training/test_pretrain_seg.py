"""Diffusion pretraining with the coordinate head (``python -m training pretrain-seg``) and its hand-over to the
downstream segmenter: the losses fall, the coordinates are learned, the encoder loads, the study reads it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from train_helpers import tiny_config
from training.__main__ import main as training_main
from training.pretrain_seg.coordinates import slice_coordinates
from training.pretrain_seg.network import ENCODER_KEY, load_encoder, segmentation_unet
from training.pretrain_seg.objective import OUTPUT_CHANNELS, pretrain_losses
from training.studies.report import findings, subject_row

from napari_gem3d.diffusion.schedule import NoiseSchedule


def _toy_volume(z=16, size=32) -> torch.Tensor:
    """(Z, 1, size, size) in [-1, 1]: a disc whose radius and brightness grow along the slice axis, so the
    slice coordinate is readable from the anatomy (a sphere would be symmetric in z)."""
    zz = np.linspace(0, 1, z)[:, None, None]
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    r = np.sqrt((yy + 0.2) ** 2 + xx**2)[None]
    disc = r < 0.25 + 0.6 * zz
    vol = np.where(disc, 0.2 + 0.8 * zz, -1.0) + 0.3 * (r < 0.1)
    return torch.from_numpy(vol.astype(np.float32))[:, None]


def _coords(vol: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return slice_coordinates(idx, torch.full_like(idx, len(vol)), vol.shape[-2], vol.shape[-1])


def _train(vol, steps, *, coord_weight, max_timestep=0, seed=0):
    torch.manual_seed(seed)
    net = segmentation_unet(OUTPUT_CHANNELS)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    schedule = NoiseSchedule(kind="cosine")
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(vol), (8,), generator=gen)
        coords = _coords(vol, idx) if coord_weight > 0 else None
        loss = pretrain_losses(net, vol[idx], coords, schedule, gen, coord_weight=coord_weight,
                               max_timestep=max_timestep)["loss/total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net, schedule


def _eval_denoise(net, vol, schedule) -> float:
    with torch.no_grad():
        gen = torch.Generator().manual_seed(123)  # the same noise and timesteps before and after training
        return float(pretrain_losses(net, vol, None, schedule, gen)["loss/denoise"])


def test_the_denoising_loss_falls_over_a_few_dozen_steps():
    vol = _toy_volume()
    torch.manual_seed(0)
    before = _eval_denoise(segmentation_unet(OUTPUT_CHANNELS), vol, NoiseSchedule(kind="cosine"))
    net, schedule = _train(vol, 40, coord_weight=0.0)
    after = _eval_denoise(net, vol, schedule)
    assert after < 0.5 * before, (before, after)


def test_the_coordinate_head_learns_the_voxel_coordinates():
    vol = _toy_volume()
    net, _ = _train(vol, 250, coord_weight=1.0, max_timestep=100)
    idx = torch.arange(len(vol))
    truth = _coords(vol, idx)
    with torch.no_grad():
        pred = net.eval()(vol)[:, 1:4]
    err = float(((pred - truth) ** 2).mean())
    mean_err = float(((truth - truth.mean(dim=(0, 2, 3), keepdim=True)) ** 2).mean())  # predicting the mean
    z_err = float(((pred[:, 0] - truth[:, 0]) ** 2).mean())
    z_mean_err = float(((truth[:, 0] - truth[:, 0].mean()) ** 2).mean())
    assert err < 0.25 * mean_err, (err, mean_err)
    assert z_err < 0.25 * z_mean_err, (z_err, z_mean_err)  # the slice axis, which only the anatomy tells


def test_coordinates_span_the_model_frame():
    c = slice_coordinates(torch.tensor([0, 4]), torch.tensor([5, 5]), 3, 4)
    assert c.shape == (2, 3, 3, 4)
    assert torch.allclose(c[0, 0], torch.full((3, 4), -1.0)) and torch.allclose(c[1, 0], torch.ones(3, 4))
    assert torch.allclose(c[0, 1, :, 0], torch.tensor([-1.0, 0.0, 1.0]))
    assert torch.allclose(c[0, 2, 0], torch.linspace(-1, 1, 4))


def test_cli_pretrains_resumes_and_the_encoder_loads_into_the_segmenter(tmp_path, pairs_data):
    raw = tiny_config(tmp_path, pairs_data, "vae", "pretrain", train={"steps": 2, "ckpt_every": 1})
    raw = {k: v for k, v in raw.items() if k in ("out", "seed", "data", "train")}
    raw.update(stage="pretrain-seg", pretrain={"coord_weight": 1.0})
    path = tmp_path / "pretrain.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert training_main(["pretrain-seg", "--config", str(path)]) == 0
    assert training_main(["pretrain-seg", "--config", str(path), "--set", "train.steps=4"]) == 0
    result = json.loads((tmp_path / "pretrain" / "result.json").read_text())
    assert result["resumed_from"] == 2 and result["steps"] == 4
    export = tmp_path / "pretrain" / "bundle"
    assert json.loads((export / "encoder.json").read_text())["coord_weight"] == 1.0

    torch.manual_seed(1)
    seg = segmentation_unet(7)
    fresh = {k: v.clone() for k, v in seg.state_dict().items()}
    loaded = load_encoder(seg, export)
    state = seg.state_dict()
    from safetensors.torch import load_file

    stored = load_file(str(export / "encoder.safetensors"))
    assert loaded and set(loaded) == set(stored) and "model.0.conv.unit0.conv.weight" in loaded
    assert all(ENCODER_KEY.match(k) for k in loaded)
    for k in loaded:
        assert torch.equal(state[k], stored[k]), k
    assert any(not torch.equal(fresh[k], stored[k]) for k in loaded)  # pretraining did change them
    decoder = [k for k in state if k not in loaded]
    assert decoder and all(torch.equal(state[k], fresh[k]) for k in decoder)  # the rest stays as initialised
    with pytest.raises(ValueError):
        load_encoder(segmentation_unet(7, in_channels=3), export)  # a silent partial load is refused


def test_config_errors_exit_2(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"stage": "pretrain-seg", "out": "x", "pretrain": {"prediction": "v"}}))
    assert training_main(["pretrain-seg", "--config", str(path)]) == 2
    assert "prediction" in capsys.readouterr().err


def test_the_report_checks_the_pretrain_arms_per_subject_count(tmp_path):
    def row(dice):
        return {"dice_tumour": {"mean": dice, "std": 0.01, "n": 2}}

    rows = {subject_row(1, "random init"): row(0.1), subject_row(1, "diffusion-pretrained"): row(0.3),
            subject_row(1, "diffusion-pretrained + coordinate head"): row(0.2)}
    (tmp_path / "pretrain.json").write_text(json.dumps({"rows": rows}))
    lines = findings(tmp_path)["pretrain"].splitlines()
    assert lines[0].startswith("2 of 9 orderings agree")  # 3 pairs x 3 metrics, 6 not measured
    assert any("diffusion-pretrained vs 1 labelled subject: random init" in s and "agrees" in s for s in lines)
    assert any("coordinate head vs 1 labelled subject: diffusion-pretrained" in s and "DISAGREES" in s
               for s in lines)


def test_a_two_and_a_half_d_stack_holds_each_slice_in_the_middle_with_the_ends_repeated():
    from training.pretrain_seg.slices import channels, neighbour_index, stack_neighbours

    vol = np.arange(5)[:, None, None] * np.ones((5, 2, 3))
    stack = stack_neighbours(vol, 1)
    assert stack.shape == (5, 3, 2, 3) and np.array_equal(stack[:, 1], vol)
    assert neighbour_index(5, 1).tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 4]]
    assert np.array_equal(stack_neighbours(vol, 0)[:, 0], vol) and channels(2) == 5
    with pytest.raises(ValueError):
        channels(-1)


def test_the_stacked_denoising_target_is_the_middle_slice():
    """A network that returns its (noise-free, t = 0) input: the loss is zero only against the middle channel."""
    stack = torch.randn(4, 3, 8, 8)

    def echo(channel):
        return lambda x: x[:, channel : channel + 1].repeat(1, OUTPUT_CHANNELS, 1, 1)

    schedule = NoiseSchedule(kind="cosine")
    losses = [float(pretrain_losses(echo(c), stack, None, schedule, torch.Generator().manual_seed(0),
                                    max_timestep=1)["loss/denoise"]) for c in range(3)]
    assert losses[1] < 1e-3 < min(losses[0], losses[2]), losses


def test_cli_pretrains_a_two_and_a_half_d_encoder_that_fits_only_a_three_slice_segmenter(tmp_path, pairs_data):
    from training.studies.downstream import predict, train_segmenter

    raw = tiny_config(tmp_path, pairs_data, "vae", "pretrain25", train={"steps": 2, "ckpt_every": 1})
    raw = {k: v for k, v in raw.items() if k in ("out", "seed", "data", "train")}
    raw.update(stage="pretrain-seg", pretrain={"coord_weight": 1.0, "context": 1})
    path = tmp_path / "pretrain25.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert training_main(["pretrain-seg", "--config", str(path)]) == 0
    export = tmp_path / "pretrain25" / "bundle"
    assert json.loads((export / "encoder.json").read_text())["in_channels"] == 3
    with pytest.raises(ValueError):
        load_encoder(segmentation_unet(7), export)
    vol = np.random.default_rng(0).uniform(-1, 1, (6, 16, 16)).astype(np.float32)
    mask = (vol > 0).astype(np.int64)
    net = train_segmenter([(vol, mask)], 0, steps=2, init=export, context=1)
    assert net.in_channels == 3 and predict(net, vol).shape == vol.shape
