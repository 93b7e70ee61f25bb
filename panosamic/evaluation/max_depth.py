"""T, the depth that maps to black in the model's depth image, as the authors derive it.

T is the 99.5 % inlier depth of the fold's *training* split: the valid depths of every
training sample go into one histogram (the bins of :meth:`Layout.depth_histogram`, e.g.
0.1 m over 0..128 m for Stanford2D3DS); T is the left edge (rounded to 0.1 m) of the
first bin at which the cumulative count reaches 99.5 % of the total.

Where it comes from, in order:
1. the authors' ``cache_splits_depth_statistics.json`` in the dataset root (thresholds
   per fold for the ratios 0.9, 0.95, 0.99, 0.995, 0.999, 1);
2. the authors' ``cache_area_depth_statistics.json`` (one histogram per area/scene),
   summed over the training split;
3. our own cache ``panosamic_max_depth.json`` (in the root, or in the output folder when
   the root is read-only), written by
4. histogramming the training samples' depth files (minutes for a full split).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from .layouts import Layout, LayoutError

__all__ = ["INLIER_RATIO", "AUTHOR_RATIOS", "inlier_depth", "split_max_depth", "CACHE_FILE"]

INLIER_RATIO = 0.995
AUTHOR_RATIOS = (0.9, 0.95, 0.99, 0.995, 0.999, 1.0)
SPLIT_CACHE = "cache_splits_depth_statistics.json"
AREA_CACHE = "cache_area_depth_statistics.json"
CACHE_FILE = "panosamic_max_depth.json"


def inlier_depth(hist, edges, ratio: float = INLIER_RATIO) -> float:
    """Left edge of the first bin where the cumulative count reaches ``ratio`` of the total (metres).

    ``hist`` ``(B,)`` counts, ``edges`` ``(B+1,)`` (or ``(B,)`` left edges) in metres.
    """
    h = np.asarray(hist, dtype=np.float64)
    cum = np.cumsum(h)
    if cum.size == 0 or cum[-1] <= 0:
        raise LayoutError("the training split has no valid depth pixels, so T cannot be derived; pass --max-depth")
    idx = int(np.argmax(cum >= ratio * cum[-1]))
    return float(np.round(np.asarray(edges, dtype=np.float64)[idx], 1))


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise LayoutError(f"cannot read {path}: {err}; delete it to recompute T") from None


def _from_split_cache(layout: Layout, fold: int, ratio: float) -> Optional[float]:
    path = layout.root / SPLIT_CACHE
    if not path.is_file() or ratio not in AUTHOR_RATIOS:
        return None
    data = _read_json(path)
    values = data.get(str(fold)) if isinstance(data, dict) else data
    if not isinstance(values, list) or len(values) != len(AUTHOR_RATIOS):
        return None
    return float(values[AUTHOR_RATIOS.index(ratio)])


def _from_area_cache(layout: Layout, train: List[str], ratio: float) -> Optional[float]:
    path = layout.root / AREA_CACHE
    if not path.is_file():
        return None
    data = _read_json(path)
    total, edges = None, None
    for area in train:
        if not (layout.root / area).is_dir() or area not in data:
            continue  # the authors sum only the areas present on disk
        hist, bins = data[area][0], data[area][1]
        total = np.asarray(hist, dtype=np.float64) if total is None else total + np.asarray(hist)
        edges = bins if edges is None else edges
    return None if total is None else inlier_depth(total, edges, ratio)


def _cache_key(layout: Layout, fold: int, ratio: float) -> str:
    return f"{layout.name}/fold{fold}/{ratio}"


def split_max_depth(layout: Layout, fold: int, ratio: float = INLIER_RATIO, fallback_dir=None,
                    progress: Optional[Callable] = None) -> Tuple[float, str]:
    """``(T in metres, where it came from)`` for ``fold``'s training split (see the module docstring).

    ``progress``: an optional ``tqdm``-like factory called as ``progress(iterable, total=, desc=)``
    while histogramming samples. ``fallback_dir``: where the cache goes if the root is read-only.
    """
    train = layout.split(fold, "train")
    t = _from_split_cache(layout, fold, ratio)
    if t is not None:
        return t, f"{SPLIT_CACHE} in the dataset root"
    t = _from_area_cache(layout, train, ratio)
    if t is not None:
        return t, f"{AREA_CACHE} in the dataset root, summed over the training split"
    key = _cache_key(layout, fold, ratio)
    places = [layout.root] + ([Path(fallback_dir)] if fallback_dir is not None else [])
    for place in places:
        path = place / CACHE_FILE
        if path.is_file():
            entry = _read_json(path).get(key)
            if entry is not None:
                return float(entry["max_depth"]), f"{path} (computed from the training split)"
    try:
        samples = layout.samples(train, modalities=("depth",))
    except LayoutError as err:
        raise LayoutError(f"T (--max-depth) is derived from fold {fold}'s training split "
                          f"({', '.join(train[:6])}{', ...' if len(train) > 6 else ''}), which is not usable here: "
                          f"{err}. Pass --max-depth METRES, or add the training split or the authors' "
                          f"{SPLIT_CACHE}") from None
    total = np.zeros(layout.depth_hist_bins, dtype=np.int64)
    it = progress(samples, total=len(samples), desc="T from the training split") if progress else samples
    for s in it:
        total += layout.depth_histogram(s)
    t = inlier_depth(total, layout.hist_edges(), ratio)
    entry = {"max_depth": t, "inlier_ratio": ratio, "num_samples": len(samples),
             "areas": sorted({s.area for s in samples})}
    for place in places:
        path = place / CACHE_FILE
        try:
            data: Dict = _read_json(path) if path.is_file() else {}
            data[key] = entry
            place.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
            os.replace(tmp, path)
            return t, f"computed from {len(samples)} training samples (cached in {path})"
        except OSError:
            continue  # read-only root: try the next place
    return t, f"computed from {len(samples)} training samples (not cached: no writable folder)"
