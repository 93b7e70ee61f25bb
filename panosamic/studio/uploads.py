"""Reading what a user uploads: the panorama and its maps, previews, the example list.

Every file is checked before it is decoded (`panosamic.io` reads the header first), and
messages name the user's own file, never a path on the server.
"""

from __future__ import annotations

import contextlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, List, Optional, Sequence

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


def _alpha_note(header: Any, name: str) -> Optional[str]:
    """A line for the user when the panorama has an alpha channel (the model reads RGB only)."""
    if header.channels not in (2, 4):
        return None
    return (f"{name} has an alpha channel (transparency), which the model does not read: transparent parts are "
            "segmented as the colours stored under them. If that matters, flatten the picture onto a background "
            "and save it without alpha (a JPEG, or an RGB PNG).")


def check_upload(pano: Any) -> List[str]:
    """The checks of a panorama as it is uploaded, from its header (microseconds, no decoding):
    InputError when it cannot be used (not a picture, too large, not 2:1), each with its own
    message; else the lines worth telling its user (an alpha channel). [] without a file."""
    from .. import io as pio

    path = input_path(pano)
    if not path:
        return []
    name = os.path.basename(path)
    header = pio.read_header(path, "image")
    if header.format in ("NPY", "EXR"):
        raise InputError(f"{name} is a {header.format} file, not a picture: upload the panorama as a JPEG or PNG.")
    check_aspect(header.height, header.width, f"The panorama {name}")
    return [n for n in (_alpha_note(header, name),) if n]


def _megabytes(path: Optional[str]) -> str:
    try:
        return f"{os.path.getsize(path) / 2**20:.0f} MB" if path else ""
    except OSError:
        return ""


def load_inputs(pano: Any, depth_file: Any, normals_file: Any, depth_scale: Optional[float],
                notes: Optional[List[str]] = None, decoding: Optional[ContextManager] = None,
                progress: Optional[Callable[..., Any]] = None):
    """(image uint8 (H, W, 3), depth (H, W) float32 metres or None, normals uint8 (H, W, 3) or
    None, file name); InputError when unusable (not an image, too large, not 2:1, other sizes,
    a depth map without any valid pixel). `depth_scale`: metres per stored depth unit, 0/None =
    the file type's default. `notes`: a list that receives lines for the user (e.g. how much of
    the depth map was invalid). Every file's header is checked (format, size, sizes that match)
    before any pixel is decoded; `decoding` (e.g. a lock) is held while the pixels are decoded.
    `progress(fraction in [0, 1], desc=text)` hears what is being read (an 8192x4096 upload
    takes seconds to decode) and each file done."""
    from .. import io as pio

    path = input_path(pano)
    if not path:
        raise InputError("Upload a panorama (or click an example) first.")
    name = os.path.basename(path)
    header = pio.read_header(path, "image")  # size, channels and format before any decoding
    check_aspect(header.height, header.width, f"The panorama {name}")
    note = _alpha_note(header, name)
    if note and notes is not None:
        notes.append(note)
    dpath, npath = input_path(depth_file), input_path(normals_file)
    for map_path, what in ((dpath, "depth map"), (npath, "normal map")):
        if map_path:
            h = pio.read_header(map_path, what)
            if (h.height, h.width) != (header.height, header.width):
                raise InputError(f"The {what} is {h.width}x{h.height} but the panorama is "
                                 f"{header.width}x{header.height}: use the {what} of this panorama.")
    counts: dict = {}
    report = progress or (lambda *_a, **_k: None)
    files = [(path, "panorama")] + [(p, w) for p, w in ((dpath, "depth map"), (npath, "normal map")) if p]
    size = f"{header.width}×{header.height}"
    report(0.0, desc=f"Reading {' + '.join(w for _p, w in files)} ({size}, "
                     f"{' + '.join(filter(None, (_megabytes(p) for p, _w in files)))})")
    # Two decoders side by side (they release the GIL): the depth map, the slowest, on one;
    # the panorama, then the normals, on the other. An 8192x4096 RGB-D-N upload reads in
    # about half the time; on two cores a third decoder gains nothing.
    with decoding or contextlib.nullcontext(), ThreadPoolExecutor(max_workers=2) as pool:
        depth_job = pool.submit(pio.load_depth, dpath, scale=(float(depth_scale) if depth_scale else None),
                                report=counts) if dpath else None
        jobs = [pool.submit(pio.load_image, path), depth_job,
                pool.submit(pio.load_normals, npath) if npath else None]
        named = [(job, what) for job, what in zip(jobs, ("panorama", "depth map", "normal map")) if job is not None]
        for done, (job, what) in enumerate(named, 1):
            job.result()  # raises the first file's problem; the others finish or fail alongside
            left = [w for j, w in named if not j.done()]
            report(done / len(named), desc=f"Read the {what} ({size})" + (f"; decoding the {' and '.join(left)}"
                                                                           if left else ""))
        image, depth, normals = (job.result() if job is not None else None for job in jobs)
    note = pio.depth_note(counts) if depth is not None else None
    if note and notes is not None:
        notes.append(note)
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


#: The manifest of the real photographs among the examples (written by
#: scripts/make_photo_examples.py): their gallery order, titles, sources and licences.
PHOTOS_MANIFEST = "photos.json"


def example_photos(folder: str) -> Dict[str, Dict[str, Any]]:
    """{name: entry} of the photographs listed in `folder`'s photos.json, in its order (indoor
    first); {} without one. A damaged manifest only loses the photos' order and titles."""
    try:
        manifest = json.loads((Path(folder) / PHOTOS_MANIFEST).read_text(encoding="utf-8"))
        return {str(e["name"]): e for e in manifest["photos"] if isinstance(e, dict) and "name" in e}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def find_examples(folder: str) -> List[List[Optional[str]]]:
    """[[rgb, depth or None, normals or None], ...] for each <name>_rgb.(jpg|png) in `folder`:
    the photographs of its photos.json first, in the manifest's order, then the rest by name."""
    from ..io import find_companions, panorama_stem

    root = Path(folder)
    if not root.is_dir():
        return []
    rank = {name: i for i, name in enumerate(example_photos(folder))}
    images = sorted(list(root.glob("*_rgb.jpg")) + list(root.glob("*_rgb.png")))
    images.sort(key=lambda p: rank.get(panorama_stem(p), len(rank)))  # stable: by name within each group
    rows = []
    for rgb in images:
        found = find_companions(rgb)
        rows.append([str(rgb)] + [str(found[k]) if found[k] else None for k in ("depth", "normals")])
    return rows


def example_caption(row: Sequence[Optional[str]]) -> str:
    """'hotel room · photo · RGB', 'office · rendered · RGB-D-N': what a gallery row is.

    A photograph is listed in its folder's photos.json (which gives its title); a rendered
    example has the <name>.json that scripts/make_examples.py writes beside it; anything else
    is named by its file and the maps it brings (RGB, Depth, Normals).
    """
    from ..io import panorama_stem

    rgb = Path(row[0])
    name = panorama_stem(rgb)
    photo = example_photos(str(rgb.parent)).get(name)
    if photo is not None:
        kind, title = "photo", str(photo.get("title") or name)
    else:
        kind, title = ("rendered" if (rgb.parent / f"{name}.json").is_file() else None), name.replace("_", " ")
    maps = "RGB" + "".join(tag for tag, path in zip(("-D", "-N"), row[1:]) if path)
    return " · ".join(part for part in (title, kind, maps) if part)


__all__ = ["input_path", "load_inputs", "check_upload", "preview_image", "find_examples", "example_photos", "example_caption",
           "PHOTOS_MANIFEST"]
