"""Evaluation on the released datasets' processed layouts (`python -m panosamic evaluate`).

* :mod:`.layouts`: one reader per dataset (Stanford2D3DS, Matterport3D, Structured3D, ToF-360):
  samples, file encodings, folds, void pixels.
* :mod:`.max_depth`: T, the training split's 99.5 % inlier depth, with a cache.
* :mod:`.evaluate`: the accumulation over a split, resumable, metrics.json + per_sample.csv.
"""

from .evaluate import evaluate_dataset, format_report, score_sample
from .layouts import LAYOUTS, FoldError, LayoutError, get_layout
from .max_depth import split_max_depth

__all__ = ["evaluate_dataset", "format_report", "score_sample", "LAYOUTS", "FoldError", "LayoutError",
           "get_layout", "split_max_depth"]
