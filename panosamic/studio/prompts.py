"""The `/prompt` JSON, checked once, strictly, before anything runs.

    {"points": [[x, y], ...], "labels": [1 or 0, ...], "box": [x1, y1, x2, y2], "append": false}
    {"points_lonlat": [[lon, lat], ...], "box_lonlat": [lon1, lat1, lon2, lat2]}

Pixels are input-image pixels; x1 > x2 is a box that wraps across the seam. Directions are
degrees with `panosamic.geometry`'s conventions: lon = x / W * 360 - 180 (-180..180, 0 at
the centre column), lat = 90 - y / H * 180 (90 at the top row). SAM works with a handful of
points: at most `MAX_POINTS` and one box per request.
"""

from __future__ import annotations

import json
import math
from typing import Any, List, Optional, Tuple

from ..config import MAX_PROMPT_POINTS
from ..errors import InputError
from ..geometry import degrees_to_pixels

MAX_POINTS = MAX_PROMPT_POINTS  # points per request (and kept per session)
MAX_JSON_CHARS = 20_000
KEYS = ("points", "labels", "box", "append", "points_lonlat", "box_lonlat")
EXAMPLE = '{"points": [[100, 50]], "labels": [1], "box": [x1, y1, x2, y2]}'


def _number(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise InputError(f"{what} must be finite numbers. Example: {EXAMPLE}")
    return float(v)


def _pairs(value: Any, key: str) -> List[Tuple[float, float]]:
    if value is None:
        return []
    if not isinstance(value, list) or any(not isinstance(p, list) or len(p) != 2 for p in value):
        raise InputError(f'"{key}" must be a list of [x, y] pairs. Example: {EXAMPLE}')
    if len(value) > MAX_POINTS:
        raise InputError(f'At most {MAX_POINTS} points per prompt (got {len(value)}): SAM needs only a few.')
    return [(_number(p[0], f'"{key}"'), _number(p[1], f'"{key}"')) for p in value]


def _box(value: Any, key: str) -> Optional[List[float]]:
    if value is None or value == []:
        return None
    if not isinstance(value, list) or len(value) != 4:
        raise InputError(f'"{key}" must be one box: 4 numbers [x1, y1, x2, y2] (one box per prompt).')
    return [_number(v, f'"{key}"') for v in value]


def lonlat_to_pixels(lon: float, lat: float, size: Tuple[int, int]) -> Tuple[float, float]:
    """Degrees -> input pixels of an (H, W) panorama (`panosamic.geometry.degrees_to_pixels`)."""
    h, w = size
    x, y = degrees_to_pixels(lon, lat, w, h)
    return float(x), float(y)


def parse_prompt(prompt_json: Any, s: Any) -> Tuple[List[Tuple[float, float]], List[int], Optional[List[float]]]:
    """(points, labels, box) in input pixels from the `/prompt` JSON (text or dict) for
    session `s` (its input size, and its prompts when "append" is true). InputError, with an
    example, for anything else."""
    if isinstance(prompt_json, str):
        if len(prompt_json) > MAX_JSON_CHARS:
            raise InputError(f"The prompt is too long ({len(prompt_json)} characters): send at most "
                             f"{MAX_POINTS} points and one box.")
        try:
            spec = json.loads(prompt_json)
        except RecursionError:
            raise InputError("The prompt is nested too deeply. Example: " + EXAMPLE) from None
        except ValueError as e:
            raise InputError(f"The prompt is not valid JSON ({str(e)[:80]}). Example: {EXAMPLE}") from None
    else:
        spec = prompt_json if prompt_json is not None else {}
    if not isinstance(spec, dict):
        raise InputError(f"The prompt must be a JSON object like {EXAMPLE}")
    unknown = sorted(str(k)[:30] for k in spec if k not in KEYS)
    if unknown:
        raise InputError(f"Unknown prompt field(s) {', '.join(unknown)}: use {', '.join(KEYS)}.")
    append = spec.get("append", False)
    if not isinstance(append, bool):
        raise InputError('"append" must be true or false.')
    size = tuple(s.input_size)
    points = _pairs(spec.get("points"), "points")
    points += [lonlat_to_pixels(lon, lat, size) for lon, lat in _pairs(spec.get("points_lonlat"), "points_lonlat")]
    labels_raw = spec.get("labels")
    if labels_raw is None:
        labels = [1] * len(points)
    else:
        if not isinstance(labels_raw, list) or any(isinstance(v, bool) or v not in (0, 1) for v in labels_raw):
            raise InputError('"labels" must be a list of 1 (positive) or 0 (negative), one per point.')
        labels = [int(v) for v in labels_raw]
        if len(labels) != len(points):
            raise InputError(f"{len(points)} points but {len(labels)} labels: give one label per point.")
    box = _box(spec.get("box"), "box")
    box_ll = _box(spec.get("box_lonlat"), "box_lonlat")
    if box is not None and box_ll is not None:
        raise InputError('Give one box: "box" (pixels) or "box_lonlat" (degrees), not both.')
    if box_ll is not None:
        (x1, y1), (x2, y2) = lonlat_to_pixels(box_ll[0], box_ll[1], size), lonlat_to_pixels(box_ll[2], box_ll[3], size)
        box = [x1, y1, x2, y2]
    if append:
        points = [tuple(p) for p in s.points] + points
        labels = list(s.point_labels) + labels
        box = box if box is not None else s.box
        if len(points) > MAX_POINTS:
            raise InputError(f"At most {MAX_POINTS} points per prompt: press Clear and start again.")
    return points, labels, box


__all__ = ["parse_prompt", "lonlat_to_pixels", "MAX_POINTS", "KEYS"]
