"""Model bundles: exact round trips, a complete config, a stable hash, and errors that name the file."""

from __future__ import annotations

import dataclasses
import json
import shutil
from copy import deepcopy
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from napari_gem3d.diffusion.schedule import NoiseSchedule
from napari_gem3d.models import BundleError, build_bundle, load_bundle, save_bundle
from napari_gem3d.models import bundle as bundle_module
from napari_gem3d.models.presets import small_config
from napari_gem3d.volume import IntensityNorm
from net_helpers import path_tol


def _randomise(bundle, seed: int = 0):
    """Non-trivial weights everywhere (identity/zero-initialised layers would hide mapping errors)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in bundle.modules().values():
            for p in module.parameters():
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            module.eval()
    return bundle


def _config():
    cfg = small_config(32)
    return dataclasses.replace(
        cfg,
        window=8,
        overlap=2,
        slice_axis="R",
        intensity=IntensityNorm("window", -100.0, 250.0),
        scale_factor=0.5,
        name="roundtrip",
        description="test bundle",
        provenance={"trained_on": "synthetic phantoms", "steps": 123},
    )


@pytest.fixture(scope="module")
def original():
    return _randomise(build_bundle(_config()))


@pytest.fixture(scope="module")
def saved(original, tmp_path_factory) -> Path:
    return save_bundle(original, tmp_path_factory.mktemp("bundles") / "model")


@pytest.fixture(scope="module")
def loaded(saved):
    return load_bundle(saved, device="cpu")


def _changed(bundle, seed: int):
    """A copy of ``bundle`` whose volume UNet differs in one weight."""
    other = deepcopy(bundle)
    with torch.no_grad():
        other.volume.time_mlp[0].weight[0, seed] += 1e-3
    return other


@pytest.fixture
def copy(saved, tmp_path) -> Path:
    """A private copy of the saved bundle that a test may damage."""
    return Path(shutil.copytree(saved, tmp_path / "model"))


def _outputs(bundle):
    g = torch.Generator().manual_seed(1)
    cfg = bundle.config
    lat = cfg.vae.embed_dim
    x = torch.randn(1, 4, cfg.unets["volume"].in_channels, 8, 8, generator=g)
    xb = torch.randn(1, 4, cfg.unets["baseline"].in_channels, 8, 8, generator=g)
    xs = torch.randn(2, lat, 8, 8, generator=g)
    img = torch.rand(1, 1, 16, 16, generator=g) * 2 - 1
    with torch.no_grad():
        return {
            "volume": bundle.volume(x, torch.tensor([700])),
            "baseline": bundle.baseline(xb, torch.tensor([5])),
            "slice": bundle.slice(xs, torch.tensor([1, 999]), torch.tensor([0.0, 0.4])),
            "encode": bundle.codec.encode(img),
            "decode": bundle.codec.decode(xs),
        }


# --- round trip --------------------------------------------------------------------------------


def test_round_trip_gives_identical_weights_and_outputs(original, loaded):
    assert set(loaded.modules()) == {"vae", "volume", "baseline", "slice"}
    for name, module in original.modules().items():
        ours, theirs = module.state_dict(), loaded.modules()[name].state_dict()
        assert set(ours) == set(theirs), name
        for key in ours:
            assert torch.equal(ours[key], theirs[key]), f"{name}.{key}"
        assert not loaded.modules()[name].training
    # The outputs are not bit-identical everywhere: load_bundle freezes the networks (requires_grad_(False)),
    # and with frozen weights MKL may take another matmul path for nn.Linear (on an AVX-512 Xeon the outputs
    # moved by 5e-8). So: the float32 tolerance of two code paths through a whole network, path_tol with
    # depth 4 = 32 eps * max|output| (~4e-6 relative). These networks in float32 differ from float64 by at
    # most 6 eps * max|output|, two float32 paths by at most twice that; a weight mapped to the wrong
    # tensor moves the outputs by ~1e-1.
    before, after = _outputs(original), _outputs(loaded)
    for key in before:
        diff = (before[key] - after[key]).abs().max().item()
        assert diff <= path_tol(before[key], depth=4), (key, diff)
    assert loaded.config == original.config


def test_config_records_everything_the_sampler_needs(original, saved):
    data = json.loads((saved / "config.json").read_text())
    cfg = original.config
    assert data["format"] == "gem3d-bundle"
    assert data["format_version"] == bundle_module.FORMAT_VERSION == 1
    comps = data["components"]
    assert set(comps) == {"vae", "volume", "baseline", "slice"}
    assert comps["volume"]["config"]["temporal"] is True
    assert comps["volume"]["config"]["in_channels"] == cfg.unets["volume"].in_channels
    assert comps["volume"]["config"]["model_channels"] == 32
    assert comps["slice"]["config"]["context_dim"] == 64
    assert comps["vae"]["config"]["ch_mult"] == [1, 2]
    assert all(comps[k]["weights"] == f"{k}.safetensors" for k in comps)
    assert NoiseSchedule.from_dict(data["schedule"]) == NoiseSchedule()
    assert data["latent"] == {"scale_factor": 0.5, "channels": 4}
    assert data["window"] == {"length": 8, "overlap": 2}
    assert data["labels"]["encoding"] == "onehot"
    assert {int(k): v for k, v in data["labels"]["names"].items()} == cfg.labels.names
    assert data["grid"] == {"image_size": [32, 32], "slice_axis": "R"}
    assert IntensityNorm.from_dict(data["intensity"]) == IntensityNorm("window", -100.0, 250.0)
    assert data["mask_condition"] == "pool"
    assert data["provenance"] == {"trained_on": "synthetic phantoms", "steps": 123}
    assert data["name"] == "roundtrip" and data["description"] == "test bundle"


def test_model_hash_is_stable_and_follows_the_weights(original, loaded, tmp_path):
    first = loaded.model_hash
    assert len(first) == 64 and first == original.model_hash  # load and save agree
    same = save_bundle(deepcopy(loaded), tmp_path / "again")  # same weights written again: same hash
    assert bundle_module.bundle_hash(same) == first
    changed = _changed(loaded, 0)
    save_bundle(changed, tmp_path / "changed")
    assert changed.model_hash not in ("", first)
    assert bundle_module.bundle_hash(tmp_path / "changed") == changed.model_hash


# --- errors name the file and the problem -------------------------------------------------------


def test_missing_path_and_missing_config(copy, tmp_path):
    with pytest.raises(BundleError, match="no such model bundle") as err:
        load_bundle(tmp_path / "nowhere")
    assert "nowhere" in str(err.value)
    (copy / "config.json").unlink()
    with pytest.raises(BundleError, match="no config.json") as err:
        load_bundle(copy)
    assert str(copy) in str(err.value)


@pytest.mark.parametrize(
    "text,problem",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"format": "other"}', "not a gem3d-bundle"),
    ],
)
def test_broken_config_json(copy, text, problem):
    (copy / "config.json").write_text(text)
    with pytest.raises(BundleError, match=problem) as err:
        load_bundle(copy)
    assert str(copy / "config.json") in str(err.value)


def _edit_config(folder: Path, edit) -> None:
    data = json.loads((folder / "config.json").read_text())
    edit(data)
    (folder / "config.json").write_text(json.dumps(data))


def test_unknown_format_version(copy):
    _edit_config(copy, lambda d: d.update(format_version=99))
    with pytest.raises(BundleError, match="format_version 99 is not supported") as err:
        load_bundle(copy)
    assert str(copy / "config.json") in str(err.value)


def test_missing_config_entry(copy):
    _edit_config(copy, lambda d: d.pop("schedule"))
    with pytest.raises(BundleError, match="missing entry 'schedule'") as err:
        load_bundle(copy)
    assert str(copy / "config.json") in str(err.value)


def test_missing_weights_file(copy):
    (copy / "slice.safetensors").unlink()
    with pytest.raises(BundleError, match="weights file is missing") as err:
        load_bundle(copy)
    assert str(copy / "slice.safetensors") in str(err.value)


def _edit_weights(path: Path, edit) -> None:
    state = load_file(str(path))
    edit(state)
    save_file(state, str(path))


def test_missing_tensor(copy):
    _edit_weights(copy / "vae.safetensors", lambda s: s.pop("post_quant.weight"))
    with pytest.raises(BundleError, match=r"missing tensors \['post_quant.weight'\]") as err:
        load_bundle(copy)
    assert str(copy / "vae.safetensors") in str(err.value)


def test_unexpected_tensor(copy):
    _edit_weights(copy / "volume.safetensors", lambda s: s.update({"extra.weight": torch.zeros(3)}))
    with pytest.raises(BundleError, match=r"unexpected tensors \['extra.weight'\]") as err:
        load_bundle(copy)
    assert str(copy / "volume.safetensors") in str(err.value)


def test_shape_mismatch(copy):
    _edit_weights(copy / "baseline.safetensors", lambda s: s.update({"out_conv.bias": torch.zeros(5)}))
    problem = r"shape mismatch: out_conv.bias is \(5,\), config needs \(4,\)"
    with pytest.raises(BundleError, match=problem) as err:
        load_bundle(copy)
    assert str(copy / "baseline.safetensors") in str(err.value)


@pytest.mark.parametrize("suffix", [".ckpt", ".pt"])
def test_checkpoint_file_is_not_a_bundle(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, path)
    with pytest.raises(BundleError, match="convert-official") as err:
        load_bundle(path)
    assert str(path) in str(err.value)


def test_lone_safetensors_file_is_not_a_bundle(copy):
    with pytest.raises(BundleError, match="Point to the folder") as err:
        load_bundle(copy / "vae.safetensors")
    assert str(copy / "vae.safetensors") in str(err.value)


def test_text_file_renamed_safetensors(copy):
    (copy / "vae.safetensors").write_text("these are not weights\n")
    with pytest.raises(BundleError, match="not a readable safetensors file") as err:
        load_bundle(copy)
    assert str(copy / "vae.safetensors") in str(err.value)


def test_inconsistent_channels(copy):
    _edit_config(copy, lambda d: d["components"]["volume"]["config"].update(in_channels=13))
    with pytest.raises(BundleError, match="volume UNet takes 13 input channels") as err:
        load_bundle(copy)
    assert str(copy / "config.json") in str(err.value)


def test_latent_channels_must_match_the_unets(copy):
    _edit_config(copy, lambda d: d["components"]["vae"]["config"].update(embed_dim=8, z_channels=8))
    with pytest.raises(BundleError, match="input channels") as err:
        load_bundle(copy)
    assert str(copy / "config.json") in str(err.value)


# --- atomic save --------------------------------------------------------------------------------


def test_failed_save_leaves_the_existing_bundle_intact(original, saved, tmp_path, monkeypatch):
    target = Path(shutil.copytree(saved, tmp_path / "model"))
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    calls = []
    real_save_file = bundle_module.save_file

    def failing_save_file(*args, **kwargs):  # the 2nd weights file of every save fails
        calls.append(args[1])
        if len(calls) % 2 == 0:
            raise OSError("disk full (simulated)")
        return real_save_file(*args, **kwargs)

    monkeypatch.setattr(bundle_module, "save_file", failing_save_file)
    replacement = _changed(original, 1)
    with pytest.raises(OSError, match="disk full"):
        save_bundle(replacement, target, overwrite=True)
    with pytest.raises(OSError, match="disk full"):
        save_bundle(replacement, tmp_path / "fresh")
    assert len(calls) == 4
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temp folder, no half bundle


def test_overwrite_false_refuses_an_existing_folder(original, saved):
    before = {p.name: p.stat().st_mtime_ns for p in saved.iterdir()}
    with pytest.raises(BundleError, match="exists; pass overwrite=True"):
        save_bundle(original, saved)
    assert {p.name: p.stat().st_mtime_ns for p in saved.iterdir()} == before


def test_overwrite_true_replaces_the_bundle(original, saved, tmp_path):
    target = Path(shutil.copytree(saved, tmp_path / "model"))
    replacement = _changed(original, 2)
    save_bundle(replacement, target, overwrite=True)
    key = "time_mlp.0.weight"
    stored = load_file(str(target / "volume.safetensors"))[key]
    assert torch.equal(stored, replacement.volume.state_dict()[key])
    assert not torch.equal(stored, original.volume.state_dict()[key])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_official_config_picks_networks():
    from napari_gem3d.models.presets import official_config

    assert set(official_config().unets) == {"volume", "baseline", "slice"}
    only = official_config(unets=("volume",))
    assert set(only.unets) == {"volume"} and only.unets["volume"] == official_config().unets["volume"]
    with pytest.raises(ValueError, match="unets must name"):
        official_config(unets=("volume", "vae"))
