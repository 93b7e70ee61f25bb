"""File headers: format, size, channels and bit depth of a file before any decoder runs.

`read_header` reads a few hundred bytes: PIL's lazy open for PNG, JPEG, WebP, TIFF and BMP,
a small OpenEXR header walk (single part only) and numpy's own `.npy` header parser (no
pickles). A decompression bomb costs nothing here; every refusal is an `InputError` that
names the file by its base name and says what to give instead.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..errors import InputError

PathLike = Union[str, os.PathLike]

#: Largest panorama accepted (width x height); bigger images are refused before decoding.
MAX_WIDTH, MAX_HEIGHT = 8192, 4096
MAX_PIXELS = MAX_WIDTH * MAX_HEIGHT


def check_panorama_size(height: int, width: int, what: str = "panorama") -> None:
    """Raise :class:`InputError` if ``height x width`` exceeds 8192 x 4096 (or is empty)."""
    if height <= 0 or width <= 0:
        raise InputError(f"{what} is empty ({width}x{height} pixels); give a non-empty image")
    if width > MAX_WIDTH or height > MAX_HEIGHT or width * height > MAX_PIXELS:
        raise InputError(
            f"{what} is {width}x{height} pixels, larger than the limit of {MAX_WIDTH}x{MAX_HEIGHT} "
            f"({MAX_PIXELS:,} pixels); downscale it first (the model works at 1024x512 anyway)")


def existing_file(path: PathLike, what: str) -> Path:
    """The file behind `path`; messages name only its base name (never the folders above it)."""
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"{what}: expected a file path or an array, got {type(path).__name__}")
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} file not found: {p.name}; check the path")
    if p.is_dir():
        raise InputError(f"{what} path is a folder, not a file: {p.name}; give the file itself")
    return p


#: Image formats read from files (by content, not by extension). Anything else is refused
#: before any decoder runs, so OpenCV never decodes a format whose header was not checked.
PIL_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP")  # JPEG also opens MPO (phone cameras)
_EXR_MAGIC = b"\x76\x2f\x31\x01"
_NPY_MAGIC = b"\x93NUMPY"
_HINTS = {"image": "JPEG or PNG", "depth map": "a 16-bit PNG in millimetres, .npy or .exr in metres",
          "normal map": "an RGB PNG", "label map": "a single-channel PNG"}


@dataclass(frozen=True)
class FileHeader:
    """What a file's header says, read without decoding any pixel.

    format: "PNG", "JPEG", "MPO", "WEBP", "TIFF", "BMP", "EXR" or "NPY".
    width, height: pixels (a .npy's first two axes after dropping length-1 axes).
    channels: samples per pixel (1 grey, 3 RGB, 4 RGBA; a .npy's third axis, else 1).
    bits: bits per sample (1..16 for images, 16/32 for EXR, the item size for .npy).
    dtype: the sample type of a .npy ("uint16", "float32", ...), else None.
    """

    format: str
    width: int
    height: int
    channels: int
    bits: int
    dtype: Optional[str] = None


def unreadable(what: str, name: str, detail: str = "") -> InputError:
    return InputError(f"could not read {what} {name}: {detail or 'not an image file PanoSAMic reads'} "
                      f"(is it truncated or another format?); use {_HINTS.get(what, 'PNG')}")


def read_header(path: PathLike, what: str = "image", check_size: bool = True) -> FileHeader:
    """The dimensions, channels and bit depth of an image, ``.exr`` or ``.npy`` file from its
    header alone (a few hundred bytes: a decompression bomb costs nothing here).

    Raises :class:`InputError` for a missing or unreadable file, a format other than PNG, JPEG,
    WebP, TIFF, BMP, OpenEXR (single part) or ``.npy`` (numbers only, no pickles), more than 4
    channels, and (with ``check_size``) more than ``MAX_WIDTH x MAX_HEIGHT`` pixels. Messages
    name the file by its base name. ``what`` names the file's role ("image", "depth map", ...).
    """
    p = existing_file(path, what)
    name = p.name
    try:
        with open(p, "rb") as f:
            head = f.read(32)
            if head.startswith(_NPY_MAGIC):
                f.seek(0)
                h = _npy_header(f, what, name)
            elif head.startswith(_EXR_MAGIC):
                h = _exr_header(head + f.read(1 << 16), what, name)
            else:
                h = _pil_header(p, what, name)
    except OSError:
        raise InputError(f"could not open {what} {name}; check that it is a readable file") from None
    if check_size:
        check_panorama_size(h.height, h.width, f"{what} {name}")
    elif h.width <= 0 or h.height <= 0:
        raise InputError(f"{what} {name} is empty ({h.width}x{h.height} pixels); give a non-empty image")
    if not 1 <= h.channels <= 4:
        raise InputError(f"{what} {name} has {h.channels} channels; expected 1 (grey), 3 (RGB) or 4 (RGBA)")
    return h


def _lazy_open(f, filename: str):
    """The PIL image of an open file, header read and no pixel decoded, for the first of
    `PIL_FORMATS` whose plug-in accepts it; SyntaxError if none does. Like `Image.open(fp,
    formats=PIL_FORMATS)` without its decompression-bomb check, so that a bomb's size is known
    (from its first bytes) and `check_panorama_size`, our own limit, decides about it."""
    from PIL import Image

    Image.init()  # registers WebP and TIFF too
    prefix = f.read(16)
    for fmt in PIL_FORMATS:
        factory, accept = Image.OPEN[fmt]
        verdict = accept(prefix) if accept else True
        if isinstance(verdict, str):  # the plug-in knows the file and says why it cannot read it
            raise SyntaxError(verdict)
        if not verdict:
            continue
        f.seek(0)
        try:
            return factory(f, filename)
        except (SyntaxError, IndexError, TypeError, struct.error):
            f.seek(0)  # as Image.open: the next plug-in may read it
    raise SyntaxError("not a PNG, JPEG, WebP, TIFF or BMP file")


def _pil_header(p: Path, what: str, name: str) -> FileHeader:
    """PIL's lazy open: PNG, JPEG, WebP, TIFF and BMP headers without decoding a pixel."""
    try:
        with open(p, "rb") as f:
            im = _lazy_open(f, str(p))
            width, height = im.size
            mode, fmt = im.mode, im.format
            bits = 16 if mode.startswith("I;16") else 32 if mode in ("I", "F") else 1 if mode == "1" else 8
            channels = len(im.getbands()) if mode != "P" else 3
            if fmt == "PNG" and im.tile and ";16" in str(im.tile[0][3]):
                bits = 16  # PIL opens a 16-bit RGB(A) or grey+alpha PNG as 8-bit; its raw mode says 16
            if fmt == "TIFF":  # PIL reports a 16-bit RGB TIFF as RGB; the tags say what is stored
                tags = getattr(im, "tag_v2", {})
                per_sample = tags.get(258, (bits,))
                bits = max(per_sample) if isinstance(per_sample, tuple) else int(per_sample)
                channels = int(tags.get(277, channels))
    except Exception:  # noqa: BLE001 - whatever the header parser trips on is the file's fault
        raise unreadable(what, name, _EXPECTED.get(p.suffix.lower(), "")) from None
    return FileHeader(str(fmt), width, height, channels, bits)


_EXPECTED = {".exr": "not a valid OpenEXR file", ".npy": "not a numpy .npy array (save it with numpy.save)"}


def _exr_header(data: bytes, what: str, name: str) -> FileHeader:
    """The data window and channels of a single-part scanline/tiled OpenEXR header."""
    try:
        version = struct.unpack("<I", data[4:8])[0]
        if version & 0xFF != 2 or version & (0x800 | 0x1000):  # deep data or multi-part
            raise InputError(f"{what} {name} is a multi-part or deep OpenEXR; save a single-part EXR "
                             "(or a .npy in metres)")
        pos, window, types = 8, None, []
        while True:
            end = data.index(b"\0", pos)
            attr = data[pos:end]
            if not attr:
                break
            tend = data.index(b"\0", end + 1)
            kind = data[end + 1:tend]
            size = struct.unpack("<i", data[tend + 1:tend + 5])[0]
            value = data[tend + 5:tend + 5 + size]
            if size < 0 or len(value) != size:
                raise ValueError("attribute runs past the header")
            pos = tend + 5 + size
            if attr == b"dataWindow" and kind == b"box2i":
                window = struct.unpack("<4i", value)
            elif attr == b"channels" and kind == b"chlist":
                cpos = 0
                while value[cpos:cpos + 1] not in (b"\0", b""):
                    cend = value.index(b"\0", cpos)
                    types.append(struct.unpack("<i", value[cend + 1:cend + 5])[0])
                    cpos = cend + 17
    except InputError:
        raise
    except (ValueError, struct.error):
        raise unreadable(what, name, "a damaged OpenEXR header") from None
    if window is None or not types:
        raise unreadable(what, name, "an OpenEXR header without a data window or channels")
    x0, y0, x1, y1 = window
    bits = max({1: 16}.get(t, 32) for t in types)
    return FileHeader("EXR", x1 - x0 + 1, y1 - y0 + 1, len(types), bits)


def _npy_header(f, what: str, name: str) -> FileHeader:
    """Shape and dtype of a .npy from its header (numpy's own parser, no pickles)."""
    from numpy.lib import format as npformat

    try:
        version = npformat.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = npformat.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = npformat.read_array_header_2_0(f)
        else:
            raise ValueError(f"version {version}")
        offset = f.tell()
    except Exception:  # noqa: BLE001 - a damaged or foreign header
        raise InputError(f"could not read {what} {name} as a numpy .npy array (damaged header); "
                         "save it with numpy.save") from None
    if dtype.hasobject or dtype.kind not in "biuf" or dtype.itemsize > 8:
        raise InputError(f"{what} {name} holds {dtype} values; give an array of plain numbers "
                         "(integers or floats: no objects, strings or pickles)")
    dims = [int(n) for n in shape if n != 1] if len(shape) not in (2, 3) else [int(n) for n in shape]
    if len(dims) not in (2, 3):
        raise InputError(f"{what} {name} has shape {tuple(shape)}; expected (H, W) or (H, W, C)")
    channels = dims[2] if len(dims) == 3 else 1
    check_panorama_size(dims[0], dims[1], f"{what} {name}")  # before the size of the data means anything
    f.seek(0, os.SEEK_END)
    if f.tell() - offset < int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
        raise InputError(f"{what} {name} is truncated: its header promises shape {tuple(shape)} of "
                         f"{dtype}; save it again with numpy.save")
    return FileHeader("NPY", dims[1], dims[0], channels, 8 * dtype.itemsize, str(dtype))
