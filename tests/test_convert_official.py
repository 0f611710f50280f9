"""The official-checkpoint converter: full-size key maps, golden weights end to end, safe loading.

Full-size checkpoints (~1.5 GB each) are synthesised on the meta device from the published key
listings (``keys_full_*.json``): shapes and key coverage are checked without allocating memory.
The tiny golden state dicts are written as Lightning-style ``.ckpt`` files and converted through
the public entry point, then compared with the official outputs.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from napari_gem3d.diffusion.schedule import NoiseSchedule
from napari_gem3d.masks import official_brain_spec
from napari_gem3d.models import load_bundle
from napari_gem3d.models.convert import (
    OFFICIAL_PARAMS,
    SCHEDULE_BUFFERS,
    ConversionError,
    convert_official,
    convert_unet,
    convert_vae,
    ema_weights,
    read_checkpoint,
    split_checkpoint,
)
from napari_gem3d.models.official import KeyMismatchError, unet_dead_keys, unet_sources

GOLDEN = Path(__file__).parent / "data" / "gem3d_official"

# Counts from the reference README (section 1), not from our code.
VOLUME_UNET_VALUES = 367_878_616
TEMPORAL_VALUES = 93_802_292
SLICE_UNET_VALUES = 414_106_788
VAE_VALUES = 83_653_863


# --- synthetic full-size checkpoints on the meta device ----------------------------------------


def meta_checkpoint(name: str) -> dict[str, torch.Tensor]:
    listing = json.loads((GOLDEN / f"keys_full_{name}.json").read_text())["keys"]
    return {
        k: torch.empty(v["shape"], dtype=getattr(torch, v["dtype"]), device="meta")
        for k, v in listing.items()
    }


def _numel(tensors) -> int:
    return sum(t.numel() for t in tensors)


def _accounted_values(model, kind: str, unet_state: dict[str, torch.Tensor]) -> int:
    """Values our module holds + official values that provably do nothing (slice cross-attention)."""
    dead = unet_dead_keys(model) if kind == "slice" else set()
    return _numel(model.parameters()) + _numel(unet_state[k] for k in dead)


@pytest.mark.parametrize(
    "listing,kind,values,temporal",
    [
        ("volume", "volume", VOLUME_UNET_VALUES, True),
        ("volume_base", "base", VOLUME_UNET_VALUES - 4 * 224 * 3 * 3, True),  # README: 12 -> 8 input channels
        ("slice", "slice", SLICE_UNET_VALUES, False),
        ("volume_stage1_2d", "volume", VOLUME_UNET_VALUES - TEMPORAL_VALUES, False),
    ],
)
def test_full_size_checkpoint_converts_strictly(listing, kind, values, temporal):
    state = meta_checkpoint(listing)
    split = split_checkpoint(state, NoiseSchedule(), listing)  # every key sorted, or an error
    buffers = [k for k in state if k in SCHEDULE_BUFFERS]
    assert len(buffers) == 13
    model, cfg = convert_unet(kind, split, OFFICIAL_PARAMS[kind])  # load_state_dict(strict=True)
    assert cfg.temporal is temporal and model.config.temporal is temporal
    assert _accounted_values(model, kind, split["unet"]) == values
    assert _numel(split["unet"].values()) == values
    assert all(p.device.type == "meta" for p in model.parameters())  # the official tensors were assigned
    if kind == "volume" and temporal:
        sources = unet_sources(model)
        params = dict(model.named_parameters())
        from_temporal_keys = [n for n, src in sources.items() if any("tem" in k for k in src.keys)]
        assert sum(params[n].numel() for n in from_temporal_keys) == TEMPORAL_VALUES
        assert split["vae"] and not split["ema"]
    if not temporal:
        names = [n for n, _ in model.named_parameters()]
        assert not any("tconv" in n or n.endswith(("qkv_t.weight", "proj_t.weight")) for n in names)


@pytest.mark.parametrize("listing", ["vae_kl_f8", "volume"])
def test_full_size_vae_converts_strictly(listing):
    state = meta_checkpoint(listing)
    if listing == "volume":  # the VAE inside a GEM-3D checkpoint (twice: first and cond stage)
        state = split_checkpoint(state, NoiseSchedule(), listing)["vae"]
    model = convert_vae(state, OFFICIAL_PARAMS["vae"])
    assert _numel(model.parameters()) == _numel(state.values()) == VAE_VALUES


@pytest.mark.parametrize("listing,kind", [("slice", "slice"), ("volume_stage1_2d", "volume")])
def test_full_size_ema_maps_back(listing, kind):
    split = split_checkpoint(meta_checkpoint(listing), NoiseSchedule(), listing)
    assert {"decay", "num_updates"} <= set(split["ema"])
    mapped = ema_weights(split["ema"], split["unet"])
    assert set(mapped) == set(split["unet"])
    assert all(mapped[k].shape == split["unet"][k].shape for k in mapped)
    model, _ = convert_unet(kind, split, OFFICIAL_PARAMS[kind], use_ema=True)
    assert _numel(model.parameters()) > 0


def test_full_size_missing_key_is_listed():
    state = meta_checkpoint("volume")
    gone = "model.diffusion_model.input_blocks.1.0.in_layers_tem.temporal_conv.weight"
    del state[gone]
    with pytest.raises(KeyMismatchError) as err:
        convert_unet("volume", split_checkpoint(state, NoiseSchedule(), "ckpt"), OFFICIAL_PARAMS["volume"])
    assert err.value.missing == [gone.removeprefix("model.diffusion_model.")]
    assert "1 missing key(s): input_blocks.1.0.in_layers_tem.temporal_conv.weight" in str(err.value)


# --- the tiny golden weights as official Lightning checkpoints ---------------------------------


def _golden(name: str):
    return load_file(str(GOLDEN / f"{name}.safetensors")), json.loads((GOLDEN / f"{name}.json").read_text())


def tiny_checkpoints(folder: Path) -> dict:
    """Lightning-style ``.ckpt`` files holding the golden tiny weights under the official keys.

    Returns the paths, the official ``params`` per kind and the golden tensors.
    """
    vol, vol_meta = _golden("unet_volume_tiny")
    slc, slc_meta = _golden("unet_slice_tiny")
    vae, vae_meta = _golden("vae_tiny")
    sched = load_file(str(GOLDEN / "schedule.safetensors"))
    buffers = {k.removeprefix("buffer."): v for k, v in sched.items() if k.startswith("buffer.")}
    first = {k: v for k, v in vae.items() if k.startswith("first_stage_model.")}
    cond = {"cond_stage_model." + k.removeprefix("first_stage_model."): v.clone() for k, v in first.items()}
    unet = {k: v for k, v in vol.items() if k.startswith("model.diffusion_model.")}
    slice_unet = {k: v for k, v in slc.items() if k.startswith("model.diffusion_model.")}
    ema = {"model_ema." + k.removeprefix("model.").replace(".", ""): 2 * v for k, v in slice_unet.items()}
    ema["model_ema.decay"] = torch.tensor(0.9999)
    ema["model_ema.num_updates"] = torch.tensor(1234, dtype=torch.int32)
    # the mask-only baseline differs only in its stem: 8 input channels [noisy | mask] (README section 1)
    stem = "model.diffusion_model.input_blocks.0.0.weight"
    base_unet = {**unet, stem: unet[stem][:, :8].clone()}
    paths = {k: folder / f"{k}.ckpt" for k in ("volume", "base", "slice")}
    paths["vae"] = folder / "kl-f8.ckpt"
    meta = {"epoch": 0, "global_step": 0}
    torch.save({"state_dict": {**unet, **first, **cond, **buffers}, **meta}, paths["volume"])
    torch.save({"state_dict": {**base_unet, **first, **cond, **buffers}, **meta}, paths["base"])
    torch.save({"state_dict": {**slice_unet, **first, **ema, **buffers}, **meta}, paths["slice"])
    standalone = {k.removeprefix("first_stage_model."): v for k, v in first.items()}
    standalone["loss.logvar"] = torch.zeros(())  # the LDM kl-f8 checkpoint carries its training loss
    torch.save({"state_dict": standalone, **meta}, paths["vae"])
    params = {
        "volume": vol_meta["constructor_kwargs"],
        "base": {**vol_meta["constructor_kwargs"], "in_channels": 8},
        "slice": slc_meta["constructor_kwargs"],
        "vae": vae_meta["constructor_kwargs"],
    }
    return {"paths": paths, "params": params, "golden": {"volume": vol, "slice": slc, "vae": vae}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_checkpoints(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def converted(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "official-tiny"
    p = tiny["paths"]
    return convert_official(out, volume=p["volume"], base=p["base"], slice=p["slice"], params=tiny["params"])


def test_tiny_golden_checkpoints_convert_and_match(tiny, converted):
    bundle = load_bundle(converted)
    vol, slc, vae = (tiny["golden"][k] for k in ("volume", "slice", "vae"))
    with torch.no_grad():
        # window 1 of the golden batch (frames 16..31, t = 812); windows are independent (README 3a)
        eps = bundle.volume(vol["input.x"][16:].unsqueeze(0), vol["input.timesteps"][16:17])
        assert (eps[0] - vol["output.eps_fp32"][16:]).abs().max() <= 1e-4
        eps = bundle.slice(slc["input.x"], slc["input.timesteps"], slc["input.p"])
        assert (eps - slc["output.eps_fp32"]).abs().max() <= 1e-4
        mean, logvar = bundle.vae.posterior(vae["input.x"])
        assert (mean - vae["output.posterior_mean_fp32"]).abs().max() <= 1e-4
        assert (logvar - vae["output.posterior_logvar_fp32"]).abs().max() <= 1e-4
        assert (bundle.vae.decode(mean) - vae["output.decode_of_mean_fp32"]).abs().max() <= 1e-4
        grey = vae["input.x"][:, :1]
        latents = bundle.codec.encode(grey)  # grey repeated to 3 channels, posterior mean, scaled
        assert (latents - 0.18215 * bundle.vae.encode(grey.expand(-1, 3, -1, -1))).abs().max() < 1e-6


def test_baseline_equals_the_volume_model_without_informed_slice(tiny, converted):
    """The baseline checkpoint is the golden UNet minus 4 stem input channels: zeros there must agree."""
    bundle = load_bundle(converted)
    x = tiny["golden"]["volume"]["input.x"][:16].unsqueeze(0).clone()
    x[:, :, 8:] = 0
    t = torch.tensor([37])
    with torch.no_grad():
        assert (bundle.baseline(x[:, :, :8], t) - bundle.volume(x, t)).abs().max() < 1e-5


def test_converted_bundle_config(tiny, converted):
    cfg = load_bundle(converted).config
    assert set(cfg.unets) == {"volume", "baseline", "slice"}
    assert cfg.unets["baseline"].temporal and cfg.unets["baseline"].in_channels == 8
    assert cfg.unets["volume"].temporal and cfg.unets["volume"].in_channels == 12
    assert cfg.unets["slice"].context_dim == 128
    assert cfg.image_size == (32, 32)  # latent image_size 16 x VAE downsampling 2
    assert cfg.schedule == NoiseSchedule() and cfg.scale_factor == 0.18215
    assert cfg.labels == official_brain_spec() and cfg.mask_condition == "vae"
    assert (cfg.window, cfg.overlap) == (16, 1)
    sources = cfg.provenance["converted_from"]
    assert sources["volume"]["file"] == "volume.ckpt" and len(sources["volume"]["sha256"]) == 64


def test_slice_ema_weights_are_used_only_on_request(tiny, converted):
    split = split_checkpoint(read_checkpoint(tiny["paths"]["slice"]), NoiseSchedule(), "slice")
    ema_model, _ = convert_unet("slice", split, tiny["params"]["slice"], use_ema=True)
    ema = ema_model.state_dict()
    raw = load_file(str(converted / "slice.safetensors"))  # convert_official default: raw weights
    golden = tiny["golden"]["slice"]
    for official, ours in (("time_embed.0.weight", "time_mlp.0.weight"), ("out.2.bias", "out_conv.bias")):
        assert torch.equal(raw[ours], golden[f"model.diffusion_model.{official}"])
        assert torch.equal(ema[ours], 2 * golden[f"model.diffusion_model.{official}"])  # EMA copy = 2x raw
    assert raw.keys() == ema.keys()


def test_standalone_vae_checkpoint(tiny, tmp_path):
    p = tiny["paths"]
    out = convert_official(tmp_path / "b", volume=p["volume"], vae=p["vae"], params=tiny["params"])
    bundle = load_bundle(out)
    vae = tiny["golden"]["vae"]
    with torch.no_grad():
        assert (bundle.vae.encode(vae["input.x"]) - vae["output.posterior_mean_fp32"]).abs().max() <= 1e-4
    assert bundle.config.provenance["converted_from"]["vae"]["file"] == "kl-f8.ckpt"


# --- strictness: every key accounted for -------------------------------------------------------


def _state(tiny, kind: str) -> dict[str, torch.Tensor]:
    return read_checkpoint(tiny["paths"][kind])


def test_unexpected_unet_key_is_listed(tiny):
    state = _state(tiny, "volume")
    state["model.diffusion_model.input_blocks.9.0.weight"] = torch.zeros(1)
    with pytest.raises(KeyMismatchError) as err:
        convert_unet("volume", split_checkpoint(state, NoiseSchedule(), "x"), tiny["params"]["volume"])
    assert err.value.unexpected == ["input_blocks.9.0.weight"]
    assert "1 unexpected key(s): input_blocks.9.0.weight" in str(err.value)


def test_unknown_top_level_key_is_listed(tiny):
    state = _state(tiny, "volume")
    state["optimizer_state"] = torch.zeros(1)
    with pytest.raises(ConversionError, match=r"x: unexpected key\(s\) \['optimizer_state'\]"):
        split_checkpoint(state, NoiseSchedule(), "x")


def test_missing_vae_key_is_listed(tiny):
    state = split_checkpoint(_state(tiny, "volume"), NoiseSchedule(), "x")["vae"]
    del state["decoder.up.0.block.0.conv1.weight"]
    with pytest.raises(KeyMismatchError, match=r"1 missing key\(s\): decoder.up.0.block.0.conv1.weight"):
        convert_vae(state, tiny["params"]["vae"])


def test_cond_stage_must_equal_first_stage(tiny):
    state = _state(tiny, "volume")
    state["cond_stage_model.quant_conv.bias"] = state["cond_stage_model.quant_conv.bias"] + 1
    with pytest.raises(ConversionError, match="cond_stage_model differs from first_stage_model"):
        split_checkpoint(state, NoiseSchedule(), "x")
    del state["cond_stage_model.quant_conv.bias"]
    with pytest.raises(ConversionError, match="keys in only one: quant_conv.bias"):
        split_checkpoint(state, NoiseSchedule(), "x")


@pytest.mark.parametrize("change", ["extra", "missing"])
def test_ema_must_map_exactly(tiny, change):
    state = _state(tiny, "slice")
    if change == "extra":
        state["model_ema.diffusion_modelinput_blocks99weight"] = torch.zeros(1)
        problem = "1 EMA buffer.* match no UNet parameter: diffusion_modelinput_blocks99weight"
    else:
        del state["model_ema.diffusion_modeltime_embed0weight"]
        problem = "model_ema has no copy of 1 UNet parameter.*: time_embed.0.weight"
    split = split_checkpoint(state, NoiseSchedule(), "x")
    with pytest.raises(ConversionError, match=problem):
        convert_unet("slice", split, tiny["params"]["slice"])  # checked even when EMA is not used


def test_conversion_errors_name_the_checkpoint(tiny, tmp_path):
    state = _state(tiny, "volume")
    del state["model.diffusion_model.out.2.bias"]
    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": state}, bad)
    with pytest.raises(ConversionError, match=r"bad.ckpt: 1 missing key\(s\): out.2.bias"):
        convert_official(tmp_path / "out", volume=bad, params=tiny["params"])
    assert not (tmp_path / "out").exists()


def test_schedule_check_refuses_a_different_schedule():
    buffers = load_file(str(GOLDEN / "schedule.safetensors"))
    good = {"alphas_cumprod": buffers["buffer.alphas_cumprod"], "model.diffusion_model.w": torch.zeros(2)}
    assert split_checkpoint(good, NoiseSchedule(), "ok")["unet"].keys() == {"w"}
    shifted = dict(good, alphas_cumprod=good["alphas_cumprod"] * 0.999)
    with pytest.raises(ConversionError, match="noise schedule differs"):
        split_checkpoint(shifted, NoiseSchedule(), "shifted")
    short = dict(good, alphas_cumprod=good["alphas_cumprod"][::2])
    with pytest.raises(ConversionError, match="short: its noise schedule differs"):
        split_checkpoint(short, NoiseSchedule(), "short")


@pytest.mark.parametrize("params", [{"unet": {}}, [1, 2], {"volume": 3}])
def test_params_must_name_known_kinds(tiny, tmp_path, params):
    with pytest.raises(ConversionError, match="params must map some of"):
        convert_official(tmp_path / "out", volume=tiny["paths"]["volume"], params=params)
    assert not (tmp_path / "out").exists()


def test_out_exists_is_refused_before_any_work(tiny, tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(ConversionError, match="exists; pass --overwrite"):
        convert_official(tmp_path / "out", volume=tmp_path / "does-not-matter.ckpt")


# --- safety: nothing in a checkpoint ever runs -------------------------------------------------


class _OpensFile:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


class _RunsShell:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _CallsWriteText:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


EVIL = {"open": _OpensFile, "os.system": _RunsShell, "write_text": _CallsWriteText}


def write_evil_checkpoint(path: Path, marker: Path, how: str = "open", writer: str = "torch") -> Path:
    """A checkpoint whose unpickling would create ``marker``."""
    payload = EVIL[how](marker)
    if writer == "torch":
        torch.save({"state_dict": {"w": torch.zeros(2)}, "hyper_parameters": payload}, path)
    else:
        with open(path, "wb") as fh:
            pickle.dump({"state_dict": payload}, fh, protocol=int(writer.removeprefix("pickle")))
    return path


@pytest.mark.parametrize(
    "how,writer",
    [
        ("open", "torch"),
        ("os.system", "torch"),
        ("write_text", "torch"),
        ("open", "pickle0"),
        ("os.system", "pickle2"),
        ("open", "pickle4"),
    ],
)
def test_code_in_a_checkpoint_is_refused_and_never_runs(tmp_path, how, writer):
    marker = tmp_path / "MARKER"
    path = write_evil_checkpoint(tmp_path / "evil.ckpt", marker, how, writer)
    assert not marker.exists()
    with pytest.raises(ConversionError, match="refused") as err:
        read_checkpoint(path)
    message = str(err.value)
    assert "\n" not in message and "nothing was run" in message and str(path) in message
    assert not marker.exists()


def test_the_forbidden_call_is_named(tmp_path):
    path = write_evil_checkpoint(tmp_path / "evil.ckpt", tmp_path / "MARKER", "os.system")
    with pytest.raises(ConversionError, match=r"would import and call (posix|os)\.system"):
        read_checkpoint(path)


@pytest.mark.parametrize(
    "content,problem",
    [
        (b"\x00" + os.urandom(4095), "not a PyTorch checkpoint"),
        (b"epoch: 3\nstate_dict: none\n", "not a PyTorch checkpoint"),
        (b"", "not a PyTorch checkpoint"),
        (b"PK\x03\x04" + b"\x00" * 60, "refused: not loadable"),  # a broken zip archive
    ],
)
def test_non_checkpoint_files_are_reported(tmp_path, content, problem):
    path = tmp_path / "model.ckpt"
    path.write_bytes(content)
    with pytest.raises(ConversionError, match=problem) as err:
        read_checkpoint(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_checkpoint_without_state_dict(tmp_path):
    path = tmp_path / "list.ckpt"
    torch.save([1, 2, 3], path)
    with pytest.raises(ConversionError, match="no tensor state_dict inside"):
        read_checkpoint(path)
    with pytest.raises(ConversionError, match="no such checkpoint file"):
        read_checkpoint(tmp_path / "absent.ckpt")


def test_bare_and_legacy_state_dicts_load(tmp_path):
    state = {"model.diffusion_model.w": torch.arange(3.0)}
    torch.save(state, tmp_path / "bare.pt")
    torch.save({"state_dict": state}, tmp_path / "legacy.ckpt", _use_new_zipfile_serialization=False)
    for name in ("bare.pt", "legacy.ckpt"):
        loaded = read_checkpoint(tmp_path / name)
        assert loaded.keys() == state.keys()
        assert torch.equal(loaded["model.diffusion_model.w"], state["model.diffusion_model.w"])
