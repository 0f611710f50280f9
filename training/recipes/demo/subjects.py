"""The real brain MRI of the demo recipe, each as (T1 image, brain mask, tissue labels, real tumour).

Tissue labels follow ``napari_gem3d.models.presets.demo_labels()``: 0 outside brain, 1 CSF, 2 grey
matter, 3 white matter (tumour labels 4-6 come from :mod:`.tumours` or brain1's real lesion).

========== ==================================== =========================================================
subject    source                               brain mask / tissue
========== ==================================== =========================================================
mni152     nilearn MNI152 2009a, 2 mm           shipped brain mask; arg-max of the GM/WM probability maps
                                                and CSF = 1 - GM - WM, inside the mask
itk_t1     ITK KmeansTest T1 (Debian), 2x2x3 mm shipped skull-strip mask; multi-Otsu (3) inside it
brain1     pyradiomics 3.0.1 sdist, 6.5 mm      heuristic (threshold, erosion, largest component,
           slices, real enhancing tumour        dilation, hole filling); multi-Otsu inside; the real
                                                lesion split into enhancing rim / necrotic core
colin27    mricron ch2 + ch2bet (Debian),       ch2bet > 0; multi-Otsu inside. HELD OUT (evaluation).
           resampled to 2 mm
========== ==================================== =========================================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from skimage.filters import threshold_multiotsu, threshold_otsu

from napari_gem3d.io import read_volume
from napari_gem3d.volume import Volume

MRICRON = Path("/usr/share/mricron/templates")
ITK = Path("/usr/share/doc/insighttoolkit5-examples/examples/Data")


def data_dir() -> Path:
    """Where scripts/get_data.sh put the pyradiomics files (``GEM3D_DATA_DIR`` or <repo>/work_data)."""
    env = os.environ.get("GEM3D_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "work_data"


def brain1_dir() -> Path:
    return data_dir() / "pyradiomics-sdist" / "pyradiomics-3.0.1" / "data"


@dataclass
class Subject:
    name: str
    image: Volume  # float32 T1
    tissue: np.ndarray  # int16, 0 outside brain, 1 CSF, 2 GM, 3 WM (4-6 where a real tumour is)
    source: str
    licence: str

    @property
    def brain(self) -> np.ndarray:
        return self.tissue > 0


def _require(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `bash scripts/get_data.sh` first")
    return path


def tissue_by_otsu(image: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """CSF / GM / WM by 3-class multi-Otsu of the T1 intensities inside the brain mask."""
    t1, t2 = threshold_multiotsu(image[brain], classes=3)
    tissue = np.zeros(image.shape, np.int16)
    tissue[brain] = 1 + (image[brain] > t1) + (image[brain] > t2)
    return tissue


def _nib_volume(img: nib.Nifti1Image, dtype=np.float32) -> Volume:
    return Volume(np.asarray(img.dataobj, dtype=dtype), img.affine)


def mni152() -> Subject:
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=2)
    brain = np.asarray(datasets.load_mni152_brain_mask(resolution=2).dataobj) > 0
    gm = np.asarray(datasets.load_mni152_gm_template(resolution=2).dataobj, np.float32)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=2).dataobj, np.float32)
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    tissue = np.where(brain, 1 + np.argmax(np.stack([csf, gm, wm]), axis=0), 0).astype(np.int16)
    return Subject("mni152", _nib_volume(t1), tissue, "nilearn MNI ICBM152 2009a (2 mm)",
                   "MNI ICBM152 2009a notice (McConnell Brain Imaging Centre); nilearn BSD-3")


def itk_t1() -> Subject:
    image = read_volume(_require(ITK / "KmeansTest_T1UCharRaw.nii.gz"))
    strip = read_volume(_require(ITK / "KmeansTest_T1RawSkullStrip.nii.gz"))
    img = np.asarray(image.array, np.float32)
    brain = ndimage.binary_fill_holes(np.asarray(strip.array) > 0)
    return Subject("itk_t1", Volume(img, image.affine), tissue_by_otsu(img, brain),
                   "ITK KmeansTest_T1UCharRaw + T1RawSkullStrip (Debian insighttoolkit5-examples)", "Apache-2.0 (ITK)")


def colin27(spacing: float = 2.0) -> Subject:
    from nibabel.processing import resample_to_output

    ch2 = nib.load(str(_require(MRICRON / "ch2.nii.gz")))
    bet = nib.load(str(_require(MRICRON / "ch2bet.nii.gz")))
    ch2 = resample_to_output(nib.Nifti1Image(np.asarray(ch2.dataobj, np.float32), ch2.affine), spacing, order=1)
    bet = resample_to_output(nib.Nifti1Image(np.asarray(bet.dataobj, np.float32), bet.affine), spacing, order=1)
    img = np.asarray(ch2.dataobj, np.float32)
    brain = ndimage.binary_fill_holes(np.asarray(bet.dataobj) > 5)
    return Subject("colin27", Volume(img, ch2.affine), tissue_by_otsu(img, brain),
                   "Colin27 ch2/ch2bet (Debian mricron-data), resampled to 2 mm",
                   "Debian mricron-data BSD-3 (C. Rorden); upstream Colin27 terms")


def _brain_mask_heuristic(img: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Skull-strip a thick-slice T1 slice by slice: tissue-range voxels (above 0.4 x Otsu, below the
    bright fat/vessel level), eroded ~5 mm so the scalp and the enhancing dura come off, the largest
    component dilated back inside the tissue range, holes filled."""
    otsu = threshold_otsu(img)
    tissue_range = (img > 0.4 * otsu) & (img < 2.2 * np.median(img[img > otsu]))
    out = np.zeros(img.shape, bool)
    r = max(1, int(round(5.0 / spacing[0])))
    ball = ndimage.generate_binary_structure(2, 1)
    for k in range(img.shape[2]):
        fg = tissue_range[..., k]
        core = ndimage.binary_erosion(fg, ball, iterations=r)
        lab, n = ndimage.label(core)
        if n == 0:
            continue
        sizes = ndimage.sum(core, lab, range(1, n + 1))
        keep = lab == (1 + int(np.argmax(sizes)))
        if keep.sum() < 200:
            continue
        out[..., k] = ndimage.binary_fill_holes(ndimage.binary_dilation(keep, ball, iterations=r) & fg)
    return out


def brain1() -> Subject:
    image = read_volume(_require(brain1_dir() / "brain1_image.nrrd"))
    label = read_volume(_require(brain1_dir() / "brain1_label.nrrd"))
    img = np.asarray(image.array, np.float32)
    lesion = np.asarray(label.array) > 0
    brain = _brain_mask_heuristic(img, image.spacing) | lesion
    tissue = tissue_by_otsu(img, brain & ~lesion)
    # the real enhancing tumour: bright voxels = enhancing rim (5), dark centre = necrotic core (6)
    t = threshold_otsu(img[lesion])
    tissue[lesion] = np.where(img[lesion] > t, 5, 6)
    return Subject("brain1", Volume(img, image.affine), tissue,
                   "pyradiomics 3.0.1 sdist data/brain1_image.nrrd + brain1_label.nrrd",
                   "BSD-3-style (Harvard Medical School, pyradiomics LICENSE.txt)")


def training_subjects() -> list[Subject]:
    return [mni152(), itk_t1(), brain1()]


def heldout_subject() -> Subject:
    return colin27()
