"""One sample of an evaluation: predict it, count per class, make its per_sample.csv row.

Per sample, :func:`score_sample` predicts the labels and records per-class intersection,
ground-truth and prediction pixel counts (plain and weighted by solid angle, steradians) and
the seam counts as one row; :mod:`.evaluate` sums the rows into the split's metrics.
:class:`ScoreTask` is the same for a runner (`panosamic.runner`, `panosamic.ray_engine`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .. import geometry, metrics
from ..batch import error_text, labels_array
from ..errors import PanoSAMicError
from ..io.writers import save_labels_png
from .layouts import IGNORE_INDEX, Layout, Sample, get_layout

INFO_FIELDS = ["sample", "area", "name", "status", "error", "width", "height", "seconds", "miou",
               "pixel_accuracy", "seam_changes", "seam_pairs", "interior_changes", "interior_pairs",
               "gt_seam_changes", "gt_interior_changes"]
COUNT_KINDS = ("i", "t", "p")  # intersection, target (ground truth), prediction


def csv_fields(classes: Sequence[str]) -> List[str]:
    """Columns of per_sample.csv for a dataset with these class names."""
    return (INFO_FIELDS + [f"{k}_{c}" for k in COUNT_KINDS for c in classes]
            + [f"w{k}_{c}" for k in COUNT_KINDS for c in classes])


def score_sample(predictor, layout: Layout, sample: Sample, labels_dir: Optional[Path] = None,
                 mask_black: Optional[bool] = None, estimator: Any = None) -> Dict[str, Any]:
    """Predict one sample and return its CSV row (see the module docstring). Raises
    :class:`~panosamic.errors.PanoSAMicError` on unreadable files; writes the label PNG only
    after the prediction succeeded. With `estimator` (`panosamic.estimation.load_estimator`)
    the dataset's depth and normals are not read: the depth is estimated from the RGB image
    and the normals derived from it, as for a photo that comes without them."""
    t0 = time.perf_counter()
    mods = predictor.required_modalities
    black = layout.black_void_for(mods) if mask_black is None else mask_black
    if estimator is not None and "depth" in mods:
        from ..estimation.estimate import estimate_depth

        data = layout.load(sample, ("image",), mask_black=black)
        depth = estimate_depth(data.image, estimator, size=data.image.shape[:2])
        predictor.set_panorama(data.image, depth=depth)
    else:
        data = layout.load(sample, mods, mask_black=black)
        predictor.set_panorama(data.image, depth=data.depth, normals=data.normals)
    pred = predictor.labels
    k = layout.dataset.num_classes
    gt = data.labels
    plain = metrics.class_counts(metrics.confusion_matrix(pred, gt, k, ignore_index=IGNORE_INDEX))
    weighted = metrics.class_counts(metrics.confusion_matrix(pred, gt, k, ignore_index=IGNORE_INDEX,
                                                             weights=geometry.pixel_areas(*gt.shape)))
    seam = metrics.seam_counts(pred)
    gt_seam = metrics.seam_counts(gt)
    own = metrics.scores_from_counts(plain["intersection"], plain["target"], plain["prediction"])
    if labels_dir is not None:
        save_labels_png(Path(labels_dir) / sample.area / f"{sample.name}.png", labels_array(pred, k))
    h, w = gt.shape
    row: Dict[str, Any] = {
        "sample": sample.key, "area": sample.area, "name": sample.name, "status": "ok", "error": "",
        "width": w, "height": h, "seconds": round(time.perf_counter() - t0, 4),
        "miou": own["miou"], "pixel_accuracy": own["pixel_accuracy"],
        "seam_changes": seam[0], "seam_pairs": seam[1], "interior_changes": seam[2], "interior_pairs": seam[3],
        "gt_seam_changes": gt_seam[0], "gt_interior_changes": gt_seam[2],
    }
    names = {"i": "intersection", "t": "target", "p": "prediction"}
    for kind in COUNT_KINDS:
        for c, v in zip(layout.dataset.classes, plain[names[kind]]):
            row[f"{kind}_{c}"] = int(v)
        for c, v in zip(layout.dataset.classes, weighted[names[kind]]):
            row[f"w{kind}_{c}"] = float(v)  # repr round-trips, so a resumed run sums the same floats
    return row


def error_row(sample: Sample, message: str) -> Dict[str, Any]:
    return {"sample": sample.key, "area": sample.area, "name": sample.name, "status": "error",
            "error": message.replace("\n", " ")}


def score_one_safely(predictor, layout: Layout, sample: Sample, labels_dir: Optional[Path],
                     mask_black: bool, estimator: Any = None) -> Dict[str, Any]:
    """:func:`score_sample`, with a failure turned into an error row (the run goes on)."""
    try:
        return score_sample(predictor, layout, sample, labels_dir, mask_black, estimator)
    except (PanoSAMicError, OSError) as e:
        return error_row(sample, error_text(e))


@dataclass
class ScoreTask:
    """:func:`score_one_safely` for a runner: item {"area", "name", "path"} -> CSV row. The
    layout is opened once per worker (it is not sent); `estimator` (local runner only: it does
    not pickle) replaces the dataset's depth and normals by estimates from the RGB image."""

    dataset: str
    root: str
    labels_dir: Optional[str]
    mask_black: bool
    estimator: Any = None

    def __post_init__(self) -> None:
        self._layout: Optional[Layout] = None

    def __getstate__(self) -> Dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_layout"}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state, _layout=None)

    @staticmethod
    def item(sample: Sample) -> Dict[str, str]:
        return {"area": sample.area, "name": sample.name, "path": str(sample.path.resolve())}

    def __call__(self, predictor, item: Dict[str, Any]) -> Dict[str, Any]:
        if self._layout is None:
            self._layout = get_layout(self.dataset, self.root)
        sample = Sample(str(item["area"]), str(item["name"]), Path(str(item["path"])))
        labels_dir = Path(self.labels_dir) if self.labels_dir else None
        return score_one_safely(predictor, self._layout, sample, labels_dir, self.mask_black, self.estimator)
