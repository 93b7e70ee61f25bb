"""Writers: label, depth and normal maps and images to files, in the formats the readers read
(`panosamic.io.readers`), and CSV tables; every file is written whole or not at all where an
interruption could otherwise leave half of it.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import List

import cv2
import numpy as np

from .. import geometry
from ..errors import InputError
from .decode import swap_red_blue
from .headers import PathLike


def _imwrite(path: PathLike, img: np.ndarray, params=()) -> Path:
    p = Path(path)
    ok, buf = cv2.imencode(p.suffix.lower() or ".png", img, list(params))
    if not ok:
        raise InputError(f"could not encode {p.name}; use a .png (or .jpg for RGB) file name")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(buf.tobytes())
    return p


def save_labels_png(path: PathLike, labels, compression: int = 9) -> Path:
    """Write ``(H, W)`` class indices as a single-channel PNG (8-bit if all < 256, else 16-bit).

    Negative values (void, e.g. -1) are written as 255 (8-bit) / 65535 (16-bit).
    ``compression``: zlib level 0-9 (9: smallest; 3: several times faster for 8K maps).
    """
    a = np.asarray(labels)
    if a.ndim != 2:
        raise InputError(f"labels must be (H, W), got shape {a.shape}")
    if a.dtype == np.uint8:  # already what is written (no int64 copy of an 8K map)
        return _imwrite(path, a, [cv2.IMWRITE_PNG_COMPRESSION, int(compression)])
    a = a.astype(np.int64)
    top = int(a.max()) if a.size else 0
    if top > 65534:
        raise InputError(f"label values up to {top} do not fit a 16-bit PNG; save a .npy instead")
    if top <= 255:
        out = np.where(a < 0, 255, a).astype(np.uint8)
    else:
        out = np.where(a < 0, 65535, a).astype(np.uint16)
    return _imwrite(path, out, [cv2.IMWRITE_PNG_COMPRESSION, int(compression)])


def save_depth_png(path: PathLike, depth_m, scale: float = 0.001, compression: int = 9) -> Path:
    """Write metres as a 16-bit PNG of ``round(depth / scale)`` (default millimetres).

    Invalid depth (0, negative, non-finite) is written as 0; values beyond the
    16-bit range are clipped to 65534 (65.534 m at the default scale). `compression`: zlib
    level 0-9 (9, the default, takes tens of seconds at 8192x4096; 3 takes about 3 s).
    """
    d = np.asarray(depth_m, dtype=np.float64)
    if d.ndim != 2:
        raise InputError(f"depth must be (H, W), got shape {d.shape}")
    ok = np.isfinite(d) & (d > 0)
    units = np.where(ok, np.rint(np.where(ok, d, 0) / scale), 0)
    units = np.where(ok, np.clip(units, 1, 65534), 0).astype(np.uint16)
    return _imwrite(path, units, [cv2.IMWRITE_PNG_COMPRESSION, int(compression)])


def save_normals_png(path: PathLike, normals_rgb, compression: int = 9) -> Path:
    """Write a uint8 RGB normal map ``(H, W, 3)`` (or float unit vectors, encoded first) as PNG
    (`compression`: zlib level 0-9, as `save_depth_png`)."""
    a = np.asarray(normals_rgb)
    if a.dtype != np.uint8:
        a = geometry.encode_normals(a)
    return _imwrite(path, swap_red_blue(a), [cv2.IMWRITE_PNG_COMPRESSION, int(compression)])


def save_image(path: PathLike, rgb, quality: int = 92) -> Path:
    """Write uint8 RGB ``(H, W, 3)``: JPEG (given quality, 4:4:4 off = cv2 default) or PNG by extension."""
    a = swap_red_blue(np.asarray(rgb, dtype=np.uint8))
    ext = Path(path).suffix.lower()
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext in (".jpg", ".jpeg") else [cv2.IMWRITE_PNG_COMPRESSION, 9]
    return _imwrite(path, a, params)


def write_csv(path: PathLike, rows, fields: List[str]) -> Path:
    """Rows (dicts) as CSV with a header, written to a temporary file and moved into place, so
    an interrupted run never leaves half a file (the CLI's summary, evaluate's per-sample CSV)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    return path
