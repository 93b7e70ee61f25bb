"""Readers: a panorama, depth map, normal map or label map file (or array) in, an array in this
project's conventions out (RGB uint8 (H, W, 3); depth float32 (H, W) metres, 0 = none;
normals uint8 (H, W, 3) as 127.5 * (n + 1); labels (H, W) class indices). Each file's header
is checked first (`panosamic.io.headers`), then it is decoded (`panosamic.io.decode`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Tuple

import cv2
import numpy as np

from .. import geometry
from ..errors import InputError
from .decode import (as_2d, ends_with_jpeg_eoi, imread, load_npy, numeric, pil_to_array, read_any_depth,
                     swap_red_blue)
from .headers import PIL_FORMATS, FileHeader, check_panorama_size, read_header, unreadable


def _map_file(path, what: str, expected: str) -> Tuple[FileHeader, Path, str, Optional[np.ndarray]]:
    """(header, path, "<what> <name>" for messages, the array of a .npy file or None) of a
    single-channel map (depth, labels); a .npy with more than one channel is refused, naming
    `expected`."""
    header = read_header(path, what)
    p = Path(path)
    src = f"{what} {p.name}"
    if header.format != "NPY":
        return header, p, src, None
    if header.channels != 1:
        raise InputError(f"{src} has {header.channels} channels; expected {expected}")
    return header, p, src, load_npy(p, what).reshape(header.height, header.width)


def load_image(path, check_size: bool = True) -> np.ndarray:
    """Read a panorama: a path (PNG, JPEG, WebP, TIFF, BMP), a PIL image or an array -> uint8
    ``(H, W, 3)`` RGB.

    Alpha is dropped, grey is replicated to three channels, 16-bit and float
    (0..1) images are converted to 8 bit. With ``check_size`` images larger
    than 8192x4096 are refused (from the header, before decoding, for files).
    Any file that cannot be read is an :class:`InputError` naming the file's base name.
    """
    from PIL import Image

    if isinstance(path, np.ndarray):
        arr = numeric(path, "image array")
        src = "image array"
    elif isinstance(path, Image.Image):
        arr, src = pil_to_array(path), "image"
    else:
        header = read_header(path, "image", check_size=check_size)
        p = Path(path)
        src = f"image {p.name}"
        if header.format in ("NPY", "EXR"):
            raise unreadable("image", p.name, f"a {header.format} file, not a picture")
        try:
            if header.format == "JPEG" and header.channels in (1, 3) and ends_with_jpeg_eoi(p):
                # what cameras write: OpenCV's decoder, the same pixels as PIL's, with no extra
                # copy (8K: ~100 MB less at its peak); PIL does the rest, and says when a JPEG
                # is truncated, where OpenCV would fill the missing part with grey
                arr = imread(p, cv2.IMREAD_UNCHANGED, "image")
                if arr.ndim == 3:
                    arr = swap_red_blue(arr, in_place=True)
            else:
                with Image.open(p, formats=PIL_FORMATS) as im:
                    arr = pil_to_array(im)
        except InputError:
            raise
        except Exception:  # noqa: BLE001 - truncated data, decoder errors, a bomb: the file's fault
            raise InputError(f"could not read image {p.name}: its pixels cannot be decoded (damaged or "
                             f"truncated?); re-save it as PNG or JPEG") from None
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise InputError(f"{src} has shape {arr.shape}; expected (H, W), (H, W, 3) or (H, W, 4)")
    if arr.shape[2] in (2, 4):  # grey+alpha or RGBA: drop alpha
        arr = arr[..., :-1]
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.dtype == np.uint16:
        arr = (arr.astype(np.uint32) * 255 + 32767) // 65535
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise InputError(f"{src} contains NaN or infinite values; give an 8-bit RGB image")
        arr = np.rint(np.clip(arr, 0, 1) * 255) if arr.max() <= 1.0 else np.clip(np.rint(arr), 0, 255)
    elif arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255)
    # a decoded file is ours to return as it is; a caller's array is copied, never aliased
    arr = np.ascontiguousarray(arr.astype(np.uint8, copy=isinstance(path, np.ndarray)))
    if check_size:
        check_panorama_size(arr.shape[0], arr.shape[1], src)
    return arr


def depth_validity(depth_m) -> Dict[str, int]:
    """Counts of a depth map's pixels (metres, before invalid values are zeroed):
    ``{"pixels", "valid", "missing" (exactly 0: no measurement), "nan", "inf", "negative"}``.
    Valid means finite and > 0."""
    d = np.asarray(depth_m)
    nan = np.isnan(d)
    inf = np.isinf(d)
    counts = {"pixels": int(d.size), "nan": int(nan.sum()), "inf": int(inf.sum()),
              "negative": int(np.count_nonzero(d < 0)), "missing": int(np.count_nonzero(d == 0))}
    counts["valid"] = counts["pixels"] - counts["nan"] - counts["inf"] - counts["negative"] - counts["missing"]
    return counts


def depth_note(counts: Dict[str, int]) -> Optional[str]:
    """A one-line note for a user about a depth map's invalid pixels (from `depth_validity`),
    or None when nothing is worth saying: there were no NaN, infinite or negative values and
    at least half of the pixels hold a measurement."""
    bad = counts["nan"] + counts["inf"] + counts["negative"]
    total = max(counts["pixels"], 1)
    if bad == 0 and counts["valid"] >= total / 2:
        return None
    parts = [f"{counts[k]:,} {label}" for k, label in (("nan", "NaN"), ("inf", "infinite"), ("negative", "negative"),
                                                        ("missing", "zero (no measurement)")) if counts[k]]
    share = 100.0 * (total - counts["valid"]) / total
    return (f"Depth: {share:.1f} % of the pixels have no usable depth ({', '.join(parts)}); "
            "they are treated as unknown depth.")


def load_depth(path_or_array, scale: Optional[float] = None, report: Optional[Dict[str, int]] = None) -> np.ndarray:
    """Read a depth map -> float32 ``(H, W)`` metres, ``0`` where there is no measurement.

    * 16-bit PNG/TIFF: ``metres = value * scale``, default ``scale = 0.001``
      (millimetres); ``0`` and ``65535`` are missing. (Stanford2D3DS: ``scale=1/512``.)
      8-bit images are refused from the header unless ``scale`` is given.
    * ``.npy``: metres (times ``scale`` if given); shape and dtype are checked from the header.
    * ``.exr``: metres (first channel) (times ``scale`` if given).
    * an array: integer arrays as 16-bit PNG values (default mm), float arrays
      in metres (times ``scale`` if given).

    NaN, infinite, negative and zero values become 0 (invalid). A map with no valid pixel
    at all is an :class:`InputError`. ``report``: a dict that receives the counts of
    `depth_validity` (see `depth_note` for a user-facing line).
    """
    if scale is not None:
        try:
            scale = float(scale)
        except (TypeError, ValueError):
            raise InputError(f"depth scale must be a number of metres per stored unit, got {scale!r}") from None
        if not (np.isfinite(scale) and scale > 0):
            raise InputError(f"depth scale must be a positive finite number of metres per stored unit, got {scale}")
    counts: Optional[Dict[str, int]] = None
    if isinstance(path_or_array, np.ndarray):
        a = numeric(path_or_array, "depth array")
        src = "depth array"
        if a.ndim == 3 and a.shape[2] >= 1:
            a = a[..., 0]
        if a.ndim != 2:
            raise InputError(f"depth array has shape {path_or_array.shape}; expected (H, W)")
        if np.issubdtype(a.dtype, np.integer):
            d, counts = _ints_to_metres(a, scale)
        else:
            d = a.astype(np.float64) * (1.0 if scale is None else scale)
    else:
        header, p, src, a = _map_file(path_or_array, "depth map", "an (H, W) array in metres")
        if a is not None:
            d = a.astype(np.float64) * (1.0 if scale is None else scale)
        elif header.format == "EXR":
            if not cv2.haveImageReader(str(p)):
                raise InputError(f"cannot read {p.name}: this OpenCV build has no OpenEXR support (or the file "
                                 f"is not a valid EXR); save the depth as a .npy in metres or a 16-bit PNG in "
                                 f"millimetres")
            a = read_any_depth(p, "depth map")
            a = a[..., 0] if a.ndim == 3 else a
            d = a.astype(np.float64) * (1.0 if scale is None else scale)
        else:
            if header.bits <= 8 and scale is None:
                raise InputError(f"{src} is an 8-bit image; depth PNGs must be 16-bit in millimetres "
                                 f"(or pass scale= metres per unit if you know it)")
            a = read_any_depth(p, "depth map")
            a = as_2d(a, "depth map", src)
            if np.issubdtype(a.dtype, np.integer):
                d, counts = _ints_to_metres(a, scale)
            else:
                d = a.astype(np.float64) * (1.0 if scale is None else scale)
        check_panorama_size(d.shape[0], d.shape[1], src)
    clean = counts is not None  # integer sources: counted and cleaned already
    if not clean:
        counts = depth_validity(d)
    if report is not None:
        report.update(counts)
    if counts["valid"] == 0:
        detail = ", ".join(f"{counts[k]:,} {k}" for k in ("nan", "inf", "negative", "missing") if counts[k])
        raise InputError(f"the depth map has no valid pixel ({src}: {detail} of {counts['pixels']:,}): depth "
                         "must be positive metres (.npy/.exr) or millimetres (16-bit PNG). Fix the file or "
                         "leave the depth out")
    return d if clean else _clean_depth(d)


def _ints_to_metres(a: np.ndarray, scale: Optional[float]) -> Tuple[np.ndarray, Dict[str, int]]:
    """Integer depth (16-bit PNG values) -> (float32 metres with invalid values 0, the counts of
    `depth_validity`), counted on the integers: they hold no NaN or inf, so an 8192x4096 map
    needs no float passes beyond the one multiply (three times faster than counting floats)."""
    d = np.multiply(a, np.float32(0.001 if scale is None else scale), dtype=np.float32)
    invalid = a == 65535 if a.dtype == np.uint16 else None  # the PNG convention for "no measurement"
    negative = np.count_nonzero(a < 0) if np.issubdtype(a.dtype, np.signedinteger) else 0
    if negative:
        invalid = a < 0 if invalid is None else invalid | (a < 0)
    n_invalid = 0
    if invalid is not None:
        n_invalid = int(np.count_nonzero(invalid))
        if n_invalid:
            np.copyto(d, np.float32(0.0), where=invalid)
    counts = {"pixels": int(a.size), "nan": 0, "inf": 0, "negative": int(negative),
              "missing": int(np.count_nonzero(a == 0)) + n_invalid - int(negative)}
    counts["valid"] = counts["pixels"] - counts["negative"] - counts["missing"]
    return d, counts


def _clean_depth(d: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):  # metres beyond float32 are invalid anyway
        d = np.asarray(d, dtype=np.float32)
    return np.where(np.isfinite(d) & (d > 0), d, np.float32(0.0))


def load_normals(path) -> np.ndarray:
    """Read a normal map -> uint8 ``(H, W, 3)`` RGB encoded as ``127.5 * (n + 1)``.

    Accepts an 8/16-bit RGB image file, a ``.npy`` of unit vectors ``(H, W, 3)``
    in ``[-1, 1]``, or an array (uint8 RGB, or float unit vectors). Files are checked
    from their header (size, 3 or 4 channels) before they are decoded.
    """
    if isinstance(path, np.ndarray):
        a, src = numeric(path, "normals array"), "normals array"
    else:
        header = read_header(path, "normal map")
        p = Path(path)
        src = f"normal map {p.name}"
        if header.channels < 3:
            raise InputError(f"{src} is not a 3-channel RGB image ({header.channels} channel(s)); "
                             f"normal maps encode (x, y, z) as RGB = 127.5 * (n + 1)")
        if header.format == "NPY":
            a = load_npy(p, "normal map").reshape(header.height, header.width, header.channels)
        else:
            a = read_any_depth(p, "normal map")
            if a.ndim != 3 or a.shape[2] < 3:
                raise InputError(f"{src} is not a 3-channel RGB image (shape {a.shape}); "
                                 f"normal maps encode (x, y, z) as RGB = 127.5 * (n + 1)")
            a = swap_red_blue(a, in_place=True)  # BGR(A) -> RGB
    a = np.asarray(a)
    if a.ndim != 3 or a.shape[2] != 3:
        raise InputError(f"{src} has shape {a.shape}; expected (H, W, 3)")
    if a.dtype == np.uint16:
        a = ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).any():
            raise InputError(f"{src} holds no finite value; float normals must be unit vectors in [-1, 1]")
        if np.nanmin(a) < -1.01 or np.nanmax(a) > 1.01:
            raise InputError(f"{src}: float normals must be unit vectors in [-1, 1]; got values up to "
                             f"{np.nanmax(np.abs(a)):.3g}")
        a = geometry.encode_normals(np.nan_to_num(a))
    elif a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    check_panorama_size(a.shape[0], a.shape[1], src)
    return np.ascontiguousarray(a)


def load_labels(path, palette: Optional[np.ndarray] = None) -> np.ndarray:
    """Read a label map -> ``(H, W)`` class indices (uint8, or uint16/int32 when larger values occur).

    Single-channel 8/16-bit PNG (or ``.npy``). A colour image is accepted only
    with ``palette`` ((K, 3) RGB, e.g. ``STANFORD2D3DS.palette``): each colour
    maps to its index, unknown colours to 255. Files are checked from their header first.
    """
    if isinstance(path, np.ndarray):
        a, src = numeric(path, "labels array"), "labels array"
    else:
        header, p, src, a = _map_file(path, "label map", "an (H, W) label map")
        if a is None:
            a = read_any_depth(p, "label map")
            if a.ndim == 3:
                a = swap_red_blue(a, in_place=True) if a.shape[2] >= 3 else a
    a = np.asarray(a)
    if a.ndim == 3 and (a.shape[2] == 1 or np.all(a == a[..., :1])):
        a = a[..., 0]
    if a.ndim == 3:
        if palette is None:
            raise InputError(f"{src} is a colour image; labels must be single-channel class indices. "
                             f"If it is a colourised label map, pass the dataset palette to decode it")
        pal = np.asarray(palette, dtype=np.int64)
        code = (a[..., 0].astype(np.int64) << 16) | (a[..., 1].astype(np.int64) << 8) | a[..., 2]
        keys = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
        out = np.full(code.shape, 255, dtype=np.uint8)
        for i, k in enumerate(keys):
            out[code == k] = i
        a = out
    if a.ndim != 2:
        raise InputError(f"{src} has shape {a.shape}; expected an (H, W) label map")
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)) or np.any(a != np.rint(a)):
            raise InputError(f"{src} holds non-integer values; labels must be integer class indices")
        a = a.astype(np.int64)
    if not np.issubdtype(a.dtype, np.integer) and a.dtype != bool:
        raise InputError(f"{src} has dtype {a.dtype}; expected integer class indices")
    if a.dtype not in (np.uint8, np.uint16):
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        a = a.astype(np.uint8 if 0 <= lo and hi < 256 else np.int32)
    check_panorama_size(a.shape[0], a.shape[1], src)
    return np.ascontiguousarray(a)
