"""Whole-volume generation in the user's geometry, and informed slices picked or generated."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_gem3d.sampling import SamplingOptions
from napari_gem3d.sampling.informed import generate_informed, pick_informed, relative_index
from napari_gem3d.sampling.pipeline import run_to_end, sample_volume
from napari_gem3d.volume import Volume, model_grid, slab_from_model
from sampler_helpers import SIZE, phantom_mask, tiny_bundle


@pytest.fixture(scope="module")
def bundle():
    return tiny_bundle()


def _case(codes=("L", "S", "A"), spacing=(2.0, 3.0, 2.0)):
    """A phantom stored in ``codes`` orientation with anisotropic voxels (like the ITK head)."""
    model_mask = phantom_mask(24, 16)  # (z, y, x) in the model frame S, P, L
    ras = np.ascontiguousarray(np.transpose(model_mask, (2, 1, 0))[::-1, ::-1, :])  # (R->L flipped, P->A, S)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = (-40.0, 12.5, 7.0)
    img = nib.Nifti1Image(ras, affine).as_reoriented(
        nib.orientations.ornt_transform(
            nib.orientations.axcodes2ornt(("R", "A", "S")), nib.orientations.axcodes2ornt(codes)
        )
    )
    mask = Volume(np.asarray(img.dataobj).astype(np.uint8), img.affine)
    image = Volume((mask.array.astype(np.float32) * 100 + 20).astype(np.int16), img.affine)
    return image, mask


def test_generated_volume_in_source_geometry_and_inputs_untouched(bundle):
    image, mask = _case()
    assert nib.aff2axcodes(mask.affine) == ("L", "S", "A")
    img_before, mask_before = image.array.copy(), mask.array.copy()
    options = SamplingOptions(steps=3, device="cpu")
    updates = []
    gen = sample_volume(bundle, mask, image=image, position=0.5, options=options)
    while True:
        try:
            updates.append(next(gen))
        except StopIteration as stop:
            out = stop.value
            break
    assert out.volume.shape == mask.shape and np.array_equal(out.volume.affine, mask.affine)
    assert np.array_equal(image.array, img_before) and np.array_equal(mask.array, mask_before)
    prov = out.volume.header["provenance"]
    assert prov["mask_sha256"] and prov["informed"]["kind"] == "picked" and prov["steps"] == 3
    assert prov["grid"]["source_shape"] == list(mask.shape)
    # intensities mapped back into the image's units
    lo, hi = prov["intensity"]["lo"], prov["intensity"]["hi"]
    assert lo - 1e-3 <= out.volume.array.min() and out.volume.array.max() <= hi + 1e-3
    # the live slabs land exactly where the final volume puts them
    grid = out.grid
    live = np.zeros(mask.shape, np.float32)
    ref = out.provenance["intensity"]
    from napari_gem3d.volume import FittedNorm

    norm = FittedNorm.from_dict(ref)
    for u in updates:
        index, block = slab_from_model(norm.inverse(np.clip(u.slices, -1, 1)), u.z0, grid, "image")
        live[index] = block
    assert np.allclose(live, out.volume.array, atol=1e-4)


def test_pick_informed_is_orientation_invariant(bundle):
    image, _ = _case(codes=("L", "S", "A"))
    other, _ = _case(codes=("R", "A", "S"))
    a = pick_informed(image, bundle.config, position=0.5)
    b = pick_informed(other, bundle.config, position=0.5)
    assert a.source["index"] == b.source["index"] == relative_index(0.5, model_grid(image, SIZE, "S").num_slices)
    assert np.allclose(a.image, b.image, atol=1e-5)
    assert a.image.shape == (SIZE, SIZE) and a.image.min() >= -1 and a.image.max() <= 1


def test_pick_informed_arguments():
    bundle = tiny_bundle()
    image, _ = _case()
    with pytest.raises(ValueError, match="exactly one"):
        pick_informed(image, bundle.config)
    with pytest.raises(ValueError, match="outside"):
        pick_informed(image, bundle.config, index=999)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pick_informed(image, bundle.config, position=1.5)


def test_generated_informed_slice_is_deterministic_and_position_dependent(bundle):
    a = generate_informed(bundle, 0.3, seed=1, steps=3, device="cpu")
    b = generate_informed(bundle, 0.3, seed=1, steps=3, device="cpu")
    c = generate_informed(bundle, 0.8, seed=1, steps=3, device="cpu")
    assert np.array_equal(a.latent, b.latent) and not np.array_equal(a.latent, c.latent)
    assert a.latent.shape == (4, *bundle.config.latent_size) and a.image.shape == (SIZE, SIZE)
    assert a.source == {"kind": "generated", "position": 0.3, "seed": 1, "steps": 3, "eta": 1.0, "model": "tiny"}


def test_generated_informed_slice_drives_a_generation(bundle):
    _, mask = _case()
    informed = generate_informed(bundle, 0.5, seed=0, steps=2, device="cpu")
    out = run_to_end(sample_volume(bundle, mask, informed=informed, options=SamplingOptions(steps=2, device="cpu")))
    assert out.provenance["informed"]["kind"] == "generated"
    assert out.provenance["intensity"] == "model range [-1, 1]"


def test_mask_and_image_must_share_geometry(bundle):
    image, mask = _case()
    shifted = Volume(image.array, image.affine + np.eye(4) * 0 + np.pad(np.ones((3, 1)), ((0, 1), (3, 0))) * 5)
    with pytest.raises(ValueError, match="share one geometry"):
        run_to_end(sample_volume(bundle, mask, image=shifted, options=SamplingOptions(steps=1, device="cpu")))
    with pytest.raises(ValueError, match="informed slice"):
        run_to_end(sample_volume(bundle, mask, options=SamplingOptions(steps=1, device="cpu")))
