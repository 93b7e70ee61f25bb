"""Reading what a user uploads: the panorama and its maps, previews, the example list.

Every file is checked before it is decoded (`panosamic.io` reads the header first), and
messages name the user's own file, never a path on the server.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Optional

import numpy as np

from ..errors import InputError
from ..inputs import check_aspect
from .render import resize_for_display
from .session import WORK_MAX_WIDTH


def input_path(file: Any) -> Optional[str]:
    """The path of an upload: a str, an object with .path or .name, or a list of those (first)."""
    if file is None:
        return None
    if isinstance(file, (list, tuple)):
        file = file[0] if file else None
        if file is None:
            return None
    return str(getattr(file, "path", None) or getattr(file, "name", None) or file)


def load_inputs(pano: Any, depth_file: Any, normals_file: Any, depth_scale: Optional[float]):
    """(image uint8 (H, W, 3), depth (H, W) float32 metres or None, normals uint8 (H, W, 3) or
    None, file name); InputError when unusable (not an image, too large, not 2:1, other sizes).
    `depth_scale`: metres per stored depth unit, 0/None = the file type's default."""
    from PIL import Image

    from .. import io as pio

    path = input_path(pano)
    if not path:
        raise InputError("Upload a panorama (or click an example) first.")
    name = os.path.basename(path)
    try:
        with Image.open(path) as im:  # the header only: the size is checked before decoding
            w, h = im.size
    except Exception:  # noqa: BLE001
        raise InputError(f"{name} is not an image that can be read: upload a JPEG or PNG panorama.") from None
    pio.check_panorama_size(h, w, f"the panorama {name}")
    check_aspect(h, w, f"The panorama {name}")
    image = pio.load_image(path)
    depth = normals = None
    dpath = input_path(depth_file)
    if dpath:
        depth = pio.load_depth(dpath, scale=(float(depth_scale) if depth_scale else None))
        if depth.shape[:2] != image.shape[:2]:
            raise InputError(f"The depth map is {depth.shape[1]}x{depth.shape[0]} but the panorama is "
                             f"{image.shape[1]}x{image.shape[0]}: use the depth map of this panorama.")
    npath = input_path(normals_file)
    if npath:
        normals = pio.load_normals(npath)
        if normals.shape[:2] != image.shape[:2]:
            raise InputError(f"The normal map is {normals.shape[1]}x{normals.shape[0]} but the panorama is "
                             f"{image.shape[1]}x{image.shape[0]}: use the normal map of this panorama.")
    return image, depth, normals, name


def preview_image(pano: Any, max_width: int = WORK_MAX_WIDTH) -> Optional[np.ndarray]:
    """The uploaded panorama as uint8 RGB at most `max_width` wide, or None if unreadable."""
    path = input_path(pano)
    if not path:
        return None
    try:
        from PIL import Image

        with Image.open(path) as im:
            im.draft("RGB", (max_width, max_width // 2))  # JPEG: decode at reduced size, much faster
            view = np.asarray(im.convert("RGB"))
        return resize_for_display(view, max_width)
    except Exception:  # noqa: BLE001
        return None


def find_examples(folder: str) -> List[List[Optional[str]]]:
    """[[rgb, depth or None, normals or None], ...] for each <name>_rgb.(jpg|png) in `folder`."""
    from ..io import find_companions

    root = Path(folder)
    if not root.is_dir():
        return []
    rows = []
    for rgb in sorted(list(root.glob("*_rgb.jpg")) + list(root.glob("*_rgb.png"))):
        found = find_companions(rgb)
        rows.append([str(rgb)] + [str(found[k]) if found[k] else None for k in ("depth", "normals")])
    return rows


__all__ = ["input_path", "load_inputs", "preview_image", "find_examples"]
