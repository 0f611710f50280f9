"""The README's "Your own scan" example, re-made: pyradiomics brain1 through check, make-mask and sample.

    python docs/make_brain1_example.py [--model BUNDLE] [--seeds 0 1] [--lesion-guidance 1 3]
                                       [--out runs/brain1_example] [--paste-informed]
                                       [--montage docs/images/brain1_make_mask_sample.png]

brain1 (``bash scripts/get_data.sh`` puts it under work_data/) is a real post-contrast T1 with 6.5 mm slices
and a lesion-only label, so ``gem3d check`` refuses the label as it is; ``make-mask`` turns it into the
card's label map and ``sample`` generates from that, in the scan's own geometry. Prints one JSON line per
seed and lesion guidance: the stripe index against the real scan and its two parts (across slices, in plane),
the lesion's contrast to white matter in the generated and the real scan, and writes the montage of the first
seed through the lesion's largest slice in each view (real, model-ready mask, one generated row per lesion
guidance, and the last guided row minus the unguided one: where guidance changed the volume).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WHITE_MATTER = 3  # the demo card's label


def gem3d(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "napari_gem3d.cli", *args], capture_output=True, text=True)


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(REPO))
    from training.recipes.demo.subjects import brain1_dir

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model bundle (default: the bundled demo model)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--out", type=Path, default=Path("runs/brain1_example"))
    p.add_argument("--montage", type=Path, default=None)
    p.add_argument("--lesion-guidance", type=float, nargs="+", default=[1.0, 3.0],
                   help="the lesion guidance values to sample with (1: none)")
    p.add_argument("--paste-informed", action="store_true", help="sample with the scan's start slice pasted in "
                   "(the default until 2026-12-07)")
    args = p.parse_args(argv)
    image, lesion = brain1_dir() / "brain1_image.nrrd", brain1_dir() / "brain1_label.nrrd"
    if not image.is_file():
        raise SystemExit(f"{image} is missing: run `bash scripts/get_data.sh` first")
    args.out.mkdir(parents=True, exist_ok=True)
    model = ["--model", args.model] if args.model else []
    check = gem3d("check", "--image", str(image), "--mask", str(lesion), *model)
    if check.returncode != 3:
        raise SystemExit(f"gem3d check should refuse brain1's lesion-only label (exit 3), got {check.returncode}:\n"
                         f"{check.stdout}{check.stderr}")
    mask = args.out / "brain1_model_mask.nii.gz"
    made = gem3d("make-mask", "--image", str(image), "--lesion", str(lesion), "--out", str(mask), "--overwrite",
                 *model)
    if made.returncode != 0:
        raise SystemExit(f"make-mask failed:\n{made.stdout}{made.stderr}")

    from napari_gem3d.io import read_volume
    from napari_gem3d.metrics.consistency import axis_ratios

    real = read_volume(image)
    lesion_voxels = np.asarray(read_volume(lesion).array) > 0
    white_matter = np.asarray(read_volume(mask).array) == WHITE_MATTER

    def lesion_contrast(volume) -> float:
        """(lesion mean - white-matter mean) / white-matter SD: how the lesion stands out."""
        v = np.asarray(volume.array, np.float64)
        return round(float((v[lesion_voxels].mean() - v[white_matter].mean()) / v[white_matter].std()), 2)

    paste = ["--paste-informed"] if args.paste_informed else []
    rows = []
    for k, seed in enumerate(args.seeds):
        for w in args.lesion_guidance:
            gen_path = args.out / f"brain1_generated_seed{seed}_w{w:g}.nii.gz"
            run = gem3d("sample", "--image", str(image), "--mask", str(mask), "--out", str(gen_path), "--overwrite",
                        "--seed", str(seed), "--lesion-guidance", f"{w:g}", *paste, *model)
            if run.returncode != 0:
                raise SystemExit(f"sample failed:\n{run.stdout}{run.stderr}")
            gen = read_volume(gen_path)
            across, in_plane = axis_ratios(gen, real)
            print(json.dumps({"seed": seed, "lesion_guidance": w, "stripe_index": round(across / in_plane, 3),
                              "across": round(across, 3), "in_plane": round(in_plane, 3),
                              "lesion_contrast": lesion_contrast(gen), "real_lesion_contrast": lesion_contrast(real),
                              "paste_informed": args.paste_informed, "model": args.model or "bundled demo model"}),
                  flush=True)
            if k == 0:
                rows.append((f"seed {seed}, lesion guidance {w:g}", gen))
    if args.montage:
        from nibabel.orientations import apply_orientation

        from napari_gem3d import demo_model_path
        from napari_gem3d.montage import VIEWS, save_montage
        from napari_gem3d.volume import model_grid

        config = json.loads((Path(args.model or demo_model_path()) / "config.json").read_text())
        index = {}
        for view in VIEWS:  # the lesion's largest slice in each view
            oriented = apply_orientation(lesion_voxels, model_grid(real, (1, 1), view).ornt)
            index[view] = int(np.argmax(oriented.sum(axis=(1, 2))))
        if len(rows) > 1:
            (_, first), (name, last) = rows[0], rows[-1]
            difference = np.asarray(last.array, np.float32) - np.asarray(first.array, np.float32)
            rows.append((f"{name.split(', ')[-1]} minus 1", first.with_array(difference)))
        save_montage([("real brain1", real), ("make-mask", read_volume(mask)), *rows], args.montage, index=index,
                     kinds=["image", "labels"] + ["image"] * len(rows),
                     labels_max=max(int(k) for k in config["labels"]["names"]),
                     title="pyradiomics brain1: check (refused) -> make-mask -> sample")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
