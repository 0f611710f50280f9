"""Feature extractors for Fréchet distances: RadImageNet ResNet-50 (user file), offline fallback, deepbet.

Every extractor has a ``name`` that goes into every report: FIDs from different extractors do not compare.

``radimagenet`` (2-D, per slice; the feature space of GEM-3D/MAISI-style medical FID)
    Keras-style ResNet-50 "notop" (convolutions with bias, stride in the first 1x1 convolution of a
    stage, BatchNorm eps 1.001e-5, no fc), written here in plain torch with the state-dict key names of
    the published PyTorch ports (``conv1``, ``bn1``, ``layerN.i.convK/bnK/downsample.{0,1}``). The weights
    are a file the user supplies (``RadImageNet-ResNet50_notop.pth`` or a ``.safetensors`` copy); ``.pth``
    pickles are opened only through :func:`napari_gem3d.models.convert.read_checkpoint`
    (``torch.load(weights_only=True)``). Preprocessing as MONAI's ``RadImageNetPerceptualSimilarity``:
    input in [0, 1], repeated to 3 channels, RGB -> BGR, minus the mean (0.406, 0.456, 0.485); the
    layer4 map (2048 channels) is averaged over space.

``fallback`` (2-D, per slice; works offline, no download): ``random-conv2d-v1``
    A fixed, untrained convolutional network: four 3x3 stride-2 convolutions + ReLU (32, 64, 128 and
    256 channels, no bias), He-normal weights drawn from NumPy's PCG64 generator with a fixed seed, and
    the spatial mean of every stage concatenated (480 features). The weights' SHA-256 is part of the
    name, so a report says exactly which network it used.

    Why this and not the alternatives:

    - *deepbet's encoder* is a real learned 3-D network, but it gives one vector per *volume* (no
      axial/coronal/sagittal views), it is T1 brain MRI only, and a 192-d covariance estimated from the
      handful of volumes of a study is mostly estimation noise. It is offered as the extra ``FID-3D``
      (:func:`deepbet_extractor`), never as the per-view fallback.
    - *the demo VAE's encoder* is part of the generator under test: generated images are decoded from
      its latent space, so measuring them with it is circular and favours the model; it also changes
      whenever the model is retrained, so numbers would not compare across models.
    - *random features* are modality-agnostic, deterministic, cheap and independent of the model being
      evaluated; randomly initialised CNN embeddings are a known, usable (if weaker) feature space for
      comparing image distributions outside natural images (Naeem et al. 2020).

    Limits (say them when reporting): the features are untrained, so the distance reflects intensity,
    texture and edge statistics at several scales, not anatomical plausibility; absolute values do not
    compare with published RadImageNet or Inception FIDs, only with other numbers from the same
    extractor name; with fewer slices than features the covariance is rank-deficient (still exact as a
    Fréchet distance between the empirical Gaussians, but noisier).

``deepbet`` (3-D, per volume; optional, ``pip install deepbet``): ``deepbet-encoder-3d``
    The TorchScript brain-extraction net shipped in the deepbet wheel (``data/models/model.pt``, found
    through ``importlib.metadata`` without importing deepbet). The volume is reoriented to RAS, clipped
    to its 0.5-99.5 percentiles and scaled to [0, 1], z-scored, mapped with x 0.226 + 0.449 (deepbet's
    normalisation), resized to 128^3 (deepbet crops to a brain box first; we do not), and the encoder
    stages run; the spatial means of the last two stages (64 + 128 channels) give 192 features.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..volume import MODEL_AXCODES, Volume  # noqa: F401  (MODEL_AXCODES documents the view frames)

RADIMAGENET_MEAN_BGR = (0.406, 0.456, 0.485)
KERAS_BN_EPS = 1.001e-5
RANDOM_CONV_WIDTHS = (32, 64, 128, 256)


# ------------------------------------------------------------------------------------ extractor types
@dataclass
class SliceExtractor:
    """2-D features of (N, H, W) slices in [0, 1] at ``input_size`` x ``input_size``."""

    name: str
    num_features: int
    input_size: int
    net: Callable[[torch.Tensor], torch.Tensor]  # (B, 1, H, W) in [0, 1] -> (B, F)
    device: str = "cpu"
    notes: str = ""

    def __call__(self, slices: np.ndarray, batch_size: int = 64) -> np.ndarray:
        arr = np.asarray(slices, dtype=np.float32)
        if arr.ndim != 3:
            raise ValueError(f"expected slices (N, H, W), got shape {arr.shape}")
        out = []
        with torch.inference_mode():
            for i in range(0, len(arr), batch_size):
                x = torch.from_numpy(arr[i : i + batch_size])[:, None].to(self.device)
                out.append(self.net(x).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.num_features))


@dataclass
class VolumeExtractor:
    """One feature vector per 3-D volume."""

    name: str
    num_features: int
    net: Callable[[Volume], np.ndarray]
    notes: str = ""
    device: str = "cpu"
    extra: dict = field(default_factory=dict)

    def __call__(self, volume: Volume) -> np.ndarray:
        return np.asarray(self.net(volume), dtype=np.float64)


# ----------------------------------------------------------------------------- RadImageNet ResNet-50
def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=KERAS_BN_EPS)


class KerasBottleneck(nn.Module):
    """Keras ResNet v1 bottleneck: stride in the first 1x1 convolution; every convolution has a bias."""

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = 4 * width
        self.conv1 = nn.Conv2d(in_channels, width, 1, stride=stride)
        self.bn1 = _bn(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.bn2 = _bn(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1)
        self.bn3 = _bn(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride), _bn(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class RadImageNetResNet50(nn.Module):
    """ResNet-50 "notop" as trained by RadImageNet (Keras); ``forward`` gives layer4 (B, 2048, h, w)."""

    stages = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (width, blocks, stride)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3)
        self.bn1 = _bn(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)  # after ReLU, same as Keras' zero padding
        channels = 64
        for i, (width, blocks, stride) in enumerate(self.stages, start=1):
            layers = [KerasBottleneck(channels, width, stride)]
            layers += [KerasBottleneck(4 * width, width) for _ in range(blocks - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*layers))
            channels = 4 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def radimagenet_preprocess(x: torch.Tensor) -> torch.Tensor:
    """(B, 1 or 3, H, W) in [0, 1] -> the network input: 3 channels, RGB -> BGR, minus the BGR mean."""
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    if x.shape[1] != 3:
        raise ValueError(f"expected 1 or 3 channels, got {x.shape[1]}")
    x = x[:, [2, 1, 0]]
    mean = torch.tensor(RADIMAGENET_MEAN_BGR, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return x - mean


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(
            f"RadImageNet weights not found: {path}. Supply RadImageNet-ResNet50_notop.pth (or a "
            ".safetensors "
            "copy) yourself; nothing is downloaded. Or use --extractor fallback."
        )
    if path.name.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(str(path))
    from ..models.convert import read_checkpoint  # the one place pickles are opened (weights_only=True)

    return read_checkpoint(path)


def load_radimagenet_state(model: RadImageNetResNet50, path: str | Path) -> None:
    """Load a RadImageNet ResNet-50 notop state dict strictly, with a clear error when keys do not fit."""
    path = Path(path)
    state = _read_state(path)
    for prefix in ("module.", "model."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}  # a "top" is not used
    expected = model.state_dict()
    for k, v in expected.items():  # Keras exports carry no BatchNorm step counter
        if k.endswith("num_batches_tracked"):
            state.setdefault(k, torch.zeros_like(v))
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        raise ValueError(
            f"{path.name} is not a RadImageNet ResNet-50 notop state dict: {len(missing)} missing keys "
            f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, {len(wrong)} with another shape "
            f"{wrong[:3]}. Expected the layout of Project-MONAI/perceptual-models radimagenet/resnet.py."
        )
    model.load_state_dict(state, strict=True)


def radimagenet_extractor(
    weights: str | Path | None, *, device: str = "cpu", input_size: int = 224
) -> SliceExtractor:
    """RadImageNet ResNet-50 features (2048-d). ``weights=None`` gives random weights (tests only)."""
    model = RadImageNetResNet50()
    source = "random weights (TEST ONLY)"
    if weights is not None:
        load_radimagenet_state(model, weights)
        source = Path(weights).name
    model.eval().to(device)

    def net(x: torch.Tensor) -> torch.Tensor:
        return model(radimagenet_preprocess(x)).mean(dim=(2, 3))

    return SliceExtractor(
        name=f"radimagenet-resnet50 ({source})",
        num_features=2048,
        input_size=input_size,
        net=net,
        device=device,
        notes="RadImageNet ResNet-50 notop, layer4 spatial mean",
    )


# ------------------------------------------------------------------------------------ random conv net
class RandomConvFeatures(nn.Module):
    """Fixed untrained CNN: 3x3 stride-2 conv + ReLU stages; spatial means of all stages concatenated."""

    def __init__(self, widths: tuple[int, ...] = RANDOM_CONV_WIDTHS, seed: int = 0) -> None:
        super().__init__()
        rng = np.random.default_rng(seed)  # PCG64: the weights do not depend on torch's RNG
        convs, cin = [], 1
        for width in widths:
            conv = nn.Conv2d(cin, width, 3, stride=2, padding=1, bias=False)
            std = np.sqrt(2.0 / (cin * 9))  # He-normal
            w = rng.standard_normal(conv.weight.shape).astype(np.float32) * np.float32(std)
            conv.weight.data = torch.from_numpy(w)
            conv.weight.requires_grad_(False)
            convs.append(conv)
            cin = width
        self.convs = nn.ModuleList(convs)
        digest = hashlib.sha256(b"".join(c.weight.detach().numpy().tobytes() for c in convs)).hexdigest()
        self.fingerprint = digest[:12]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = []
        for conv in self.convs:
            x = torch.relu(conv(x))
            feats.append(x.mean(dim=(2, 3)))
        return torch.cat(feats, dim=1)


def fallback_extractor(*, seed: int = 0, device: str = "cpu", input_size: int = 128) -> SliceExtractor:
    """The offline fallback: the seeded random-feature CNN (480-d), named with its weights' fingerprint."""
    model = RandomConvFeatures(seed=seed).eval().to(device)
    return SliceExtractor(
        name=(
            f"random-conv2d-v1 (seed {seed}, weights sha256 {model.fingerprint}; offline fallback, untrained)"
        ),
        num_features=sum(RANDOM_CONV_WIDTHS),
        input_size=input_size,
        net=model,
        device=device,
        notes="untrained: intensity/texture/edge statistics, not anatomy; compare only within this name",
    )


# ------------------------------------------------------------------------------------------ deepbet 3-D
DEEPBET_SIZE = 128


def deepbet_model_path() -> Path:
    """The shipped deepbet TorchScript net, or a clear error naming the install command."""
    try:
        files = importlib.metadata.files("deepbet") or []
    except importlib.metadata.PackageNotFoundError:
        raise ModuleNotFoundError(
            "deepbet is not installed; FID-3D needs it: pip install deepbet (after installing torch)"
        ) from None
    for f in files:
        if str(f).replace("\\", "/").endswith("data/models/model.pt"):
            path = Path(f.locate())
            if path.is_file():
                return path
    raise FileNotFoundError(
        "the deepbet package is installed but its data/models/model.pt is missing; reinstall it"
    )


def _deepbet_input(volume: Volume, size: int) -> torch.Tensor:
    from nibabel import orientations as nio

    from ..volume import IntensityNorm

    ornt = nio.ornt_transform(nio.io_orientation(volume.affine), nio.axcodes2ornt(("R", "A", "S")))
    x = np.asarray(nio.apply_orientation(np.asarray(volume.array, dtype=np.float32), ornt), dtype=np.float32)
    window = IntensityNorm("percentile", 0.5, 99.5).fit(x)
    x = np.clip((x - window.lo) / (window.hi - window.lo), 0.0, 1.0)
    x = (x - x.mean()) / max(float(x.std()), 1e-6) * 0.226 + 0.449
    t = torch.from_numpy(np.ascontiguousarray(x))[None, None]
    return torch.nn.functional.interpolate(t, size=(size,) * 3, mode="trilinear", align_corners=False)


def deepbet_extractor(*, device: str = "cpu", size: int = DEEPBET_SIZE) -> VolumeExtractor:
    """deepbet's encoder as a 3-D feature extractor (192-d per volume); needs the deepbet package."""
    path = deepbet_model_path()
    model = torch.jit.load(str(path), map_location=device).eval()
    act = getattr(model.conv, "2")
    stages = [model.init, model.down0, model.down1, model.down2, model.down3]

    def net(volume: Volume) -> np.ndarray:
        x = _deepbet_input(volume, size).to(device)
        pooled = []
        with torch.inference_mode():
            for stage in stages:
                x = stage(act, x)
                pooled.append(x.mean(dim=(2, 3, 4))[0])
        return torch.cat(pooled[-2:]).double().cpu().numpy()

    return VolumeExtractor(
        name="deepbet-encoder-3d (T1 brain-extraction net, 192-d, whole volume at 128^3)",
        num_features=192,
        net=net,
        device=device,
        notes="learned on T1 brain MRI for brain masking, not a general embedding; needs many volumes",
    )


# ---------------------------------------------------------------------------------------------- factory
EXTRACTORS = ("fallback", "radimagenet")


def make_extractor(
    kind: str, *, weights: str | Path | None = None, device: str = "cpu", input_size: int | None = None
) -> SliceExtractor:
    """``"fallback"`` (offline) or ``"radimagenet"`` (needs ``weights``)."""
    if kind == "fallback":
        return fallback_extractor(device=device, **({"input_size": input_size} if input_size else {}))
    if kind == "radimagenet":
        if weights is None:
            raise ValueError("--extractor radimagenet needs --weights FILE (RadImageNet-ResNet50_notop.pth)")
        return radimagenet_extractor(
            weights, device=device, **({"input_size": input_size} if input_size else {})
        )
    raise ValueError(f"unknown extractor {kind!r}; choose one of {EXTRACTORS}")
