"""Table 4 in small: does adding GEM-3D-generated volumes help a segmentation network on real held-out data?

Real training set: the first ``PER_SUBJECT`` variants with a tumour of each training subject. For k = 1, 2, 3
each real case is re-generated k times by GEM-3D (its own true middle slice as the informed slice, its mask
augmented with the paper's augmentation, one seed per copy) and the (generated image, augmented mask) pairs
are added. A MONAI 2-D ``UNet`` (7 classes, Dice + cross-entropy; ``training/pretrain_seg/network.py``) is
trained for the same number of steps in every arm, so more data is not more optimisation; it is scored on the
held-out real ``colin27_tumour``: Dice of the tumour (labels 4-6 merged), mean Dice of the tissues (CSF, GM,
WM) and tumour HD95 in mm. ``pretrain_arms.py`` adds pretrained encoders and 1-3 labelled subjects.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.networks.nets import UNet

from napari_gem3d.metrics.segmentation import dice_per_label, hd95_per_label

from ..pretrain_seg.network import load_encoder, segmentation_unet
from ..pretrain_seg.slices import channels, stack_neighbours
from .context import TUMOUR_LABELS, StudyContext, summarise

SUBJECTS = ("mni152", "itk_t1", "brain1")
PER_SUBJECT = 2
TEST_CASE = "colin27_tumour"
NUM_CLASSES = 7
STEPS = 400
BATCH = 16


def _merge_tumour(labels: np.ndarray) -> np.ndarray:
    out = np.where(np.isin(labels, TUMOUR_LABELS), 4, labels)
    return out.astype(np.int64)


def real_cases(ctx: StudyContext, subjects: tuple[str, ...] = SUBJECTS) -> list[str]:
    """The first ``PER_SUBJECT`` training variants of each subject whose mask holds a tumour."""
    chosen = []
    for subject in subjects:
        with_tumour = [n for n in ctx.training if n.startswith(f"{subject}_v")
                       and np.isin(np.asarray(ctx.cases[n].mask), TUMOUR_LABELS).any()]
        chosen += sorted(with_tumour)[:PER_SUBJECT]
    return chosen


def training_pairs(ctx: StudyContext, copies: int, subjects: tuple[str, ...] = SUBJECTS,
                   model: str = "final") -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, mask) volumes: the real cases plus ``copies`` generated ones per real case (by ``model``)."""
    names = real_cases(ctx, subjects)
    pairs = [(np.asarray(ctx.cases[n].image), np.asarray(ctx.cases[n].mask)) for n in names]
    for n in names:
        for k in range(copies):
            s = ctx.sample(n, seed=100 + k, informed="true", augment=True, model=model)
            pairs.append((s.volume, s.mask))
    return pairs


def train_segmenter(pairs: list[tuple[np.ndarray, np.ndarray]], seed: int, *, steps: int = STEPS,
                    init=None, context: int = 0) -> UNet:
    """Train from random weights, or with the encoder of ``init`` (a ``pretrain-seg`` export) loaded;
    ``context`` > 0: 2.5-D, each slice with ``context`` neighbours on each side as input channels."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    images = np.concatenate([stack_neighbours(p[0], context) for p in pairs]).astype(np.float32)
    masks = np.concatenate([p[1] for p in pairs]).astype(np.int64)
    keep = (masks > 0).reshape(len(masks), -1).any(axis=1)  # slices with some brain
    images, masks = images[keep], masks[keep]
    net = segmentation_unet(NUM_CLASSES, in_channels=channels(context))
    if init is not None:
        load_encoder(net, init)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    net.train()
    for _ in range(steps):
        idx = rng.integers(0, len(images), BATCH)
        x = torch.from_numpy(images[idx])
        y = torch.from_numpy(masks[idx])[:, None]
        flip = rng.random() < 0.5
        if flip:
            x, y = x.flip(-1), y.flip(-1)
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
    return net.eval()


@torch.no_grad()
def predict(net: UNet, image: np.ndarray) -> np.ndarray:
    """Labels of every slice of ``image`` (Z, h, w); a 2.5-D network gets each slice's neighbours too."""
    x = torch.from_numpy(stack_neighbours(np.asarray(image, np.float32), (net.in_channels - 1) // 2))
    return torch.cat([net(x[i : i + 32]).argmax(1) for i in range(0, len(x), 32)]).numpy()


def score(ctx: StudyContext, net: UNet) -> dict[str, float]:
    case = ctx.cases[TEST_CASE]
    truth = _merge_tumour(np.asarray(case.mask))
    pred = _merge_tumour(predict(net, case.image))
    dice = dice_per_label(pred, truth, labels=[1, 2, 3, 4])
    hd = hd95_per_label(pred, truth, spacing=ctx.spacing(TEST_CASE), labels=[4])
    return {"dice_tumour": dice[4], "dice_tissue": float(np.mean([dice[1], dice[2], dice[3]])),
            "dice_csf": dice[1], "dice_gm": dice[2], "dice_wm": dice[3], "hd95_tumour_mm": hd[4]}


def downstream(ctx: StudyContext, copies: tuple[int, ...] = (0, 1, 2, 3)) -> dict:
    rows = {}
    for k in copies:
        pairs = training_pairs(ctx, k)
        per: dict[str, list[float]] = {}
        for seed in ctx.seeds:
            for m, v in score(ctx, train_segmenter(pairs, seed)).items():
                per.setdefault(m, []).append(v)
        label = "real only" if k == 0 else f"real + {k}x GEM-3D"
        rows[label] = {m: summarise(v) for m, v in per.items()} | {"volumes": {"mean": len(pairs), "std": 0.0,
                                                                                "n": 1}}
    return {"rows": rows, "real_cases": real_cases(ctx), "test_case": TEST_CASE, "steps": STEPS,
            "batch": BATCH, "seeds": list(ctx.seeds),
            "expected": "The paper's Table 4: adding generated volumes raises downstream Dice on real test data."}
