"""Decoding checked files into arrays: OpenCV for PNG/JPEG/EXR pixels, PIL for the rest, numpy
for `.npy` (no pickles), and RGB <-> BGR for OpenCV. Callers check the header first
(`panosamic.io.headers.read_header`), so no decoder sees a format or size that was not checked.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError
from .headers import unreadable


def swap_red_blue(a: np.ndarray, in_place: bool = False) -> np.ndarray:
    """RGB <-> BGR: the first three channels of an (H, W, C>=3) image in reverse order, as a
    contiguous (H, W, 3) array (alpha dropped); `in_place` reuses a 3-channel `a` the caller
    owns (a decoded file: no second 100 MB at 8K). OpenCV's conversion where it can (uint8,
    uint16, float32): copying numpy's reversed view instead takes ~20 ms at 2048x1024 and
    ~0.3 s at 8K, about 30x longer."""
    a = np.asarray(a)
    if a.dtype in (np.uint8, np.uint16, np.float32) and a.shape[2] in (3, 4):
        if a.shape[2] == 3:
            dst = a if in_place and a.flags.c_contiguous and a.flags.writeable else None
            return cv2.cvtColor(a, cv2.COLOR_BGR2RGB, dst=dst)
        return cv2.cvtColor(a, cv2.COLOR_BGRA2RGB)
    return np.ascontiguousarray(a[..., 2::-1])


def imread(p: Path, flags: int, what: str) -> np.ndarray:
    """cv2.imdecode of a file whose header was checked (works with non-ASCII paths too)."""
    data = np.fromfile(str(p), dtype=np.uint8)
    try:
        img = cv2.imdecode(data, flags) if data.size else None
    except Exception:  # noqa: BLE001 - cv2.error and friends: the file's fault
        img = None
    if img is None:
        raise unreadable(what, p.name, "its pixels cannot be decoded")
    return img


def load_npy(p: Path, what: str) -> np.ndarray:
    """np.load without pickles, after `read_header` checked its shape and dtype."""
    try:
        return np.load(p, allow_pickle=False)
    except Exception:  # noqa: BLE001 - any failure is the user's file
        raise InputError(f"could not read {what} {p.name} as a numpy .npy array; save it with numpy.save") from None


def numeric(a: np.ndarray, src: str) -> np.ndarray:
    """`a` if it holds plain numbers (bool, integers, floats), else InputError."""
    if a.dtype.kind not in "biuf":
        raise InputError(f"{src} has dtype {a.dtype}; expected numbers (integers or floats)")
    return a


def as_2d(a: np.ndarray, what: str, src: str) -> np.ndarray:
    if a.ndim == 3:
        if a.shape[2] == 1 or np.all(a == a[..., :1]):
            return a[..., 0]
        return a[..., 0] if what == "depth map" else a
    if a.ndim != 2:
        raise InputError(f"{src} has shape {a.shape}; expected a single-channel (H, W) map")
    return a


def ends_with_jpeg_eoi(p: Path) -> bool:
    """Whether the file's last bytes are a JPEG end-of-image marker (FF D9), which a truncated
    file lacks (a camera's trailer after the image, e.g. a motion photo's video, also says no)."""
    with open(p, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 2))
        return f.read(2) == b"\xff\xd9"


def pil_to_array(im) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im)
        return a.astype(np.uint16) if a.max() <= 65535 else (a >> 16).astype(np.uint16)
    if im.mode == "F":
        return np.asarray(im, dtype=np.float32)
    if im.mode not in ("RGB", "RGBA", "L", "LA"):
        im = im.convert("RGBA" if "A" in im.mode or "transparency" in im.info else "RGB")
    return pixels_by_strips(im)


def pixels_by_strips(im, rows: int = 256) -> np.ndarray:
    """The 8-bit pixels of a decoded PIL image as a writable (H, W, bands) uint8 array, copied a
    strip of rows at a time: `np.asarray(im)` goes through one `tobytes()` of the whole image,
    joined from chunks, which at 8K costs ~80 MB more at its peak and takes ~1.5x as long."""
    im.load()
    w, h = im.size
    bands = len(im.getbands())
    out = np.empty((h, w, bands), np.uint8)
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        out[r0:r1] = np.frombuffer(im.crop((0, r0, w, r1)).tobytes(), np.uint8).reshape(r1 - r0, w, bands)
    return out


def read_any_depth(p: Path, what: str) -> np.ndarray:
    """A checked PNG/TIFF/EXR map's samples as stored (8/16-bit integers or floats; colour as BGR)."""
    return imread(p, cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH, what)
