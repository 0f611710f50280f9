"""napari sample data: the bundled demo case (image + mask), read from the installed package, offline."""

from __future__ import annotations

from typing import Any


def demo_case() -> list[tuple[Any, dict[str, Any], str]]:
    """The demo image and mask (its labels named by the demo model's scheme) as layer tuples; a clear error
    if the package ships without them."""
    from .. import _DATA
    from .. import demo_case as load_demo_case
    from .label_names import demo_scheme, label_features, present_values
    from .layers import volume_to_layer

    folder = _DATA / "demo_case"
    missing = [name for name in ("image.nii.gz", "mask.nii.gz") if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"The GEM-3D demo case is not installed ({', '.join(missing)} missing in {folder}). "
            "Reinstall napari-gem3d from a release wheel, which ships it, or open your own NIfTI image and "
            "mask with File > Open."
        )
    image, mask = load_demo_case()
    image_data, image_kwargs = volume_to_layer(image, "image", name="demo image")
    mask_data, mask_kwargs = volume_to_layer(mask, "labels", name="demo mask")
    mask_kwargs["features"] = label_features(demo_scheme(), present_values(mask_data))  # names in the status bar
    return [(image_data, image_kwargs, "image"), (mask_data, mask_kwargs, "labels")]
