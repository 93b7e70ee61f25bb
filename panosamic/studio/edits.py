"""The records of a session's edits: the masks the user wrote into the map (`RefinedMask`, kept
for the downloads) and the undo stack (`UndoStack` of `UndoStep`s), which keeps what an edit
changed (its bounding box and the previous values), not copies of whole maps. A `Session`
(session.py) holds one stack and is its only user.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..exports import decode_rle, encode_rle
from .selection import Prompts

MAX_UNDO = 64           # undo steps kept per session
MAX_UNDO_BYTES = 32 << 20  # and at most this many bytes of them (the oldest go first)


@dataclass
class RefinedMask:
    """A mask the user wrote into the map, as COCO RLE at the working size (a few KB)."""

    rle: Dict[str, Any]
    class_index: int
    score: Optional[float]
    source: str  # "prompt" or "instances"

    @classmethod
    def from_mask(cls, mask: np.ndarray, class_index: int, score: Optional[float], source: str) -> "RefinedMask":
        return cls(encode_rle(mask), int(class_index), None if score is None else float(score), source)

    @property
    def mask(self) -> np.ndarray:
        return decode_rle(self.rle)

    @property
    def nbytes(self) -> int:
        return len(self.rle["counts"]) + 64


@dataclass
class UndoStep:
    """What one prompt change or edit replaced: the prompts before it and, for a label edit,
    the previous labels and edited flags inside the bounding box of the change."""

    kind: str                                            # "prompts" or "labels"
    prompts: Prompts                                     # the value before the change (immutable: no copy)
    region: Optional[Tuple[int, int, int, int]] = None  # r0, r1, c0, c1 (None: no pixel changed)
    labels: Optional[np.ndarray] = None                  # uint8 crop
    edited: Optional[np.ndarray] = None                  # packed bits of the bool crop
    refined_count: int = 0

    @property
    def nbytes(self) -> int:
        return 256 + sum(a.nbytes for a in (self.labels, self.edited) if a is not None)

    @classmethod
    def of_labels(cls, labels: np.ndarray, edited: np.ndarray, changed: np.ndarray, prompts: Prompts,
                  refined_count: int) -> "UndoStep":
        """The step before a label edit: the (h, w) uint8 `labels` and bool `edited` inside the
        bounding box of the (h, w) bool `changed` pixels (copies), with the prompts before it."""
        region = _bbox(changed)
        if region is None:
            return cls("labels", prompts, None, refined_count=refined_count)
        r0, r1, c0, c1 = region
        return cls("labels", prompts, region, labels[r0:r1, c0:c1].copy(), np.packbits(edited[r0:r1, c0:c1]),
                   refined_count)

    def put_back(self, labels: np.ndarray, edited: np.ndarray) -> Optional[np.ndarray]:
        """Writes the kept crop back into `labels` and `edited` (in place); returns the labels
        it replaced there (None when no pixel had changed)."""
        if self.region is None:
            return None
        r0, r1, c0, c1 = self.region
        before = labels[r0:r1, c0:c1].copy()
        labels[r0:r1, c0:c1] = self.labels
        n = (r1 - r0) * (c1 - c0)
        edited[r0:r1, c0:c1] = np.unpackbits(self.edited, count=n).astype(bool).reshape(r1 - r0, c1 - c0)
        return before


def _bbox(mask: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    rows = np.flatnonzero(mask.any(1))
    if not rows.size:
        return None
    cols = np.flatnonzero(mask[rows[0]:rows[-1] + 1].any(0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


class UndoStack:
    """The undo steps of one session, newest last: at most `MAX_UNDO` of them and
    `MAX_UNDO_BYTES` together (the oldest go first; the newest always stays)."""

    def __init__(self) -> None:
        self._steps: List[UndoStep] = []

    def push(self, step: UndoStep) -> UndoStep:
        self._steps.append(step)
        while len(self._steps) > MAX_UNDO or (len(self._steps) > 1 and self.nbytes > MAX_UNDO_BYTES):
            del self._steps[0]
        return step

    def pop(self) -> Optional[UndoStep]:
        """The newest step, taken off the stack (None when empty)."""
        return self._steps.pop() if self._steps else None

    def __len__(self) -> int:
        return len(self._steps)

    @property
    def nbytes(self) -> int:
        return sum(u.nbytes for u in self._steps)


__all__ = ["RefinedMask", "UndoStep", "UndoStack", "MAX_UNDO", "MAX_UNDO_BYTES"]
