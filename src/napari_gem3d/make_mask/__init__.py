"""A model-ready label mask from a user's own brain MR scan, in a model card's label scheme (Qt-free).

:func:`make_model_mask` turns an image (and optionally the user's lesion mask) into a label volume on the
image's own grid with the card's labels: outside brain, CSF / grey / white matter, and the card's lesion
labels. Three steps (docs/make-mask.md gives the measured accuracy):

1. **Brain** (``brain=``):

   - ``"deepbet"``: the TorchScript brain-extraction nets shipped inside the deepbet 1.0.2 wheel (MIT),
     run here with deepbet's own preprocessing (RAS reorientation; a 128^3 box net on the whole image,
     0.5/99.5 % intensity window, z-score x 0.226 + 0.449; the 256^3 net on the box with a 10 % margin;
     threshold 0.5, largest component, holes filled). Only ``torch`` is needed: deepbet's own Python
     code (which needs cc3d, fill_voids, pandas) is not imported.
   - ``"fallback"``: no network. Head = largest Otsu foreground component, holes filled; the CSF | grey
     matter level is the lower 3-class multi-Otsu threshold of the head eroded by 15 mm (mostly brain);
     brain candidates = head voxels above 0.8 x that level (and below 1.5 x the 99.5th percentile: fat,
     vessels); an erosion by 5 mm cuts the thin bridges to scalp, skull marrow and eyes; the largest
     component is dilated back by 5 mm inside the candidates, closed by 5 mm (sulcal CSF), holes filled.
   - ``"none"``: the image is already skull-stripped; brain = largest component above 2 % of the
     intensity range, holes filled.
   - ``"auto"``: deepbet when its weights are installed, else the fallback.

2. **Tissue** inside the brain (lesions left out of every fit):

   - bias: a smooth multiplicative field by N3 (Sled et al. 1998, written here in numpy): on a ~3 mm
     subsampled grid, in the log domain, the intensity histogram is sharpened (Wiener deconvolution by a
     Gaussian of 0.15 log units), each voxel's residual to its expected sharpened value is smoothed
     inside the brain (normalised Gaussian convolution, sigma 150 mm) and added to the field, 50 rounds.
     The field is rejected when it merges two tissue classes (an adjacent mean gap under one standard
     deviation that was not there before): that is anatomy, not coil shading.
   - classes: a tied-variance Gaussian mixture fitted by EM (numpy, on a 512-bin histogram, initialised
     by multi-Otsu). A 4-class fit is tried first: if its brightest class holds under 3 % of the voxels
     (vessels, dura, fat, contrast enhancement) the 3 classes below it are the tissues and that bright
     class joins the brightest tissue. The classes are ordered by the card's contrast (T1: CSF < GM <
     WM; T2: WM < GM < CSF; FLAIR: CSF < WM < GM) and each voxel takes its most probable class.
   - voxels darker than 1 % of the intensity range (air, the removed background of a skull-stripped
     image) are never brain.

3. **Lesions** (``lesion=``, any non-zero value is lesion; user lesion voxels are always brain):

   - ``lesion_as="auto"``: each connected lesion is split into the card's lesion subregions (found by
     name: necrotic/non-enhancing core, enhancing rim, oedema) the way the demo model's training tumours
     were made, relative to the bias-corrected tissue means (T1): core ~ CSF + 0.125 (GM - CSF), oedema ~
     CSF + 0.45 (GM - CSF) blended 85 % over GM/WM, rim ~ WM + 0.45 (WM - CSF). Each voxel takes the
     nearest of these prototypes (after ~1 mm smoothing and a ~1 voxel majority smoothing); oedema-like
     voxels enclosed by the rim become core (the training tumours never have oedema inside the rim).
     A lesion that is >= 90 % rim-like and clearly enhancing (median above WM + 0.15 (WM - CSF), as
     brain1's) is split at its own Otsu level: brighter part rim, darker part core (how the demo's
     training labels of the real brain1 tumour were made); >= 90 % rim-like but not clearly enhancing
     (about as bright as white matter) does not separate. When a lesion does not separate, or fewer
     than two classes reach 5 % of its voxels, or the contrast is not T1, it is split into depth shells
     instead (relative radius from its deepest voxel: up to 0.27 core, to 0.54 rim, the rest oedema,
     as the training geometry: tumour radius R, core ~0.5 R, oedema to ~1.85 R).
   - ``lesion_as="<label name>"``: every lesion voxel becomes that card label (case-insensitive).
   - ``label_map={value: name}``: ``lesion`` is a label map in another scheme and is translated value by
     value instead (0 left unmapped means "not given": computed from the image; any other unmapped
     value is an error).

Only brain MR cards are supported (``card.body_region == "brain"``, ``card.modality == "MR"``).
"""

from .brain import BRAIN_METHODS, brain_mask_deepbet, brain_mask_fallback, brain_mask_stripped, deepbet_weights
from .build import make_model_mask
from .lesion_split import split_lesions
from .roles import check_brain_card
from .tissue import estimate_bias, fit_gmm, fit_tissue, gmm_posteriors, segment_tissue

__all__ = [
    "BRAIN_METHODS",
    "brain_mask_deepbet",
    "brain_mask_fallback",
    "brain_mask_stripped",
    "check_brain_card",
    "deepbet_weights",
    "estimate_bias",
    "fit_gmm",
    "fit_tissue",
    "gmm_posteriors",
    "make_model_mask",
    "segment_tissue",
    "split_lesions",
]
