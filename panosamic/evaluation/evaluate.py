"""Evaluate a checkpoint on a dataset split: accumulate the counts, write metrics.json and a CSV.

    result = evaluate_dataset("stanford2d3ds", "/data/s2d3ds/processed", fold=1,
                              model=ModelSpec("dfki-av/PanoSAMic", subfolder="stanford2d3ds-vith-rgbdn-fold1"),
                              out="eval/fold1")                 # runner=RayRunner(...) for Ray actors

Per sample, :func:`panosamic.evaluation.scoring.score_sample` predicts the labels and records
per-class intersection, ground-truth and prediction pixel counts (plain and weighted by solid
angle) and the seam counts as one row of ``per_sample.csv``. The split's metrics are computed from the
sums of those rows (:func:`panosamic.metrics.scores_from_counts`), which is how the
authors accumulate them: IoU per class = summed intersection / summed union, mIoU and
mean class accuracy are NaN-aware means over classes, pixel accuracy = summed
intersection / summed ground truth. Void pixels (``IGNORE_INDEX``) never count.

Resumable: rows already in ``per_sample.csv`` with status ``ok`` are not recomputed
(``run.json`` records the checkpoint, fold and T so that a rerun with other settings is
refused instead of mixing results). Outputs in ``out``:

* ``metrics.json``: ``miou``, ``macc``, ``pixel_accuracy``, ``per_class_iou`` {class: IoU},
  ``per_class_accuracy``, the same with ``_weighted`` (each pixel weighted by its solid
  angle, i.e. cos(latitude)), ``seam_consistency_pred`` / ``_gt``, ``num_samples``,
  ``num_failed``, ``max_depth`` (T, metres) and ``max_depth_source``, the dataset, fold,
  test areas, checkpoint and ``published`` (the authors' numbers where recorded, else null).
  Values are fractions in 0..1; NaN (a class absent from truth and prediction) is null.
* ``per_sample.csv``: one row per sample (``sample`` = ``<area>/<name>``, status, size,
  seconds, the sample's own mIoU and pixel accuracy, seam counts, then ``i_``/``t_``/``p_``
  <class> pixel counts and ``wi_``/``wt_``/``wp_`` <class> solid angles in steradians).
* ``labels/<area>/<name>.png`` with ``save_labels``: predicted class indices (8-bit PNG).
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .. import metrics
from ..errors import InputError
from ..io.writers import write_csv
from ..runner import LocalRunner, Runner
from ..spec import ModelSpec
from .layouts import IGNORE_INDEX, Layout, Sample, get_layout
from .max_depth import split_max_depth
from .scoring import COUNT_KINDS, ScoreTask, csv_fields

__all__ = ["evaluate_dataset", "summarize_rows", "format_report", "PUBLISHED", "ResumeError", "METRICS_FILE",
           "CSV_FILE", "RUN_FILE"]

METRICS_FILE, CSV_FILE, RUN_FILE = "metrics.json", "per_sample.csv", "run.json"

#: The authors' published numbers per released checkpoint subfolder, e.g.
#: {"stanford2d3ds-vith-rgbdn-fold1": {"miou": 0.0, "macc": 0.0}} (fractions). Only numbers the
#: authors state in their repository or paper belong here; none were found in the material
#: available when this was written, so it is empty and the report says so.
PUBLISHED: Dict[str, Dict[str, float]] = {}

class ResumeError(InputError):
    """The output folder holds results of a different evaluation."""


# --- the split ------------------------------------------------------------------------------------


def _nan_to_none(v: float) -> Optional[float]:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def summarize_rows(rows: Sequence[Dict[str, Any]], classes: Sequence[str]) -> Dict[str, Any]:
    """Split-level metrics from per-sample rows (status ok), summed in the given order."""
    ok = [r for r in rows if r.get("status") == "ok"]
    out: Dict[str, Any] = {"num_samples": len(ok)}
    for prefix, suffix in (("", ""), ("w", "_weighted")):
        sums = {k: np.array([sum(float(r[f"{prefix}{k}_{c}"]) for r in ok) for c in classes], dtype=np.float64)
                for k in COUNT_KINDS}
        s = metrics.scores_from_counts(sums["i"], sums["t"], sums["p"])
        out[f"miou{suffix}"] = _nan_to_none(s["miou"])
        out[f"macc{suffix}"] = _nan_to_none(s["macc"])
        out[f"pixel_accuracy{suffix}"] = _nan_to_none(s["pixel_accuracy"])
        out[f"per_class_iou{suffix}"] = {c: _nan_to_none(v) for c, v in zip(classes, s["per_class_iou"])}
        out[f"per_class_accuracy{suffix}"] = {c: _nan_to_none(v) for c, v in zip(classes, s["per_class_accuracy"])}
    if ok:
        tot = {k: sum(int(r[k]) for r in ok) for k in ("seam_changes", "seam_pairs", "interior_changes",
                                                         "interior_pairs", "gt_seam_changes", "gt_interior_changes")}
        out["seam_consistency_pred"] = metrics.seam_ratio(tot["seam_changes"], tot["seam_pairs"],
                                                          tot["interior_changes"], tot["interior_pairs"])
        out["seam_consistency_gt"] = metrics.seam_ratio(tot["gt_seam_changes"], tot["seam_pairs"],
                                                        tot["gt_interior_changes"], tot["interior_pairs"])
        out["seconds_per_sample"] = round(sum(float(r["seconds"]) for r in ok) / len(ok), 4)
    else:
        out["seam_consistency_pred"] = out["seam_consistency_gt"] = out["seconds_per_sample"] = None
    return out


def _read_rows(path: Path, fields: List[str]) -> List[Dict[str, Any]]:
    """Complete rows of an existing per_sample.csv (a partly written last line is dropped)."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != fields:
            raise ResumeError(f"{path} was written for other classes or by another version; "
                              "pass --overwrite or choose another --out")
        rows = []
        for r in reader:
            if r.get("status") == "ok":
                try:
                    [float(r[k]) for k in fields[5:]]
                except (TypeError, ValueError):
                    continue  # cut short by an interruption
            rows.append(r)
    return rows


def _write_rows(path: Path, rows: Iterable[Dict[str, Any]], fields: List[str]) -> None:
    write_csv(path, rows, fields)


def _choose_max_depth(layout: Layout, fold: int, modalities: Sequence[str], max_depth: Optional[float],
                      out: Path, progress: bool) -> Tuple[float, str]:
    """(T in metres, where it came from): given, unused (no depth), or the training split's."""
    if max_depth is not None:
        if not (max_depth > 0 and math.isfinite(max_depth)):
            raise InputError("--max-depth must be a positive number of metres")
        return float(max_depth), "given (--max-depth)"
    if "depth" not in modalities:
        return 10.0, "unused: the checkpoint takes no depth"
    from tqdm.auto import tqdm

    bar = (lambda it, total, desc: tqdm(it, total=total, desc=desc, unit="pano", file=sys.stderr,
                                        disable=not progress, dynamic_ncols=True))
    return split_max_depth(layout, fold, fallback_dir=out, progress=bar)


def _resume(out: Path, run: Dict[str, Any], fields: List[str], samples: Sequence[Sample], overwrite: bool,
            log: Callable[[str], None]) -> Tuple[List[Dict[str, Any]], List[Sample]]:
    """(rows already scored, samples still to score) after checking that `out` holds this run
    (else ResumeError); writes run.json and the kept rows back."""
    csv_path, run_path = out / CSV_FILE, out / RUN_FILE
    if overwrite:
        for p in (csv_path, run_path, out / METRICS_FILE):
            p.unlink(missing_ok=True)
    if run_path.is_file():
        try:
            previous = json.loads(run_path.read_text(encoding="utf-8"))
        except ValueError:
            previous = {}
        differs = [k for k in run if previous.get(k) != run[k] and k != "root"]
        if differs:
            raise ResumeError(f"{out} holds an evaluation with another {', '.join(differs)} "
                              f"({', '.join(f'{k}={previous.get(k)!r}' for k in differs)}); pass --overwrite "
                              "to start again or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    run_path.write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
    keys = {s.key for s in samples}
    rows = [r for r in _read_rows(csv_path, fields) if r.get("sample") in keys]
    done = {r["sample"] for r in rows if r.get("status") == "ok"}
    rows = [r for r in rows if r["sample"] in done]  # failed samples are retried
    _write_rows(csv_path, rows, fields)
    if done:
        log(f"panosamic: resuming: {len(done)} of {len(samples)} samples already scored in {csv_path}")
    return rows, [s for s in samples if s.key not in done]


def evaluate_dataset(dataset: str, root, fold: int, model: Union[ModelSpec, Mapping[str, Any]], out,
                     max_depth: Optional[float] = None, save_labels: bool = False, runner: Optional[Runner] = None,
                     overwrite: bool = False, progress: bool = True,
                     log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
                     estimate_maps: Optional[str] = None) -> Dict[str, Any]:
    """Evaluate ``model`` (a :class:`~panosamic.spec.ModelSpec`, or a mapping of its fields;
    its ``max_depth`` is replaced by T) on ``fold``'s test split of the processed dataset at
    ``root``; returns the metrics.json content.

    ``max_depth`` None derives T from the training split (:func:`split_max_depth`).
    ``runner`` where the samples are scored: :class:`~panosamic.runner.LocalRunner` (default,
    this process) or :class:`~panosamic.ray_engine.RayRunner`.
    ``estimate_maps`` ("auto", "demo", a Hub id; local runner): the depth and normals are
    estimated from each RGB image instead of read (the dataset's own maps are not used).
    """
    spec = ModelSpec.of(model)
    runner = LocalRunner() if runner is None else runner
    if estimate_maps and runner.name != "local":
        raise InputError("--estimate-maps runs with the local engine only for now: drop --engine ray")
    from tqdm.auto import tqdm

    layout = get_layout(dataset, root)
    test_areas = layout.split(fold, "test")
    facts = spec.info()
    modalities = tuple(facts["modalities"])
    samples = layout.samples(test_areas, modalities)
    if facts["num_classes"] != layout.dataset.num_classes:
        raise InputError(f"the checkpoint predicts {facts['num_classes']} classes ({facts['dataset']}), "
                         f"{layout.dataset_title} has {layout.dataset.num_classes}: evaluate it on its own dataset")
    missing_areas = [a for a in test_areas if a not in {s.area for s in samples}]
    if missing_areas:
        log(f"panosamic: warning: no folder for {', '.join(missing_areas[:6])}"
            f"{', ...' if len(missing_areas) > 6 else ''} of fold {fold}'s test split; evaluating the rest")
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a folder")
    t, t_source = _choose_max_depth(layout, fold, modalities, max_depth, out, progress)
    log(f"panosamic: T = {t:g} m ({t_source})")

    run = {"dataset": layout.name, "fold": fold, "root": str(layout.root.resolve()),
           "checkpoint": facts["checkpoint"], "config": facts["architecture"], "modalities": list(modalities),
           "max_depth": t}
    fields = csv_fields(layout.dataset.classes)
    csv_path = out / CSV_FILE
    rows, pending = _resume(out, run, fields, samples, overwrite, log)
    task = ScoreTask(layout.name, str(layout.root.resolve()), str((out / "labels").resolve()) if save_labels else None,
                     layout.black_void_for(modalities), _estimator(estimate_maps, spec, log))

    bar = tqdm(total=len(samples), initial=len(samples) - len(pending), desc=f"{layout.name} fold {fold}",
               unit="pano", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    t_run = time.perf_counter()
    with open(csv_path, "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        for row in runner.map(spec.with_max_depth(t), task, [ScoreTask.item(s) for s in pending], log):
            if row["status"] != "ok":
                bar.write(f"panosamic: error: {row['sample']}: {row['error']}", file=sys.stderr)
            writer.writerow(row)
            f.flush()
            rows.append(row)
            bar.update(1)
    bar.close()
    wall = time.perf_counter() - t_run

    order = {s.key: i for i, s in enumerate(samples)}
    rows.sort(key=lambda r: order[r["sample"]])
    _write_rows(csv_path, rows, fields)
    result: Dict[str, Any] = {"dataset": layout.name, "fold": fold, "split": "test", "areas": test_areas,
                              "checkpoint": facts["checkpoint"], "subfolder": spec.subfolder,
                              "architecture": facts["architecture"], "modalities": list(modalities),
                              "max_depth": t, "max_depth_source": t_source, "ignore_index": IGNORE_INDEX,
                              "engine": runner.name}
    result.update(summarize_rows(rows, layout.dataset.classes))
    result["num_failed"] = sum(1 for r in rows if r.get("status") != "ok")
    result["wall_seconds_this_run"] = round(wall, 3)
    # published numbers belong to the checkpoint's own dataset, not to a zero-shot one (ToF-360)
    own = facts["dataset"] == layout.name
    result["published"] = PUBLISHED.get(spec.subfolder or "") if own else None
    metrics_path = out / METRICS_FILE
    tmp = metrics_path.with_name(metrics_path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, metrics_path)
    return result


def _estimator(estimate_maps: Optional[str], spec: ModelSpec, log: Callable[[str], None]) -> Any:
    """The depth estimator `estimate_maps` names (loaded here, once), or None."""
    if not estimate_maps:
        return None
    from ..estimation.load import load_estimator

    estimator = load_estimator(estimate_maps, device=spec.device)
    log(f"panosamic: depth and normals estimated from the RGB images by {estimator.name}"
        + (f" ({estimator.note})" if getattr(estimator, "note", None) else ""))
    return estimator


# --- report ---------------------------------------------------------------------------------------


def _pct(v: Optional[float]) -> str:
    return "  -  " if v is None else f"{100 * v:5.1f}"


def format_report(result: Dict[str, Any]) -> str:
    """A short text report: the headline numbers, per-class IoU and the published numbers."""
    lines = [f"{result['dataset']} fold {result['fold']} ({', '.join(result['areas'][:4])}"
             f"{', ...' if len(result['areas']) > 4 else ''}): {result['num_samples']} samples, "
             f"T = {result['max_depth']:g} m" + (f", {result['num_failed']} FAILED" if result["num_failed"] else "")]
    lines.append(f"  mIoU {_pct(result['miou'])}   mAcc {_pct(result['macc'])}   "
                 f"pixel acc {_pct(result['pixel_accuracy'])}   (%)")
    lines.append(f"  sphere-weighted: mIoU {_pct(result['miou_weighted'])}   mAcc {_pct(result['macc_weighted'])}"
                 f"   pixel acc {_pct(result['pixel_accuracy_weighted'])}")
    if result.get("seam_consistency_pred") is not None:
        lines.append(f"  seam consistency: prediction {result['seam_consistency_pred']:.2f}, "
                     f"ground truth {result['seam_consistency_gt']:.2f} (1 = seam like any column)")
    lines.append("  IoU per class: " + ", ".join(f"{c} {_pct(v).strip()}" for c, v in result["per_class_iou"].items()))
    pub = result.get("published")
    sub = result.get("subfolder") or "this checkpoint"
    if pub:
        lines.append(f"  published ({sub}): " + ", ".join(f"{k} {100 * v:.1f}" for k, v in pub.items())
                     + "   ours: " + ", ".join(f"{k} {_pct(result.get(k)).strip()}" for k in pub))
    else:
        lines.append(f"  published numbers for {sub} on {result['dataset']}: none recorded in this project")
    return "\n".join(lines)
