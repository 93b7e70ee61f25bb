"""The one check of a panorama and its maps against what a checkpoint needs.

`check_panorama` is called where inputs enter the library (the Predictor, the CLI, the app):
it turns arrays of any numeric kind into the shapes the model code relies on, or raises an
`InputError` that says what to give instead.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence

import numpy as np

from .errors import InputError

#: How to pass each map, for "this checkpoint needs ..." messages.
_HOW_TO_PASS = {"depth": "depth=(H, W) array in metres", "normals": "normals=(H, W, 3) RGB-encoded normals"}
MIN_HEIGHT = 8  # pixels: 16x8 is the smallest panorama accepted


class Panorama(NamedTuple):
    """A checked panorama. image: (H, W, 3) RGB as given (0..255); depth: (H, W) metres or None;
    normals: (H, W, 3) as given (RGB-encoded 0..255, or float unit vectors -1..1) or None. A map is
    None when the checkpoint does not use it."""

    image: np.ndarray
    depth: Optional[np.ndarray]
    normals: Optional[np.ndarray]

    @property
    def size(self):
        """(H, W) in pixels."""
        return self.image.shape[:2]


def as_array(x: Any, name: str) -> np.ndarray:
    """`x` (numpy array, torch tensor, nested lists) as a numeric numpy array, else InputError."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch here
        x = x.detach().cpu()
        return (x.float() if str(x.dtype) == "torch.bfloat16" else x).numpy()  # numpy has no bfloat16
    try:
        arr = np.asarray(x)
    except Exception as e:  # e.g. a file object or a string path
        raise InputError(f"{name} must be an array, got {type(x).__name__} ({e})") from None
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise InputError(f"{name} must be a numeric array (load files with panosamic.io first), got {arr.dtype}")
    return arr


def check_finite(arr: np.ndarray, name: str) -> None:
    """InputError if a float array holds NaN or infinite values."""
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InputError(f"{name} contains NaN or infinite values")


def check_aspect(height: int, width: int, what: str = "the panorama") -> None:
    """InputError unless `width == 2 * height` (an equirectangular panorama) and height >= 8."""
    if width != 2 * height:
        raise InputError(
            f"{what} is {width}x{height}, not 2:1: an equirectangular panorama is twice as wide as high "
            f"(e.g. {2 * height}x{height}). Crop or resize it to 2:1."
        )
    if height < MIN_HEIGHT:
        raise InputError(f"{what} is only {width}x{height} pixels; give at least {2 * MIN_HEIGHT}x{MIN_HEIGHT}")


def check_panorama(image: Any, depth: Any = None, normals: Any = None,
                   modalities: Sequence[str] = ("image",), what: str = "the panorama",
                   normals_from_depth: bool = False) -> Panorama:
    """Checks a panorama and its maps against a checkpoint's `modalities` and returns them as arrays.

    Args:
        image: (H, W, 3) RGB (or (H, W) grey, or (H, W, 4) RGBA: alpha is dropped), 0..255,
            equirectangular: W = 2H, H >= 8.
        depth: (H, W) (or (H, W, 1|3)) metres, needed when "depth" is in `modalities`.
        normals: (H, W, 3), needed when "normals" is in `modalities`.
        modalities: what the checkpoint reads, e.g. ("image", "depth"); maps it does not read
            are not checked and come back as None.
        what: how messages name the panorama (e.g. "the panorama room.jpg").
        normals_from_depth: missing normals are not an error when depth is given (the caller
            derives them: `panosamic.geometry.normals_for_model`); they come back as None.

    Raises InputError naming the problem and the fix: not an array, wrong shape, not 2:1, too
    small, NaN/inf, a needed map missing, a map of another size than the image.
    """
    img = as_array(image, "image")
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] not in (3, 4):
        raise InputError(f"image must be (H, W, 3) RGB, got shape {img.shape}")
    img = img[..., :3]
    H, W = img.shape[:2]
    check_aspect(H, W, what)
    check_finite(img, "image")
    given = {"depth": depth is not None, "normals": normals is not None or (normals_from_depth and depth is not None)}
    missing = [m for m in modalities if m != "image" and not given[m]]
    if missing:
        raise InputError(
            f"this checkpoint needs {' and '.join(missing)} as well as the RGB image: pass "
            + " and ".join(_HOW_TO_PASS[m] for m in missing)
            + (" (no normals? panosamic.geometry.normals_from_depth estimates them from depth)"
               if "normals" in missing and given["depth"] else "")
            + ", or use a checkpoint trained on fewer modalities"
        )
    d = n = None
    if "depth" in modalities:
        d = as_array(depth, "depth")
        if d.ndim == 3 and d.shape[-1] in (1, 3):
            d = d[..., 0]
        if d.shape != (H, W):
            size = f"{d.shape[1]}x{d.shape[0]}" if d.ndim >= 2 else f"of shape {d.shape}"
            raise InputError(f"depth is {size} but the image is {W}x{H}: give a depth map of the same size (metres)")
    if "normals" in modalities and normals is not None:
        n = as_array(normals, "normals")  # its own dtype: an 8K uint8 map as float32 would be 400 MB
        if n.shape != (H, W, 3):
            raise InputError(f"normals must be (H, W, 3) = ({H}, {W}, 3) like the image, got {n.shape}")
        check_finite(n, "normals")
    return Panorama(img, d, n)
