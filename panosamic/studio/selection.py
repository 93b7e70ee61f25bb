"""What a user is selecting on a session: the prompts for SAM's decoder and the candidate masks
it answered with. Both are values that the `Session` replaces as a whole (never edits in
place), so an undo step keeps the prompts before a change by reference, without a copy.

Prompts are in **input pixels** (they mean the same at any working size); a box is XYXY and
x1 > x2 means it wraps across the left/right seam. Candidates are at the working size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np


@dataclass(frozen=True)
class Prompts:
    """The prompts of the current selection (input pixels).

    points: ((x, y), ...) clicked points; labels: (1 positive / 0 negative, ...) one per point;
    box: (x1, y1, x2, y2) or None; pending_corner: (x, y) of a box's first corner while the
    second is not yet clicked, else None."""

    points: Tuple[Tuple[float, float], ...] = ()
    labels: Tuple[int, ...] = ()
    box: Optional[Tuple[float, float, float, float]] = None
    pending_corner: Optional[Tuple[float, float]] = None

    @property
    def any(self) -> bool:
        """Whether there is something for the decoder (a point or a completed box)."""
        return bool(self.points) or self.box is not None

    @property
    def single_click(self) -> bool:
        """One positive point and no box: the ambiguous prompt (`candidates.preselect`)."""
        return self.box is None and self.labels == (1,)


@dataclass(frozen=True, eq=False)
class Candidates:
    """The decoder's answer to the current prompts (working size).

    masks: (C, h, w) bool; scores: (C,) float32, SAM's predicted IoU of each (the page's
    "fit"); selected: the index the user (or the preselection) chose; majority: the
    (labels_version, class index) remembered for the selected mask, None until asked: the
    majority class stays right until the labels change (a new selection is a new value)."""

    masks: np.ndarray
    scores: np.ndarray
    selected: int = 0
    majority: Optional[Tuple[int, Optional[int]]] = None

    @property
    def mask(self) -> np.ndarray:
        """(h, w) bool: the selected mask."""
        return self.masks[self.selected]

    @property
    def score(self) -> float:
        """The selected mask's predicted IoU."""
        return float(self.scores[self.selected])


__all__ = ["Prompts", "Candidates"]
