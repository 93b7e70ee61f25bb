"""Prompts in the model's frame: the checks of `Predictor.predict`'s points and box (input
pixels), the choice of the view that keeps them furthest from its seam, and a box moved into
view 1 (yawed 180 degrees: x' = (x + W/2) mod W).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from .config import MAX_PROMPT_POINTS
from .errors import InputError
from .geometry import x_to_view
from .inputs import as_array

#: The most points `Predictor.predict` takes in one prompt (more is an InputError).
MAX_POINTS = MAX_PROMPT_POINTS


def check_points(coords, labels, W: int, H: int) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """(N, 2) float32 x, y in input pixels and (N,) int64 labels (1 foreground, 0 background),
    or (None, None) without points; InputError for anything else or a point off the W x H panorama."""
    if coords is None:
        if labels is not None:
            raise InputError("point_labels given without point_coords")
        return None, None
    pts = as_array(coords, "point_coords").astype(np.float32)
    if pts.size % 2:
        raise InputError(f"point_coords must be (N, 2) x, y pairs in input pixels, got shape {pts.shape}")
    pts = pts.reshape(-1, 2)
    if len(pts) > MAX_POINTS:
        raise InputError(f"at most {MAX_POINTS} points per prompt (got {len(pts)}): SAM needs only a few; "
                         "use a box or a mask for large regions")
    if labels is None:
        raise InputError("point_coords need point_labels: 1 for foreground, 0 for background")
    try:
        lab = as_array(labels, "point_labels").reshape(-1)
    except InputError:
        raise InputError("point labels must be numbers: 1 (foreground) or 0 (background)") from None
    if len(lab) != len(pts) or len(pts) == 0:
        raise InputError(f"got {len(pts)} points and {len(lab)} labels: give one label (1 or 0) per point")
    if not np.isin(lab, (0, 1)).all():
        raise InputError("point labels must be 1 (foreground) or 0 (background)")
    if not np.isfinite(pts).all():
        raise InputError("point coordinates must be finite numbers")
    outside = (pts[:, 0] < 0) | (pts[:, 0] > W) | (pts[:, 1] < 0) | (pts[:, 1] > H)
    if outside.any():
        x, y = pts[outside][0]
        raise InputError(f"point ({x:g}, {y:g}) is outside the {W}x{H} panorama: "
                         f"x must be in 0..{W} and y in 0..{H} (input-image pixels)")
    return pts, lab.astype(np.int64)

def check_box(box, W: int, H: int) -> Optional[np.ndarray]:
    """(4,) float32 x1, y1, x2, y2 in input pixels (x1 > x2 wraps across the seam), or None."""
    if box is None:
        return None
    try:
        b = as_array(box, "box").astype(np.float32).reshape(-1)
    except InputError:
        b = np.zeros(0, np.float32)
    if b.shape != (4,) or not np.isfinite(b).all():
        raise InputError("box must be 4 numbers x1, y1, x2, y2 in input-image pixels")
    x1, y1, x2, y2 = b
    if min(x1, x2, y1, y2) < 0 or max(x1, x2) > W or max(y1, y2) > H:
        raise InputError(f"box {b.tolist()} is outside the {W}x{H} panorama")
    if y1 > y2:
        raise InputError("box needs y1 <= y2 (top, then bottom); x1 > x2 is allowed and wraps across the seam")
    return b

def choose_view(view, pts: Optional[np.ndarray], box: Optional[np.ndarray], W: float) -> int:
    """0 or 1: the view asked for, else ("auto") the one whose seam is furthest from the prompts
    (model-frame x in 0..W); a box that wraps across the seam needs view 1."""
    if view in (0, 1):
        return int(view)
    if view != "auto":
        raise InputError(f"view must be 0, 1 or 'auto', got {view!r}")
    if box is not None and box[0] > box[2]:
        return 1  # a wrapping box is contiguous only in the yawed view
    xs: List[float] = []
    if pts is not None:
        xs += list(pts[:, 0])
    if box is not None:
        xs += [box[0], box[2]]
    if not xs:
        return 0

    def margin(xs_view: Sequence[float]) -> float:
        return float(min(min(x, W - x) for x in xs_view))

    m0 = margin(xs)
    m1 = margin([x_to_view(x, W, 1) for x in xs])
    # In view 1 a box must stay a plain box (not wrap) to be usable.
    if box is not None and x_to_view(box[0], W, 1) > x_to_view(box[2], W, 1):
        return 0
    return 1 if m1 > m0 else 0


def box_in_view1(box: np.ndarray, W: float) -> np.ndarray:
    """A box in view 0 coordinates -> view 1 (x' = (x + W/2) mod W), keeping it contiguous."""
    x1 = x_to_view(box[0], W, 1)
    x2 = x_to_view(box[2], W, 1)
    if x2 == 0 and box[2] > 0:
        x2 = W  # the right edge, not the left one
    if x1 > x2:
        raise InputError("this box spans more than half the panorama across the seam; draw a smaller box")
    return np.array([x1, box[1], x2, box[3]], dtype=np.float32)
