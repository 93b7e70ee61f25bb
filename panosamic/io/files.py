"""File names: which files are panoramas, their companions (`X_depth.png`, `X_normals.png`
beside `X_rgb.jpg`), the stem outputs are named by, and the bundled example panoramas.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional

from ..errors import InputError
from .headers import PathLike

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DEPTH_EXTS = (".png", ".npy", ".exr")
_RGB_SUFFIXES = ("_rgb", "_image", "_color")

#: The bundled example panoramas (repository checkout).
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "assets" / "examples"


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
