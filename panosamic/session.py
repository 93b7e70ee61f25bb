"""One user's editing session on one segmented panorama, independent of any UI.

A `Session` holds the photo, the current label map and everything the user did to it:

* prompts for SAM's decoder (positive/negative points, one box, a half-drawn box),
* the candidate masks of the last prompt (with predicted IoU) and which one is selected,
* edits: `assign` writes a mask into the label map with a class, `apply_labels`
  replaces the map (e.g. after refining with SAM instances),
* one undo stack across prompts and edits,
* `export` of labels / colours / statistics / masks (PNG, COCO RLE) / point cloud.

Coordinates are input-image pixels (x to the right, y down). A box is XYXY; x1 > x2
means it wraps across the left/right seam of the panorama.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import viz
from .errors import InputError

MAX_UNDO = 64


@dataclass
class RefinedMask:
    """A mask the user wrote into the map (bit-packed to keep sessions small)."""

    packed: np.ndarray
    shape: Tuple[int, int]
    class_index: int
    score: Optional[float]
    source: str  # "prompt" or "instances"

    @classmethod
    def from_mask(cls, mask: np.ndarray, class_index: int, score: Optional[float], source: str) -> "RefinedMask":
        m = np.asarray(mask, bool)
        return cls(np.packbits(m.ravel()), m.shape, int(class_index), None if score is None else float(score), source)

    @property
    def mask(self) -> np.ndarray:
        h, w = self.shape
        return np.unpackbits(self.packed, count=h * w).astype(bool).reshape(h, w)


class Session:
    """Per-user state for one panorama (see module docstring)."""

    def __init__(self, image: np.ndarray, labels: np.ndarray, classes: Sequence[str], palette: np.ndarray,
                 depth: Optional[np.ndarray] = None, normals: Optional[np.ndarray] = None,
                 key: Optional[str] = None, checkpoint: Optional[str] = None, state: Any = None,
                 max_depth: Optional[float] = None, name: str = "panorama",
                 timings: Optional[Dict[str, float]] = None):
        labels = np.asarray(labels)
        image = np.asarray(image)
        if image.shape[:2] != labels.shape:
            raise InputError(f"labels {labels.shape} do not match the image {image.shape[:2]}")
        self.image = image
        self.depth = None if depth is None else np.asarray(depth, np.float32)
        self.normals = normals
        self.classes = tuple(classes)
        self.palette = np.asarray(palette, np.uint8)
        self.initial_labels = labels.astype(np.int64).copy()
        self.labels = labels.astype(np.int64).copy()
        self.key = key
        self.checkpoint = checkpoint
        self.state = state
        self.max_depth = max_depth
        self.name = name
        self.timings = dict(timings or {})
        # prompts
        self.points: List[Tuple[float, float]] = []
        self.point_labels: List[int] = []
        self.box: Optional[List[float]] = None
        self.pending_corner: Optional[Tuple[float, float]] = None
        # candidates of the last prediction
        self.candidates: Optional[np.ndarray] = None
        self.scores: Optional[np.ndarray] = None
        self.selected: int = 0
        # edits
        self.refined: List[RefinedMask] = []
        self._undo: List[tuple] = []

    # ------------------------------------------------------------------ basics
    @property
    def shape(self) -> Tuple[int, int]:
        return tuple(self.labels.shape)  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_index(self, cls: Any) -> int:
        """Index of a class given as index, numeric string or (case-insensitive) name."""
        if isinstance(cls, (int, np.integer)) and not isinstance(cls, bool):
            idx = int(cls)
        else:
            text = str(cls).strip()
            if text.lstrip("-").isdigit():
                idx = int(text)
            else:
                names = [c.lower() for c in self.classes]
                if text.lower() not in names:
                    raise InputError(f"unknown class {text!r}; choose one of: {', '.join(self.classes)}")
                idx = names.index(text.lower())
        if not 0 <= idx < self.num_classes:
            raise InputError(f"class index {idx} is out of range 0..{self.num_classes - 1}")
        return idx

    def _push(self, action: tuple) -> None:
        self._undo.append(action)
        if len(self._undo) > MAX_UNDO:
            del self._undo[0]

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def undo_depth(self) -> int:
        return len(self._undo)

    # ------------------------------------------------------------------ prompts
    def _check_xy(self, x: float, y: float) -> Tuple[float, float]:
        h, w = self.shape
        try:
            x, y = float(x), float(y)
        except (TypeError, ValueError):
            raise InputError(f"point ({x!r}, {y!r}) is not a pair of numbers") from None
        if not (np.isfinite(x) and np.isfinite(y)) or not (0 <= x <= w and 0 <= y <= h):
            raise InputError(f"point ({x:g}, {y:g}) lies outside the {w}x{h} panorama")
        return min(x, w - 1.0), min(y, h - 1.0)

    def _prompt_snapshot(self) -> tuple:
        return (list(self.points), list(self.point_labels),
                None if self.box is None else list(self.box), self.pending_corner)

    def _restore_prompts(self, snap: tuple) -> None:
        self.points, self.point_labels, self.box, self.pending_corner = (
            list(snap[0]), list(snap[1]), None if snap[2] is None else list(snap[2]), snap[3])
        self._drop_candidates()

    def _drop_candidates(self) -> None:
        self.candidates = None
        self.scores = None
        self.selected = 0

    @property
    def has_prompts(self) -> bool:
        return bool(self.points) or self.box is not None

    def add_point(self, x: float, y: float, positive: bool = True) -> None:
        """Adds a positive (foreground) or negative (background) point."""
        x, y = self._check_xy(x, y)
        self._push(("prompts", self._prompt_snapshot()))
        self.points.append((x, y))
        self.point_labels.append(1 if positive else 0)
        self._drop_candidates()

    def add_box_corner(self, x: float, y: float) -> bool:
        """First call stores a corner; the second completes the box (first corner's x is x1,
        so a second corner left of the first makes a box that wraps across the seam).
        Returns True when a box was completed."""
        x, y = self._check_xy(x, y)
        self._push(("prompts", self._prompt_snapshot()))
        if self.pending_corner is None:
            self.pending_corner = (x, y)
            return False
        x0, y0 = self.pending_corner
        self.pending_corner = None
        self.box = [x0, min(y0, y), x, max(y0, y)]
        self._drop_candidates()
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
        if any(int(v) not in (0, 1) for v in labels):
            raise InputError("point labels must be 1 (positive) or 0 (negative)")
        checked = [self._check_xy(x, y) for x, y in points]
        new_box = None
        if box is not None and len(box) > 0:
            if len(box) != 4:
                raise InputError("box must be [x1, y1, x2, y2]")
            x1, y1 = self._check_xy(box[0], box[1])
            x2, y2 = self._check_xy(box[2], box[3])
            if y1 == y2 or x1 == x2:
                raise InputError("the box has no area: give two different corners")
            new_box = [x1, min(y1, y2), x2, max(y1, y2)]
        if not checked and new_box is None:
            raise InputError("give at least one point or a box")
        self._push(("prompts", self._prompt_snapshot()))
        self.points = checked
        self.point_labels = [int(v) for v in labels]
        self.box = new_box
        self.pending_corner = None
        self._drop_candidates()

    def clear_prompts(self) -> bool:
        """Removes points, box and candidates (undoable). Returns False if there was nothing."""
        if not self.has_prompts and self.pending_corner is None and self.candidates is None:
            return False
        self._push(("prompts", self._prompt_snapshot()))
        self.points, self.point_labels, self.box, self.pending_corner = [], [], None, None
        self._drop_candidates()
        return True

    def prompt_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments for `Predictor.predict` (point_coords, point_labels, box)."""
        kw: Dict[str, Any] = {"point_coords": None, "point_labels": None, "box": None}
        if self.points:
            kw["point_coords"] = np.asarray(self.points, np.float32)
            kw["point_labels"] = np.asarray(self.point_labels, np.int64)
        if self.box is not None:
            kw["box"] = np.asarray(self.box, np.float32)
        return kw

    # ------------------------------------------------------------------ candidates
    def set_candidates(self, masks: np.ndarray, scores: Sequence[float]) -> int:
        """Stores the decoder's candidate masks (M, H, W) and selects the best; returns its index."""
        masks = np.asarray(masks).astype(bool)
        if masks.ndim == 2:
            masks = masks[None]
        if masks.shape[1:] != self.shape:
            raise InputError(f"masks {masks.shape[1:]} do not match the panorama {self.shape}")
        self.candidates = masks
        self.scores = np.asarray(scores, np.float32).reshape(-1)
        self.selected = int(np.argmax(self.scores)) if len(self.scores) else 0
        return self.selected

    def select(self, index: int) -> None:
        if self.candidates is None:
            raise InputError("there are no candidate masks: click on the panorama first")
        if not 0 <= int(index) < len(self.candidates):
            raise InputError(f"candidate {index} does not exist (0..{len(self.candidates) - 1})")
        self.selected = int(index)

    @property
    def selected_mask(self) -> Optional[np.ndarray]:
        return None if self.candidates is None else self.candidates[self.selected]

    @property
    def selected_score(self) -> Optional[float]:
        return None if self.scores is None else float(self.scores[self.selected])

    def majority_class(self, mask: Optional[np.ndarray] = None) -> Optional[int]:
        """The most frequent current class under the mask (default: the selected candidate)."""
        mask = self.selected_mask if mask is None else np.asarray(mask, bool)
        if mask is None or not mask.any():
            return None
        under = self.labels[mask]
        under = under[(under >= 0) & (under < self.num_classes)]
        if not under.size:
            return None
        return int(np.bincount(under, minlength=self.num_classes).argmax())

    # ------------------------------------------------------------------ edits
    def assign(self, cls: Any, mask: Optional[np.ndarray] = None) -> int:
        """Writes class `cls` into the label map under `mask` (default: the selected candidate),
        records the mask as a refined mask and clears the prompts. Returns the number of pixels
        that changed class. Undo restores the map and the prompts."""
        idx = self.class_index(cls)
        score = None
        if mask is None:
            if self.selected_mask is None:
                raise InputError("nothing to assign: click on the panorama to get a mask first")
            mask, score = self.selected_mask, self.selected_score
        mask = np.asarray(mask, bool)
        if mask.shape != self.shape:
            raise InputError(f"mask {mask.shape} does not match the panorama {self.shape}")
        if not mask.any():
            raise InputError("the mask is empty: nothing to assign")
        changed = np.flatnonzero(mask.ravel() & (self.labels.ravel() != idx))
        old = self.labels.ravel()[changed].copy()
        self._push(("labels", changed, old, len(self.refined), self._prompt_snapshot()))
        self.labels.ravel()[changed] = idx
        self.refined.append(RefinedMask.from_mask(mask, idx, score, "prompt"))
        self.points, self.point_labels, self.box, self.pending_corner = [], [], None, None
        self._drop_candidates()
        return int(changed.size)

    def apply_labels(self, labels: np.ndarray, masks: Sequence[Tuple[np.ndarray, int, Optional[float]]] = (),
                     source: str = "instances") -> int:
        """Replaces the label map (undoable), e.g. with `Predictor.refine_semantics`; `masks`
        (mask, class, score) are recorded as refined masks. Returns the changed pixel count."""
        labels = np.asarray(labels)
        if labels.shape != self.shape:
            raise InputError(f"labels {labels.shape} do not match the panorama {self.shape}")
        flat_new = labels.astype(np.int64).ravel()
        changed = np.flatnonzero(flat_new != self.labels.ravel())
        old = self.labels.ravel()[changed].copy()
        self._push(("labels", changed, old, len(self.refined), self._prompt_snapshot()))
        self.labels.ravel()[changed] = flat_new[changed]
        for m, c, s in masks:
            self.refined.append(RefinedMask.from_mask(m, c, s, source))
        return int(changed.size)

    def undo(self) -> Optional[str]:
        """Reverts the last prompt change or edit; returns "prompts", "labels" or None (nothing to undo).
        After undoing, candidates are dropped: re-run the decoder if `has_prompts`."""
        if not self._undo:
            return None
        action = self._undo.pop()
        if action[0] == "prompts":
            self._restore_prompts(action[1])
            return "prompts"
        _, changed, old, n_refined, snap = action
        self.labels.ravel()[changed] = old
        del self.refined[n_refined:]
        self._restore_prompts(snap)
        return "labels"

    # ------------------------------------------------------------------ outputs
    def stats(self) -> List[Dict]:
        return viz.class_stats(self.labels, self.classes, self.palette, self.depth)

    def colors(self) -> np.ndarray:
        out = np.zeros(self.shape + (3,), np.uint8)
        valid = (self.labels >= 0) & (self.labels < self.num_classes)
        out[valid] = self.palette[self.labels[valid]]
        return out

    def summary(self) -> Dict[str, Any]:
        """JSON-able description of the current state (for the API and the stats file)."""
        h, w = self.shape
        return {
            "name": self.name,
            "height": h,
            "width": w,
            "checkpoint": self.checkpoint,
            "classes": list(self.classes),
            "has_depth": self.depth is not None,
            "has_normals": self.normals is not None,
            "max_depth": self.max_depth,
            "edits": len(self.refined),
            "changed_pixels": int((self.labels != self.initial_labels).sum()),
            "timings_s": {k: round(float(v), 4) for k, v in self.timings.items()},
            "prompts": {"points": [list(p) for p in self.points], "labels": list(self.point_labels),
                        "box": self.box, "pending_corner": self.pending_corner},
            "candidates": None if self.scores is None else {
                "predicted_iou": [round(float(s), 4) for s in self.scores],
                "selected": self.selected,
                "areas": [int(m.sum()) for m in self.candidates],
                "majority_class": self.majority_class(),
            },
            "undo_depth": self.undo_depth,
        }

    def coco(self) -> Dict[str, Any]:
        """COCO-style JSON: per-class semantic segments (COCO-Stuff style, `annotations`) and the
        user's refined masks (`refined_masks`), all as compressed RLE."""
        h, w = self.shape
        cats = [{"id": i, "name": n, "color": [int(v) for v in self.palette[i]]} for i, n in enumerate(self.classes)]
        anns = []
        for c in np.unique(self.labels):
            if not 0 <= c < self.num_classes:
                continue
            m = self.labels == c
            anns.append({"id": len(anns) + 1, "image_id": 1, "category_id": int(c), "iscrowd": 0,
                         "area": int(m.sum()), "bbox": viz.mask_bbox(m), "segmentation": viz.encode_rle(m)})
        refined = []
        for i, r in enumerate(self.refined):
            m = r.mask
            refined.append({"id": i + 1, "image_id": 1, "category_id": r.class_index, "iscrowd": 0,
                            "area": int(m.sum()), "bbox": viz.mask_bbox(m), "segmentation": viz.encode_rle(m),
                            "predicted_iou": r.score, "source": r.source})
        return {"info": {"description": "PanoSAMic semantic segmentation", "projection": "equirectangular"},
                "images": [{"id": 1, "file_name": self.name, "height": h, "width": w}],
                "categories": cats, "annotations": anns, "refined_masks": refined}

    def refined_id_map(self) -> np.ndarray:
        """(H, W) uint16: 0 outside refined masks, i + 1 where refined mask i (last wins)."""
        out = np.zeros(self.shape, np.uint16)
        for i, r in enumerate(self.refined):
            out[r.mask] = i + 1
        return out

    def export(self, folder: str, stem: Optional[str] = None, glb_max_points: int = 400_000) -> Dict[str, str]:
        """Writes the downloads into `folder`; returns {kind: path}.

        kinds: labels (PNG, class indices), colors (PNG), stats_json, stats_csv, coco_rle (JSON),
        masks_png (16-bit ids of refined masks, 0 = none; only with refined masks) and
        pointcloud_glb (only with depth).
        """
        import cv2

        os.makedirs(folder, exist_ok=True)
        stem = stem or _safe_stem(self.name)
        p = lambda suffix: os.path.join(folder, f"{stem}_{suffix}")  # noqa: E731
        out: Dict[str, str] = {}
        out["labels"] = viz.save_label_png(p("labels.png"), self.labels)
        out["colors"] = viz.save_rgb_png(p("colors.png"), self.colors())
        stats = self.stats()
        info = self.summary()
        info.pop("prompts", None)
        info.pop("candidates", None)
        with open(p("stats.json"), "w") as f:
            json.dump({**info, "stats": stats}, f, indent=1)
        out["stats_json"] = p("stats.json")
        with open(p("stats.csv"), "w") as f:
            f.write(viz.stats_csv(stats))
        out["stats_csv"] = p("stats.csv")
        with open(p("masks_rle.json"), "w") as f:
            json.dump(self.coco(), f)
        out["coco_rle"] = p("masks_rle.json")
        if self.refined:
            cv2.imwrite(p("masks.png"), self.refined_id_map())
            out["masks_png"] = p("masks.png")
        if self.depth is not None:
            out["pointcloud_glb"] = viz.point_cloud_glb(p("pointcloud.glb"), self.depth, self.labels,
                                                        self.palette, max_points=glb_max_points,
                                                        max_depth=None)
        return out


def _safe_stem(name: str) -> str:
    base = os.path.splitext(os.path.basename(str(name)))[0] or "panorama"
    for suffix in ("_rgb", "_color", "_image"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in base)[:64] or "panorama"


__all__ = ["Session", "RefinedMask", "MAX_UNDO"]
