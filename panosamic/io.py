"""Reading and writing the panoramas, depth maps, normal maps and label maps users hand to the CLI and app.

Every failure a user can cause (missing file, not an image, wrong bit depth,
too large) raises :class:`panosamic.errors.InputError` with a message that
says what is wrong and what to do.

File conventions (also used by ``assets/examples``)
    * image: any format PIL reads (JPEG, PNG, ...); alpha is dropped, grey is
      replicated to RGB, 16-bit images are scaled to 8 bit.
    * depth: a 16-bit PNG in *millimetres* (``scale = 0.001`` metres per unit,
      ``0`` = no measurement; ``65535`` is treated as missing too, as in
      Stanford2D3DS, whose own PNGs use ``scale = 1/512``), a ``.npy`` array
      in metres, or a ``.exr`` in metres. Depth is the Euclidean distance
      along each pixel's ray (see :mod:`panosamic.geometry`).
    * normals: an 8-bit RGB PNG, ``RGB = 127.5 * (n + 1)`` in the world frame
      (:func:`panosamic.geometry.encode_normals`).
    * labels: a single-channel 8- or 16-bit PNG of class indices (or ``.npy``).
    * companions: for ``X_rgb.ext`` or ``X.ext`` the depth is
      ``X_depth.{png,npy,exr}`` and the normals ``X_normals.png`` in the same
      folder (see :func:`find_companions`).
"""

from __future__ import annotations

import os

# Must be set before OpenCV is first imported for .exr support.
os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")

import struct  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Dict, List, Optional, Tuple, Union  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from . import geometry  # noqa: E402
from .errors import InputError  # noqa: E402

__all__ = [
    "MAX_WIDTH", "MAX_HEIGHT", "MAX_PIXELS", "check_panorama_size", "FileHeader", "read_header",
    "load_image", "load_depth", "depth_validity", "depth_note",
    "load_normals", "load_labels", "save_labels_png", "save_depth_png", "save_normals_png",
    "save_image", "swap_red_blue", "write_csv", "panorama_stem", "find_companions", "EXAMPLES_DIR", "list_examples", "example_paths",
]

PathLike = Union[str, os.PathLike]

#: Largest panorama accepted (width x height); bigger images are refused before decoding.
MAX_WIDTH, MAX_HEIGHT = 8192, 4096
MAX_PIXELS = MAX_WIDTH * MAX_HEIGHT

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DEPTH_EXTS = (".png", ".npy", ".exr")
_RGB_SUFFIXES = ("_rgb", "_image", "_color")

#: The bundled example panoramas (repository checkout).
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "examples"


# --------------------------------------------------------------------------- checks
def check_panorama_size(height: int, width: int, what: str = "panorama") -> None:
    """Raise :class:`InputError` if ``height x width`` exceeds 8192 x 4096 (or is empty)."""
    if height <= 0 or width <= 0:
        raise InputError(f"{what} is empty ({width}x{height} pixels); give a non-empty image")
    if width > MAX_WIDTH or height > MAX_HEIGHT or width * height > MAX_PIXELS:
        raise InputError(
            f"{what} is {width}x{height} pixels, larger than the limit of {MAX_WIDTH}x{MAX_HEIGHT} "
            f"({MAX_PIXELS:,} pixels); downscale it first (the model works at 1024x512 anyway)")


def _path(path: PathLike, what: str) -> Path:
    """The file behind `path`; messages name only its base name (never the folders above it)."""
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"{what}: expected a file path or an array, got {type(path).__name__}")
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} file not found: {p.name}; check the path")
    if p.is_dir():
        raise InputError(f"{what} path is a folder, not a file: {p.name}; give the file itself")
    return p


# --------------------------------------------------------------------------- headers
#: Image formats read from files (by content, not by extension). Anything else is refused
#: before any decoder runs, so OpenCV never decodes a format whose header was not checked.
PIL_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP")  # JPEG also opens MPO (phone cameras)
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_EXR_MAGIC = b"\x76\x2f\x31\x01"
_NPY_MAGIC = b"\x93NUMPY"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # colour type -> samples per decoded pixel
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


def _unreadable(what: str, name: str, detail: str = "") -> InputError:
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
    p = _path(path, what)
    name = p.name
    try:
        with open(p, "rb") as f:
            head = f.read(32)
            if head.startswith(_NPY_MAGIC):
                f.seek(0)
                h = _npy_header(f, what, name)
            elif head.startswith(_EXR_MAGIC):
                h = _exr_header(head + f.read(1 << 16), what, name)
            elif head.startswith(_PNG_MAGIC):
                h = _png_header(head, what, name)
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


def _png_header(head: bytes, what: str, name: str) -> FileHeader:
    if len(head) < 26 or head[12:16] != b"IHDR":
        raise _unreadable(what, name, "a damaged PNG")
    width, height, bits, colour = struct.unpack(">IIBB", head[16:26])
    if colour not in _PNG_CHANNELS or bits not in (1, 2, 4, 8, 16):
        raise _unreadable(what, name, f"a PNG with an invalid header (bit depth {bits}, colour type {colour})")
    return FileHeader("PNG", width, height, _PNG_CHANNELS[colour], 8 if colour == 3 else bits)


def _pil_header(p: Path, what: str, name: str) -> FileHeader:
    from PIL import Image

    Image.init()  # registers WebP and TIFF too, so that `formats=` can name them
    try:
        with Image.open(p, formats=PIL_FORMATS) as im:  # lazy: reads the header only
            width, height = im.size
            mode, fmt = im.mode, im.format
            bits = 16 if mode.startswith("I;16") else 32 if mode in ("I", "F") else 1 if mode == "1" else 8
            channels = len(im.getbands()) if mode != "P" else 3
            if fmt == "TIFF":  # PIL reports a 16-bit RGB TIFF as RGB; the tags say what is stored
                tags = getattr(im, "tag_v2", {})
                per_sample = tags.get(258, (bits,))
                bits = max(per_sample) if isinstance(per_sample, tuple) else int(per_sample)
                channels = int(tags.get(277, channels))
    except Image.DecompressionBombError:
        # PIL refuses more than 2 x Image.MAX_IMAGE_PIXELS: far more than our own limit
        raise InputError(f"{what} {name} is larger than the limit of {MAX_WIDTH}x{MAX_HEIGHT} pixels; "
                         "downscale it first (the model works at 1024x512 anyway)") from None
    except Exception:  # noqa: BLE001 - whatever the header parser trips on is the file's fault
        expected = {".exr": "not a valid OpenEXR file", ".npy": "not a numpy .npy array (save it with numpy.save)"}
        raise _unreadable(what, name, expected.get(p.suffix.lower(), "")) from None
    return FileHeader(str(fmt), width, height, channels, bits)


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
        raise _unreadable(what, name, "a damaged OpenEXR header") from None
    if window is None or not types:
        raise _unreadable(what, name, "an OpenEXR header without a data window or channels")
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


def _imread(p: Path, flags: int, what: str) -> np.ndarray:
    """cv2.imdecode of a file whose header was checked (works with non-ASCII paths too)."""
    data = np.fromfile(str(p), dtype=np.uint8)
    try:
        img = cv2.imdecode(data, flags) if data.size else None
    except Exception:  # noqa: BLE001 - cv2.error and friends: the file's fault
        img = None
    if img is None:
        raise _unreadable(what, p.name, "its pixels cannot be decoded")
    return img


def _load_npy(p: Path, what: str) -> np.ndarray:
    """np.load without pickles, after `read_header` checked its shape and dtype."""
    try:
        return np.load(p, allow_pickle=False)
    except Exception:  # noqa: BLE001 - any failure is the user's file
        raise InputError(f"could not read {what} {p.name} as a numpy .npy array; save it with numpy.save") from None


def _numeric(a: np.ndarray, src: str) -> np.ndarray:
    """`a` if it holds plain numbers (bool, integers, floats), else InputError."""
    if a.dtype.kind not in "biuf":
        raise InputError(f"{src} has dtype {a.dtype}; expected numbers (integers or floats)")
    return a


def _as_2d(a: np.ndarray, what: str, src: str) -> np.ndarray:
    if a.ndim == 3:
        if a.shape[2] == 1 or np.all(a == a[..., :1]):
            return a[..., 0]
        return a[..., 0] if what == "depth map" else a
    if a.ndim != 2:
        raise InputError(f"{src} has shape {a.shape}; expected a single-channel (H, W) map")
    return a


# --------------------------------------------------------------------------- readers
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
        arr = _numeric(path, "image array")
        src = "image array"
    elif isinstance(path, Image.Image):
        arr, src = _pil_to_array(path), "image"
    else:
        header = read_header(path, "image", check_size=check_size)
        p = Path(path)
        src = f"image {p.name}"
        if header.format in ("NPY", "EXR"):
            raise _unreadable("image", p.name, f"a {header.format} file, not a picture")
        try:
            if header.format == "JPEG" and header.channels in (1, 3) and _ends_with_jpeg_eoi(p):
                # what cameras write: OpenCV's decoder, the same pixels as PIL's, with no extra
                # copy (8K: ~100 MB less at its peak); PIL does the rest, and says when a JPEG
                # is truncated, where OpenCV would fill the missing part with grey
                arr = _imread(p, cv2.IMREAD_UNCHANGED, "image")
                if arr.ndim == 3:
                    arr = swap_red_blue(arr, in_place=True)
            else:
                with Image.open(p, formats=PIL_FORMATS) as im:
                    arr = _pil_to_array(im)
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


def _ends_with_jpeg_eoi(p: Path) -> bool:
    """Whether the file's last bytes are a JPEG end-of-image marker (FF D9), which a truncated
    file lacks (a camera's trailer after the image, e.g. a motion photo's video, also says no)."""
    with open(p, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 2))
        return f.read(2) == b"\xff\xd9"


def _pil_to_array(im) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im)
        return a.astype(np.uint16) if a.max() <= 65535 else (a >> 16).astype(np.uint16)
    if im.mode == "F":
        return np.asarray(im, dtype=np.float32)
    if im.mode not in ("RGB", "RGBA", "L", "LA"):
        im = im.convert("RGBA" if "A" in im.mode or "transparency" in im.info else "RGB")
    return _pixels_by_strips(im)


def _pixels_by_strips(im, rows: int = 256) -> np.ndarray:
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
        a = _numeric(path_or_array, "depth array")
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
        header = read_header(path_or_array, "depth map")
        p = Path(path_or_array)
        src = f"depth map {p.name}"
        if header.format == "NPY":
            if header.channels != 1:
                raise InputError(f"{src} has {header.channels} channels; expected an (H, W) array in metres")
            a = _load_npy(p, "depth map").reshape(header.height, header.width)
            d = a.astype(np.float64) * (1.0 if scale is None else scale)
        elif header.format == "EXR":
            if not cv2.haveImageReader(str(p)):
                raise InputError(f"cannot read {p.name}: this OpenCV build has no OpenEXR support (or the file "
                                 f"is not a valid EXR); save the depth as a .npy in metres or a 16-bit PNG in "
                                 f"millimetres")
            a = _imread(p, cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH, "depth map")
            a = a[..., 0] if a.ndim == 3 else a
            d = a.astype(np.float64) * (1.0 if scale is None else scale)
        else:
            if header.bits <= 8 and scale is None:
                raise InputError(f"{src} is an 8-bit image; depth PNGs must be 16-bit in millimetres "
                                 f"(or pass scale= metres per unit if you know it)")
            a = _imread(p, cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH, "depth map")
            a = _as_2d(a, "depth map", src)
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
        a, src = _numeric(path, "normals array"), "normals array"
    else:
        header = read_header(path, "normal map")
        p = Path(path)
        src = f"normal map {p.name}"
        if header.channels < 3:
            raise InputError(f"{src} is not a 3-channel RGB image ({header.channels} channel(s)); "
                             f"normal maps encode (x, y, z) as RGB = 127.5 * (n + 1)")
        if header.format == "NPY":
            a = _load_npy(p, "normal map").reshape(header.height, header.width, header.channels)
        else:
            a = _imread(p, cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH, "normal map")
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
        a, src = _numeric(path, "labels array"), "labels array"
    else:
        header = read_header(path, "label map")
        p = Path(path)
        src = f"label map {p.name}"
        if header.format == "NPY":
            if header.channels != 1:
                raise InputError(f"{src} has {header.channels} channels; expected an (H, W) label map")
            a = _load_npy(p, "label map").reshape(header.height, header.width)
        else:
            a = _imread(p, cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH, "label map")
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


# --------------------------------------------------------------------------- writers
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


# --------------------------------------------------------------------------- companions
def panorama_stem(path: PathLike, safe: bool = False) -> str:
    """The name a panorama's companions and outputs share: the file stem without a trailing
    ``_rgb``, ``_image`` or ``_color`` (any case), e.g. ``room_rgb.jpg`` -> ``room``.

    The one rule for companion lookup (:func:`find_companions`), the CLI's output names and
    the app's downloads. ``safe=True`` also makes it a portable file name: characters other
    than letters, digits, ``-`` and ``_`` become ``_``, at most 64 characters, ``panorama``
    when nothing is left.
    """
    stem = Path(os.fspath(path)).stem
    for suffix in _RGB_SUFFIXES:
        if stem.lower().endswith(suffix) and len(stem) > len(suffix):
            stem = stem[: -len(suffix)]
            break
    if safe:
        stem = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in stem)[:64] or "panorama"
    return stem


def find_companions(path: PathLike) -> Dict[str, Optional[Path]]:
    """The depth and normal maps that belong to a panorama, by file name.

    For ``X_rgb.ext`` (also ``X_image``/``X_color``) or ``X.ext`` in folder F:
    depth is the first of ``F/X_depth.png``, ``.npy``, ``.exr`` that exists and
    normals ``F/X_normals.png``. Returns ``{"image": path, "depth": Path|None,
    "normals": Path|None}``.
    """
    p = Path(path)
    base = panorama_stem(p)
    folder = p.parent
    depth = next((folder / f"{base}_depth{ext}" for ext in DEPTH_EXTS if (folder / f"{base}_depth{ext}").is_file()), None)
    normals = folder / f"{base}_normals.png"
    return {"image": p, "depth": depth, "normals": normals if normals.is_file() else None}


# --------------------------------------------------------------------------- bundled examples
def list_examples(folder: Optional[PathLike] = None) -> List[str]:
    """Names of the labelled example panoramas in ``folder`` (default: the bundled
    assets/examples): each ``<name>_rgb.jpg`` with its ``<name>_labels.png`` ground truth, the
    rendered rooms that evaluation and training iterate. The photographs beside them (RGB only,
    listed in photos.json) have no labels and are not among them."""
    folder = Path(folder) if folder is not None else EXAMPLES_DIR
    if not folder.is_dir():
        return []
    names = (p.name[: -len("_rgb.jpg")] for p in folder.glob("*_rgb.jpg"))
    return sorted(n for n in names if (folder / f"{n}_labels.png").is_file())


def example_paths(name: str, folder: Optional[PathLike] = None) -> Dict[str, Path]:
    """Paths of one example's files: image, depth, normals, labels, meta."""
    folder = Path(folder) if folder is not None else EXAMPLES_DIR
    paths = {"image": folder / f"{name}_rgb.jpg", "depth": folder / f"{name}_depth.png",
             "normals": folder / f"{name}_normals.png", "labels": folder / f"{name}_labels.png",
             "meta": folder / f"{name}.json"}
    if not paths["image"].is_file():
        known = ", ".join(list_examples(folder)) or "none"
        raise InputError(f"no example named {name!r} in {folder}; known examples: {known}")
    return paths


def write_csv(path: PathLike, rows, fields: List[str]) -> Path:
    """Rows (dicts) as CSV with a header, written to a temporary file and moved into place, so
    an interrupted run never leaves half a file (the CLI's summary, evaluate's per-sample CSV)."""
    import csv

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    return path

