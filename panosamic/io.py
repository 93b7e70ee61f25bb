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

from pathlib import Path  # noqa: E402
from typing import Dict, List, Optional, Union  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from . import geometry  # noqa: E402
from .errors import InputError  # noqa: E402

__all__ = [
    "MAX_WIDTH", "MAX_HEIGHT", "MAX_PIXELS", "check_panorama_size", "load_image", "load_depth",
    "load_normals", "load_labels", "save_labels_png", "save_depth_png", "save_normals_png",
    "save_image", "panorama_stem", "find_companions", "EXAMPLES_DIR", "list_examples", "example_paths",
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
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} file not found: {p}; check the path")
    if p.is_dir():
        raise InputError(f"{what} path is a folder, not a file: {p}; give the file itself")
    return p


def _imread(p: Path, flags: int, what: str) -> np.ndarray:
    """cv2.imread that also works with non-ASCII paths; raises InputError when undecodable."""
    data = np.fromfile(str(p), dtype=np.uint8)
    img = cv2.imdecode(data, flags) if data.size else None
    if img is None:
        raise InputError(f"could not read {what} {p}: not an image OpenCV can decode "
                         f"(is it truncated or another format?); use PNG" + (" or EXR" if what == "depth" else ""))
    return img


def _load_npy(p: Path, what: str) -> np.ndarray:
    """np.load without pickles; raises InputError when the file is not a .npy array."""
    try:
        return np.load(p, allow_pickle=False)
    except Exception as err:  # noqa: BLE001 - any failure is the user's file
        raise InputError(f"could not read {what} {p} as a numpy .npy array ({err}); save it with numpy.save") from None


def _as_2d(a: np.ndarray, what: str, p) -> np.ndarray:
    if a.ndim == 3:
        if a.shape[2] == 1 or np.all(a == a[..., :1]):
            return a[..., 0]
        return a[..., 0] if what == "depth" else a
    if a.ndim != 2:
        raise InputError(f"{what} {p} has shape {a.shape}; expected a single-channel (H, W) map")
    return a


# --------------------------------------------------------------------------- readers
def load_image(path, check_size: bool = True) -> np.ndarray:
    """Read a panorama: a path (any PIL format), a PIL image or an array -> uint8 ``(H, W, 3)`` RGB.

    Alpha is dropped, grey is replicated to three channels, 16-bit and float
    (0..1) images are converted to 8 bit. With ``check_size`` images larger
    than 8192x4096 are refused (before decoding, for files).
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(path, np.ndarray):
        arr = path
        src = "image array"
    elif isinstance(path, Image.Image):
        arr, src = _pil_to_array(path), "image"
    else:
        p = _path(path, "image")
        src = str(p)
        try:
            with Image.open(p) as im:
                if check_size:
                    check_panorama_size(im.height, im.width, f"image {p.name}")
                arr = _pil_to_array(im)
        except UnidentifiedImageError:
            raise InputError(f"could not read image {p}: not an image file PIL recognises; "
                             f"use JPEG or PNG") from None
        except (OSError, SyntaxError, ValueError) as err:
            if isinstance(err, InputError):
                raise
            raise InputError(f"could not read image {p}: {err}; re-save it as PNG or JPEG") from None
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
    arr = np.ascontiguousarray(arr.astype(np.uint8))
    if check_size:
        check_panorama_size(arr.shape[0], arr.shape[1], src)
    return arr


def _pil_to_array(im) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im)
        return a.astype(np.uint16) if a.max() <= 65535 else (a >> 16).astype(np.uint16)
    if im.mode == "F":
        return np.asarray(im, dtype=np.float32)
    if im.mode not in ("RGB", "RGBA", "L", "LA"):
        im = im.convert("RGBA" if "A" in im.mode or "transparency" in im.info else "RGB")
    return np.asarray(im)


def load_depth(path_or_array, scale: Optional[float] = None) -> np.ndarray:
    """Read a depth map -> float32 ``(H, W)`` metres, ``0`` where there is no measurement.

    * 16-bit PNG/TIFF: ``metres = value * scale``, default ``scale = 0.001``
      (millimetres); ``0`` and ``65535`` are missing. (Stanford2D3DS: ``scale=1/512``.)
    * ``.npy``: metres (times ``scale`` if given).
    * ``.exr``: metres (first channel) (times ``scale`` if given).
    * an array: integer arrays as 16-bit PNG values (default mm), float arrays
      in metres (times ``scale`` if given).

    Non-finite and non-positive values become 0 (invalid).
    """
    if isinstance(path_or_array, np.ndarray):
        a = path_or_array
        if a.ndim == 3 and a.shape[2] >= 1:
            a = a[..., 0]
        if a.ndim != 2:
            raise InputError(f"depth array has shape {path_or_array.shape}; expected (H, W)")
        if np.issubdtype(a.dtype, np.integer):
            d = _ints_to_metres(a, scale)
        else:
            d = a.astype(np.float64) * (1.0 if scale is None else scale)
        return _clean_depth(d)
    p = _path(path_or_array, "depth")
    ext = p.suffix.lower()
    if ext == ".npy":
        a = np.squeeze(_load_npy(p, "depth"))
        if a.ndim != 2:
            raise InputError(f"depth {p} has shape {a.shape}; expected an (H, W) array in metres")
        d = a.astype(np.float64) * (1.0 if scale is None else scale)
    elif ext == ".exr":
        if not cv2.haveImageReader(str(p)):
            raise InputError(f"cannot read {p.name}: this OpenCV build has no OpenEXR support (or the file is "
                             f"not a valid EXR); save the depth as a .npy in metres or a 16-bit PNG in millimetres")
        a = _imread(p, cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH, "depth")
        a = a[..., 0] if a.ndim == 3 else a
        d = a.astype(np.float64) * (1.0 if scale is None else scale)
    else:
        a = _imread(p, cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH, "depth")
        a = _as_2d(a, "depth", p)
        if a.dtype == np.uint8 and scale is None:
            raise InputError(f"depth {p} is an 8-bit image; depth PNGs must be 16-bit in millimetres "
                             f"(or pass scale= metres per unit if you know it)")
        if np.issubdtype(a.dtype, np.integer):
            d = _ints_to_metres(a, scale)
        else:
            d = a.astype(np.float64) * (1.0 if scale is None else scale)
    check_panorama_size(d.shape[0], d.shape[1], f"depth {p.name}")
    return _clean_depth(d)


def _ints_to_metres(a: np.ndarray, scale: Optional[float]) -> np.ndarray:
    # float32 throughout: an 8192x4096 map is 128 MB, and float64 temporaries doubled the time
    d = a.astype(np.float32)
    d *= np.float32(0.001 if scale is None else scale)
    if a.dtype == np.uint16:
        d[a == 65535] = 0.0
    return d


def _clean_depth(d: np.ndarray) -> np.ndarray:
    d = np.asarray(d, dtype=np.float32)
    return np.where(np.isfinite(d) & (d > 0), d, np.float32(0.0))


def load_normals(path) -> np.ndarray:
    """Read a normal map -> uint8 ``(H, W, 3)`` RGB encoded as ``127.5 * (n + 1)``.

    Accepts an 8/16-bit RGB image file, a ``.npy`` of unit vectors ``(H, W, 3)``
    in ``[-1, 1]``, or an array (uint8 RGB, or float unit vectors).
    """
    if isinstance(path, np.ndarray):
        a, src = path, "normals array"
    else:
        p = _path(path, "normals")
        src = str(p)
        if p.suffix.lower() == ".npy":
            a = _load_npy(p, "normals")
        else:
            a = _imread(p, cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH, "normals")
            if a.ndim != 3 or a.shape[2] < 3:
                raise InputError(f"normals {p} is not a 3-channel RGB image (shape {a.shape}); "
                                 f"normal maps encode (x, y, z) as RGB = 127.5 * (n + 1)")
            a = a[..., 2::-1]  # BGR(A) -> RGB
    a = np.asarray(a)
    if a.ndim != 3 or a.shape[2] != 3:
        raise InputError(f"{src} has shape {a.shape}; expected (H, W, 3)")
    if a.dtype == np.uint16:
        a = ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
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
    maps to its index, unknown colours to 255.
    """
    if isinstance(path, np.ndarray):
        a, src = path, "labels array"
    else:
        p = _path(path, "labels")
        src = str(p)
        if p.suffix.lower() == ".npy":
            a = _load_npy(p, "labels")
        else:
            a = _imread(p, cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH, "labels")
            if a.ndim == 3:
                a = a[..., 2::-1] if a.shape[2] >= 3 else a
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


def save_depth_png(path: PathLike, depth_m, scale: float = 0.001) -> Path:
    """Write metres as a 16-bit PNG of ``round(depth / scale)`` (default millimetres).

    Invalid depth (0, negative, non-finite) is written as 0; values beyond the
    16-bit range are clipped to 65534 (65.534 m at the default scale).
    """
    d = np.asarray(depth_m, dtype=np.float64)
    if d.ndim != 2:
        raise InputError(f"depth must be (H, W), got shape {d.shape}")
    ok = np.isfinite(d) & (d > 0)
    units = np.where(ok, np.rint(np.where(ok, d, 0) / scale), 0)
    units = np.where(ok, np.clip(units, 1, 65534), 0).astype(np.uint16)
    return _imwrite(path, units, [cv2.IMWRITE_PNG_COMPRESSION, 9])


def save_normals_png(path: PathLike, normals_rgb) -> Path:
    """Write a uint8 RGB normal map ``(H, W, 3)`` (or float unit vectors, encoded first) as PNG."""
    a = np.asarray(normals_rgb)
    if a.dtype != np.uint8:
        a = geometry.encode_normals(a)
    return _imwrite(path, np.ascontiguousarray(a[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 9])


def save_image(path: PathLike, rgb, quality: int = 92) -> Path:
    """Write uint8 RGB ``(H, W, 3)``: JPEG (given quality, 4:4:4 off = cv2 default) or PNG by extension."""
    a = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8)[..., ::-1])
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
    """Names of the example panoramas in ``folder`` (default: the bundled assets/examples)."""
    folder = Path(folder) if folder is not None else EXAMPLES_DIR
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len("_rgb.jpg")] for p in folder.glob("*_rgb.jpg"))


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
