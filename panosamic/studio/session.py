"""One user's editing session on one segmented panorama, independent of any UI.

A panorama straight from a 360° camera is 5.7K-8K wide; a session never holds it at that
size. Everything interactive works at a bounded *working size* (at most `WORK_MAX_WIDTH`
wide, the input size when smaller), with uint8 class indices:

* the photo and the depth shown (`image`, `depth`), the label map (`labels`) and which of
  its pixels the user edited (`edited`),
* prompts for SAM's decoder, kept in **input pixels** (positive/negative points, one box,
  a half-drawn box) so that they mean the same at any size: a frozen `Prompts` value that the
  session replaces as a whole (selection.py),
* the candidate masks of the last prompt (working size) and which one is selected: a
  `Candidates` value, replaced as a whole too,
* edits: `assign` writes a mask into the label map with a class, `apply_labels` replaces
  the map (e.g. after refining with SAM instances),
* one undo stack across prompts and edits that stores what an edit changed (its bounding
  box and the previous values), not copies of whole maps.

The downloads are made at the input size by `panosamic.studio.downloads`, from the model's
labels at that size and the edits upsampled from the working map.

One writer per piece of state: this module writes the labels, edits, prompts, candidates and
undo; render.py writes the session's `render_cache` (the pictures kept between events) and
store.py its `lifecycle` (lock, last use, why it closed, export folder). The session holds both
and shows their fields read-only; tests/test_imports.py checks that no other module assigns
them.

A box is XYXY; x1 > x2 means it wraps across the left/right seam of the panorama.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from ..exports import class_stats
from ..metrics import majority_class
from .candidates import preselect
from .classes import ClassTable
from .edits import RefinedMask, UndoStack, UndoStep
from .lifecycle import Lifecycle
from .render import RenderCache
from .selection import Candidates, Prompts

WORK_MAX_WIDTH = 2048   # interaction runs at most this wide (pixels); 1024 rows for a 2:1 panorama


def working_size(height: int, width: int, max_width: int = WORK_MAX_WIDTH) -> Tuple[int, int]:
    """(h, w) of the working maps of an (height, width) panorama: itself when narrow enough,
    else scaled to `max_width` keeping the aspect ratio."""
    if width <= max_width:
        return int(height), int(width)
    return max(1, int(round(height * max_width / width))), int(max_width)


class Session:
    """Per-user state for one panorama at the working size (see the module docstring).

    Args:
        image: (h, w, 3) uint8 photo at the working size.
        labels: (h, w) class indices at the working size (the model's).
        classes, palette: class names and (K, 3) uint8 colours.
        input_size: (H, W) of the uploaded panorama (prompts are in its pixels); default (h, w).
        depth: (h, w) metres at the working size, or None.
        state: the `PanoramaState` (cached embeddings), shared with the embedding cache.
        model_key: what loaded the model (the backend's registry key).
        toy: a toy model (a bundled demo) made the labels.
    """

    def __init__(self, image: np.ndarray, labels: np.ndarray, classes: Sequence[str], palette: np.ndarray,
                 input_size: Optional[Tuple[int, int]] = None, depth: Optional[np.ndarray] = None,
                 has_normals: bool = False, key: Optional[str] = None, checkpoint: Optional[str] = None,
                 state: Any = None, model_key: Any = None, max_depth: Optional[float] = None,
                 name: str = "panorama", timings: Optional[Dict[str, float]] = None,
                 notes: Optional[Sequence[str]] = None, checkpoint_label: Optional[str] = None,
                 estimated: Sequence[str] = (), toy: bool = False):
        labels = np.asarray(labels)
        image = np.asarray(image)
        if image.shape[:2] != labels.shape:
            raise InputError(f"labels {labels.shape} do not match the image {image.shape[:2]}")
        self.image = np.ascontiguousarray(image[..., :3], dtype=np.uint8)
        self.depth = None if depth is None else np.asarray(depth, np.float32)
        if self.depth is not None and self.depth.shape != labels.shape:
            raise InputError(f"depth {self.depth.shape} does not match the labels {labels.shape}")
        self.has_normals = bool(has_normals)
        #: the maps estimated from the photo ("depth", "normals"): exported beside the labels
        self.estimated: Tuple[str, ...] = tuple(estimated)
        #: the checkpoint's classes, then the user's (the one owner of names and colours)
        self.class_table = ClassTable(classes, palette)
        self.initial_labels = labels.astype(np.uint8)
        self.initial_labels.flags.writeable = False
        self.labels = self.initial_labels.copy()
        self.edited = np.zeros(labels.shape, bool)
        self.input_size: Tuple[int, int] = tuple(input_size or labels.shape)  # type: ignore[assignment]
        #: lines for the user about the inputs (e.g. how much of the depth map was invalid)
        self.notes: List[str] = list(notes or [])
        self.key = key
        self.checkpoint = checkpoint
        #: how the page names the checkpoint that made the labels (e.g. "Demo RGB: toy model ...")
        self.checkpoint_label = checkpoint_label or checkpoint
        #: whether a toy model (a bundled demo) made the labels: the results say so
        self.toy = bool(toy)
        self.state = state
        self.model_key = model_key
        self.max_depth = max_depth
        self.name = name
        #: seconds per stage of the Run and of the latest events ("load", "encode", ...,
        #: "last_prompt", "instances", "export"); written through `record_time`
        self.timings = dict(timings or {})
        self._prompts = Prompts()                      # input pixels
        self._candidates: Optional[Candidates] = None  # of the last prediction (working size)
        # edits
        self.refined: List[RefinedMask] = []
        self._undo = UndoStack()
        #: bumped whenever `labels` (or a colour of the palette) changes: the key that tells
        #: every picture, statistic and remembered majority made before it is stale
        self.labels_version = 0
        #: the pictures kept between events (render.py is their only writer)
        self.render_cache = RenderCache()
        #: lock, last use, why closed, export folder (store.py is their only writer)
        self.lifecycle = Lifecycle()
        self._stats: Optional[Tuple[int, List[Dict]]] = None
        self._medians: Dict[int, Optional[float]] = {}  # classes whose median distance is still right

    # ------------------------------------------------------------------ basics
    @property
    def lock(self):
        """The session's re-entrant lock: one event at a time (`SessionStore.use`)."""
        return self.lifecycle.lock

    @property
    def last_used(self) -> float:
        """`time.monotonic()` seconds of the session's last event."""
        return self.lifecycle.last_used

    @property
    def closed(self) -> Optional[str]:
        """Why the session was released ("idle", "memory", "disk", "closed"), None while open."""
        return self.lifecycle.closed

    @property
    def export_dir(self) -> Optional[Path]:
        """The folder of the latest export (`SessionStore.export_dir`), None before one."""
        return self.lifecycle.export_dir

    def record_time(self, stage: str, seconds: float) -> None:
        """Notes how long `stage` took (seconds) for the summary and the status lines."""
        self.timings[stage] = float(seconds)

    @property
    def shape(self) -> Tuple[int, int]:
        """(h, w): the working size."""
        return tuple(self.labels.shape)  # type: ignore[return-value]

    @property
    def scale(self) -> float:
        """Working pixels per input pixel (<= 1)."""
        return self.shape[1] / self.input_size[1]

    @property
    def classes(self) -> Tuple[str, ...]:
        """Class names by index: the checkpoint's, then the user's (`class_table`)."""
        return self.class_table.names

    @property
    def palette(self) -> np.ndarray:
        """(K, 3) uint8 RGB colours by class index (`class_table`)."""
        return self.class_table.palette

    @property
    def num_classes(self) -> int:
        return len(self.class_table)

    def add_class(self, name: Any, color: Any = None) -> Tuple[int, bool]:
        """(index, whether new) of a user's class (`ClassTable.add`). A new colour for a
        user's class redraws everything coloured (the labels count as changed)."""
        before = self.palette
        index, new = self.class_table.add(name, color)
        if not new and not np.array_equal(before, self.palette):
            self._labels_changed(None, None)  # a new labels_version: the cached pictures are stale
        return index, new

    @property
    def nbytes(self) -> int:
        """Memory this session holds (the shared embeddings included)."""
        arrays = [self.image, self.depth, self.initial_labels, self.labels, self.edited, self.candidates]
        total = sum(a.nbytes for a in arrays if a is not None) + self.render_cache.nbytes
        total += self._undo.nbytes + sum(r.nbytes for r in self.refined)
        state_bytes = getattr(self.state, "nbytes", 0)
        return int(total + (state_bytes or 0))

    def release(self) -> None:
        """Drops every array (the store calls it when the session is evicted or its tab closed,
        after noting why in `lifecycle`)."""
        self.image = self.depth = None  # type: ignore[assignment]
        self.labels = self.initial_labels = self.edited = None  # type: ignore[assignment]
        self.state = self._candidates = None
        self.refined, self._undo, self._stats = [], UndoStack(), None
        self.render_cache.clear()
        self._medians = {}

    def class_index(self, cls: Any, create: bool = False) -> int:
        """Index of a class given as index, numeric string or (case-insensitive) name; with
        `create` a name not in the table becomes a user's class (`add_class`)."""
        if isinstance(cls, (int, np.integer)) and not isinstance(cls, bool):
            idx = int(cls)
        else:
            text = str(cls).strip()
            if text.lstrip("-").isdigit():
                idx = int(text)
            else:
                found = self.class_table.find(text)
                if found is None and create:
                    found, _ = self.add_class(text)
                if found is None:
                    raise InputError(f"unknown class {text[:40]!r}; choose one of: {', '.join(self.classes)}, "
                                     "or add it as your own class")
                idx = found
        if not 0 <= idx < self.num_classes:
            raise InputError(f"class index {idx} is out of range 0..{self.num_classes - 1}")
        return idx

    # ------------------------------------------------------------------ undo
    def _push_prompts(self) -> None:
        self._undo.push(UndoStep("prompts", self._prompts))

    def _push_labels(self, changed: np.ndarray) -> UndoStep:
        """Remembers the labels and edited flags in the bounding box of `changed`."""
        return self._undo.push(UndoStep.of_labels(self.labels, self.edited, changed, self._prompts,
                                                  len(self.refined)))

    @property
    def can_undo(self) -> bool:
        return len(self._undo) > 0

    @property
    def undo_depth(self) -> int:
        return len(self._undo)

    def undo(self) -> Optional[str]:
        """Reverts the last prompt change or edit; returns "prompts", "labels" or None (nothing to undo).
        After undoing, candidates are dropped: re-run the decoder if `has_prompts`."""
        step = self._undo.pop()
        if step is None:
            return None
        if step.kind == "prompts":
            self._set_prompts(step.prompts)
            return "prompts"
        before = step.put_back(self.labels, self.edited)
        if before is not None:
            self._labels_changed(step.region, before)
        del self.refined[step.refined_count:]
        self._set_prompts(step.prompts)
        return "labels"

    # ------------------------------------------------------------------ prompts
    def _check_xy(self, x: Any, y: Any) -> Tuple[float, float]:
        h, w = self.input_size
        try:
            x, y = float(x), float(y)
        except (TypeError, ValueError):
            raise InputError("a point must be a pair of numbers [x, y] in input-image pixels") from None
        if not (np.isfinite(x) and np.isfinite(y)) or not (0 <= x <= w and 0 <= y <= h):
            raise InputError(f"point ({x:g}, {y:g}) lies outside the {w}x{h} panorama")
        return min(x, w - 1.0), min(y, h - 1.0)

    # the prompts, read-only: lists as callers always had them (the value itself is `prompts`)
    @property
    def prompts(self) -> Prompts:
        """The current prompts (input pixels): a frozen value, replaced by each change."""
        return self._prompts

    @property
    def points(self) -> List[Tuple[float, float]]:
        """[(x, y), ...] input pixels."""
        return list(self._prompts.points)

    @property
    def point_labels(self) -> List[int]:
        """[1 positive / 0 negative, ...], one per point."""
        return list(self._prompts.labels)

    @property
    def box(self) -> Optional[List[float]]:
        """[x1, y1, x2, y2] input pixels (x1 > x2 wraps across the seam), or None."""
        box = self._prompts.box
        return None if box is None else list(box)

    @property
    def pending_corner(self) -> Optional[Tuple[float, float]]:
        """(x, y) of a box's first corner while the second is not clicked yet."""
        return self._prompts.pending_corner

    def _set_prompts(self, prompts: Prompts, drop: bool = True) -> None:
        """The one place the prompts change: the new value, and (with `drop`) no candidates,
        which answered the old prompts."""
        self._prompts = prompts
        if drop:
            self.drop_candidates()

    def drop_candidates(self) -> None:
        """Forgets the candidate masks (they answered prompts that changed, or there are none)."""
        self._candidates = None

    @property
    def has_prompts(self) -> bool:
        return self._prompts.any

    def add_point(self, x: float, y: float, positive: bool = True, new: bool = False) -> None:
        """Adds a positive (foreground) or negative (background) point (input pixels); with
        `new` the point starts a new selection instead (the points, box and half-drawn box
        go; undo brings them back)."""
        x, y = self._check_xy(x, y)
        self._push_prompts()
        base = Prompts() if new else self._prompts
        self._set_prompts(replace(base, points=(*base.points, (x, y)), labels=(*base.labels, 1 if positive else 0)))

    def add_box_corner(self, x: float, y: float, new: bool = False) -> bool:
        """First call stores a corner; the second completes the box (first corner's x is x1,
        so a second corner left of the first makes a box that wraps across the seam), which
        replaces any box. With `new` a first corner starts a new selection: the points and
        box go at once (else the box joins the points). Returns True when a box was completed."""
        x, y = self._check_xy(x, y)
        self._push_prompts()
        p = self._prompts
        if p.pending_corner is None:
            # a first corner joining the points keeps their candidates on screen
            self._set_prompts(replace(Prompts() if new else p, pending_corner=(x, y)), drop=new)
            return False
        x0, y0 = p.pending_corner
        self._set_prompts(replace(p, pending_corner=None, box=(x0, min(y0, y), x, max(y0, y))))
        return True

    def set_prompts(self, points: Sequence[Sequence[float]] = (), labels: Optional[Sequence[int]] = None,
                    box: Optional[Sequence[float]] = None) -> None:
        """Replaces all prompts at once (the API's `prompt` endpoint). Labels default to 1."""
        points = [tuple(p) for p in (points or [])]
        if any(len(p) != 2 for p in points):
            raise InputError("points must be a list of [x, y] pairs")
        if labels is None or len(labels) == 0:
            labels = [1] * len(points)
        if len(labels) != len(points):
            raise InputError(f"{len(points)} points but {len(labels)} labels")
        if any(v not in (0, 1) or isinstance(v, bool) for v in labels):
            raise InputError("point labels must be 1 (positive) or 0 (negative)")
        checked = tuple(self._check_xy(x, y) for x, y in points)
        new_box = None
        if box is not None and len(box) > 0:
            if len(box) != 4:
                raise InputError("box must be [x1, y1, x2, y2]")
            x1, y1 = self._check_xy(box[0], box[1])
            x2, y2 = self._check_xy(box[2], box[3])
            if y1 == y2 or x1 == x2:
                raise InputError("the box has no area: give two different corners")
            new_box = (x1, min(y1, y2), x2, max(y1, y2))
        if not checked and new_box is None:
            raise InputError("give at least one point or a box")
        self._push_prompts()
        self._set_prompts(Prompts(checked, tuple(int(v) for v in labels), new_box))

    def clear_prompts(self) -> bool:
        """Removes points, box and candidates (undoable). Returns False if there was nothing."""
        if not self.has_prompts and self.pending_corner is None and self._candidates is None:
            return False
        self._push_prompts()
        self._set_prompts(Prompts())
        return True

    def prompt_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments for `Predictor.predict` (point_coords, point_labels, box; input pixels)."""
        kw: Dict[str, Any] = {"point_coords": None, "point_labels": None, "box": None}
        if self.points:
            kw["point_coords"] = np.asarray(self.points, np.float32)
            kw["point_labels"] = np.asarray(self.point_labels, np.int64)
        if self.box is not None:
            kw["box"] = np.asarray(self.box, np.float32)
        return kw

    # ------------------------------------------------------------------ candidates
    def set_candidates(self, masks: np.ndarray, scores: Sequence[float]) -> int:
        """Stores the decoder's candidate masks (C, h, w) at the working size and preselects
        one (`candidates.preselect`: for a single positive click the tightest plausible mask,
        else the best fit); returns its index."""
        masks = np.asarray(masks).astype(bool)
        if masks.ndim == 2:
            masks = masks[None]
        if masks.shape[1:] != self.shape:
            raise InputError(f"masks {masks.shape[1:]} do not match the working size {self.shape}")
        scores = np.asarray(scores, np.float32).reshape(-1)
        selected = preselect(scores, masks.reshape(len(masks), -1).sum(1), single_click=self._prompts.single_click)
        self._candidates = Candidates(masks, scores, selected)
        return selected

    def select(self, index: int) -> None:
        c = self._candidates
        if c is None:
            raise InputError("there are no candidate masks: click on the panorama first")
        if not 0 <= int(index) < len(c.masks):
            raise InputError(f"candidate {index} does not exist (0..{len(c.masks) - 1})")
        self._candidates = replace(c, selected=int(index), majority=None)

    # the candidates, read-only (the value itself is `candidate_set`)
    @property
    def candidate_set(self) -> Optional[Candidates]:
        """The candidates of the last prediction, or None."""
        return self._candidates

    @property
    def candidates(self) -> Optional[np.ndarray]:
        """(C, h, w) bool candidate masks at the working size, or None."""
        return None if self._candidates is None else self._candidates.masks

    @property
    def scores(self) -> Optional[np.ndarray]:
        """(C,) float32 predicted IoU of each candidate, or None."""
        return None if self._candidates is None else self._candidates.scores

    @property
    def selected(self) -> int:
        """Index of the selected candidate (0 without candidates)."""
        return 0 if self._candidates is None else self._candidates.selected

    @property
    def selected_mask(self) -> Optional[np.ndarray]:
        return None if self._candidates is None else self._candidates.mask

    @property
    def selected_score(self) -> Optional[float]:
        return None if self._candidates is None else self._candidates.score

    def majority_class(self, mask: Optional[np.ndarray] = None) -> Optional[int]:
        """The most frequent current class under the mask (default: the selected candidate,
        remembered until the candidates, the selection or the labels change: an event's
        picture, summary and status all ask for it)."""
        if mask is not None:
            return majority_class(self.labels, np.asarray(mask, bool), self.num_classes)
        c = self._candidates
        if c is None:
            return None
        if c.majority is None or c.majority[0] != self.labels_version:
            c = self._candidates = replace(c, majority=(self.labels_version,
                                                        majority_class(self.labels, c.mask, self.num_classes)))
        return c.majority[1]

    # ------------------------------------------------------------------ edits
    def _labels_changed(self, region: Optional[Tuple[int, int, int, int]], before: Optional[np.ndarray]) -> None:
        """The labels in `region` (r0, r1, c0, c1) changed from `before`: the classes that lost or
        gained pixels there get their median distance recomputed by `stats`, the others keep it."""
        self.labels_version += 1
        self._stats = None
        if region is None or before is None:
            return
        r0, r1, c0, c1 = region
        after = self.labels[r0:r1, c0:c1]
        diff = before != after
        touched = np.bincount(before[diff], minlength=256) + np.bincount(after[diff], minlength=256)
        for c in np.flatnonzero(touched):
            self._medians.pop(int(c), None)

    def assign(self, cls: Any, mask: Optional[np.ndarray] = None) -> int:
        """Writes class `cls` into the label map under `mask` (working size; default: the
        selected candidate), records the mask as a refined mask and clears the prompts.
        Returns the number of working pixels that changed class. Undo restores all of it.
        A class name not in the table becomes a user's class (`add_class`)."""
        score = None
        if mask is None:
            if self.selected_mask is None:
                raise InputError("nothing to assign: click on the panorama to get a mask first")
            mask, score = self.selected_mask, self.selected_score
        mask = np.asarray(mask, bool)
        if mask.shape != self.shape:
            raise InputError(f"mask {mask.shape} does not match the working size {self.shape}")
        if not mask.any():
            raise InputError("the mask is empty: nothing to assign")
        idx = self.class_index(cls, create=True)  # after the checks: a refused assign adds no class
        changed = int(np.count_nonzero(mask & (self.labels != idx)))
        step = self._push_labels(mask)
        self.labels[mask] = idx
        self.edited |= mask
        self.refined.append(RefinedMask.from_mask(mask, idx, score, "prompt"))
        self._set_prompts(Prompts())  # the next click starts a new selection
        self._labels_changed(step.region, step.labels)
        return changed

    def apply_labels(self, labels: np.ndarray, masks: Sequence[Tuple[np.ndarray, int, Optional[float]]] = (),
                     source: str = "instances") -> int:
        """Replaces the label map (undoable), e.g. with `Predictor.refine_semantics` at the
        working size; `masks` (mask, class, score) are recorded as refined masks. Returns the
        changed pixel count."""
        labels = np.asarray(labels)
        if labels.shape != self.shape:
            raise InputError(f"labels {labels.shape} do not match the working size {self.shape}")
        changed = labels != self.labels
        step = self._push_labels(changed)
        self.labels[changed] = labels[changed]
        self.edited |= changed
        for m, c, s in masks:
            self.refined.append(RefinedMask.from_mask(m, c, s, source))
        self._labels_changed(step.region, step.labels)
        return int(np.count_nonzero(changed))

    # ------------------------------------------------------------------ outputs
    def stats(self) -> List[Dict]:
        """`class_stats` of the working map (cached until the labels change; after an edit only
        the classes it touched get their median distance recomputed)."""
        if self._stats is None or self._stats[0] != self.labels_version:
            stats = class_stats(self.labels, self.classes, self.palette, self.depth, known_medians=self._medians)
            self._medians = {row["index"]: row.get("median_distance_m") for row in stats if row["pixels"]}
            self._stats = (self.labels_version, stats)
        return self._stats[1]

    def summary(self) -> Dict[str, Any]:
        """JSON-able description of the current state (for the API and the stats file).
        Sizes: `height`/`width` of the input; pixel counts are working pixels."""
        h, w = self.input_size
        return {
            "name": self.name,
            "height": h,
            "width": w,
            "working_size": list(self.shape),
            "checkpoint": self.checkpoint,
            "toy_model": self.toy,
            "classes": list(self.classes),
            "class_table": [r.as_dict() for r in self.class_table.rows()],
            "has_depth": self.depth is not None,
            "has_normals": self.has_normals,
            "estimated_maps": list(self.estimated),
            "max_depth": self.max_depth,
            "edits": len(self.refined),
            "changed_pixels": int(np.count_nonzero(self.labels != self.initial_labels)),
            "timings_s": {k: round(float(v), 4) for k, v in self.timings.items()},
            "prompts": {"points": [list(p) for p in self.points], "labels": self.point_labels,
                        "box": self.box, "pending_corner": self.pending_corner},
            "candidates": None if self.scores is None else {
                "predicted_iou": [round(float(s), 4) for s in self.scores],
                "selected": self.selected,
                "areas": [int(np.count_nonzero(m)) for m in self.candidates],
                "majority_class": self.majority_class(),
            },
            "undo_depth": self.undo_depth,
            "notes": list(self.notes),
        }


__all__ = ["Session", "working_size", "WORK_MAX_WIDTH"]
