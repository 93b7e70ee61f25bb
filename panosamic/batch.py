"""Batch work on files: one panorama file in, its label PNG, colour PNG and statistics out.

    predictor = Predictor.from_pretrained(...)
    job = FileJob(Path("room.png"), stem="room")
    row, message = predict_row(predictor, job, out=Path("results"), options=BatchOptions("demo"))

`segment_file` finds the maps the checkpoint needs (given, beside the panorama by name, or
estimated), segments the panorama and writes `<stem>_labels.png` (class indices),
`<stem>_colors.png` (palette colours) and `<stem>_stats.json` (per-class pixel and sphere
shares) only after the prediction succeeded, so a failure leaves nothing half-written.
`predict_row` turns that into one `summary.csv` row (a failure becomes an error row with the
message to print), and `SegmentTask` is the same for a runner (`panosamic.runner`,
`panosamic.ray_engine`): the command line's local loop and the Ray actors write the same files.
`expand_inputs` and `unique_stems` say which files of a list of files, folders and globs are
panoramas (companions and our own outputs are not) and what their outputs are named.
"""

from __future__ import annotations

import glob
import json
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import InputError, PanoSAMicError
from .exports import COLORS_PNG_SUFFIX, class_stats
from .inputs import check_panorama
from .io.files import DEPTH_EXTS, IMAGE_EXTS, find_companions, panorama_stem
from .io.readers import load_depth, load_image, load_normals
from .io.writers import save_depth_png, save_image, save_labels_png, write_csv

#: image -> (depth in metres at the image's (H, W), name of the estimator that made it)
DepthEstimate = Callable[[np.ndarray], Tuple[np.ndarray, str]]
#: The columns of summary.csv before the per-class sphere shares.
SUMMARY_FIELDS = ["input", "stem", "status", "error", "width", "height", "depth", "normals", "seconds",
                  "dominant_class"]


@dataclass(frozen=True)
class FileJob:
    """One panorama to segment: its file, the stem its outputs are named by, and its depth and
    normals files when given explicitly (None: found beside it by name)."""

    path: Path
    stem: str
    depth: Optional[Path] = None
    normals: Optional[Path] = None

    def to_item(self, index: int) -> Dict[str, Any]:
        """A JSON-able row for a runner (paths as text, "" = not given)."""
        return {"index": index, "path": str(self.path), "stem": self.stem, "depth": str(self.depth or ""),
                "normals": str(self.normals or "")}

    @classmethod
    def from_item(cls, item: Dict[str, Any]) -> "FileJob":
        return cls(Path(item["path"]), item["stem"], Path(item["depth"]) if item["depth"] else None,
                   Path(item["normals"]) if item["normals"] else None)


@dataclass(frozen=True)
class BatchOptions:
    """What every file of a batch shares: the checkpoint named in the statistics, the depth
    PNGs' metres per unit (None: 0.001, millimetres) and whether errors carry a traceback."""

    checkpoint: str
    subfolder: Optional[str] = None
    depth_scale: Optional[float] = None
    debug: bool = False


@dataclass(frozen=True)
class FileResult:
    """What `segment_file` made: per-class statistics, the label map's size in pixels, seconds
    taken, and which depth and normals were used (a path, "estimated (...)", "derived from the
    depth", or None when the checkpoint reads none)."""

    stats: List[Dict[str, Any]]
    width: int
    height: int
    seconds: float
    depth: Optional[str]
    normals: Optional[str]


# File-name suffixes of companions and of our own outputs: never panoramas themselves.
COMPANION_SUFFIXES = ("_depth", "_normals", "_labels", "_colors", "_color", "_colour", "_semantic", "_overlay")
_GLOB_CHARS = "*?["


# --- inputs ----------------------------------------------------------------------------------


def _is_companion(path: Path) -> bool:
    return path.stem.lower().endswith(COMPANION_SUFFIXES)


def _images_in(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not _is_companion(p))


def expand_inputs(specs: Sequence[str]) -> Tuple[List[Path], List[str], int]:
    """Panorama paths from files, folders and glob patterns, in the order given (folders and
    globs sorted), without companions (`_depth`, `_normals`, `_labels`, ...) or duplicates.

    Returns (paths, problems, skipped): `problems` are messages for specs that name nothing
    (a missing file, an empty folder or glob); explicit files are kept even if they are not
    images, so that they are reported per file.
    """
    paths: List[Path] = []
    problems: List[str] = []
    skipped = 0
    seen = set()

    def add(p: Path) -> None:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            paths.append(p)

    for spec in specs:
        p = Path(spec).expanduser()
        if p.is_dir():
            found = _images_in(p)
            if not found:
                problems.append(f"{spec}: no panorama images ({', '.join(IMAGE_EXTS)}) in this folder")
            for f in found:
                add(f)
        elif p.is_file():
            if _is_companion(p):
                skipped += 1
                continue
            add(p)
        elif any(c in spec for c in _GLOB_CHARS):
            matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(spec), recursive=True))
            found = []
            for m in matches:
                if m.is_dir():
                    found.extend(_images_in(m))
                elif m.is_file() and m.suffix.lower() in IMAGE_EXTS:
                    if _is_companion(m):
                        skipped += 1
                    else:
                        found.append(m)
            if not found:
                problems.append(f"{spec}: no panorama images match this pattern")
            for f in found:
                add(f)
        else:
            problems.append(f"{spec}: no such file or folder")
    return paths, problems, skipped


def unique_stems(paths: Sequence[Path]) -> List[str]:
    """One output stem per input; equal stems from different folders get `-2`, `-3`, ..."""
    stems: List[str] = []
    used: Dict[str, int] = {}
    for p in paths:
        base = panorama_stem(p)
        n = used.get(base.lower(), 0) + 1
        used[base.lower()] = n
        stems.append(base if n == 1 else f"{base}-{n}")
    return stems


def labels_array(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Class indices as uint8 (K <= 255) or uint16."""
    return np.asarray(labels).astype(np.uint8 if num_classes <= 255 else np.uint16)


def output_paths(out: Path, stem: str) -> Dict[str, Path]:
    """The three files `segment_file` writes for `stem` into `out`."""
    return {"labels": out / f"{stem}_labels.png", "color": out / f"{stem}{COLORS_PNG_SUFFIX}",
            "stats": out / f"{stem}_stats.json"}


def expected_companion_names(path: Path, kind: str) -> str:
    """The file names a `kind` ("depth", "normals") map of `path` is found by, for messages."""
    exts = DEPTH_EXTS if kind == "depth" else (".png",)
    return f"{panorama_stem(path)}_{kind}" + "/".join(exts)


def error_text(e: BaseException) -> str:
    """An error's message (its class name when it has none)."""
    return str(e).strip() or type(e).__name__


def _maps(image: np.ndarray, job: FileJob, needs: Sequence[str], depth_scale: Optional[float],
          estimate: Optional[DepthEstimate]) -> Tuple[Dict[str, np.ndarray], Dict[str, Optional[str]]]:
    """The depth/normals arrays the checkpoint needs ({kind: array}) and where each came from."""
    companions = None
    inputs: Dict[str, np.ndarray] = {}
    used: Dict[str, Optional[str]] = {"depth": None, "normals": None}
    for kind, src in (("depth", job.depth), ("normals", job.normals)):
        if kind not in needs:
            continue
        if src is None:
            companions = companions if companions is not None else find_companions(job.path)
            src = companions.get(kind)
        if src is None and estimate is not None and kind == "depth":
            inputs["depth"], name = estimate(image)
            used["depth"] = f"estimated ({name})"
            continue
        if src is None and kind == "normals" and "depth" in inputs:  # the Predictor derives them from the depth
            used["normals"] = "derived from the depth"
            continue
        if src is None:
            raise InputError(f"this checkpoint needs {kind} ({'+'.join(needs)}) but no {kind} was found for it: "
                             f"put {expected_companion_names(job.path, kind)} next to it, pass --{kind} PATH "
                             "(one per panorama, in order), or add --estimate-maps to estimate it from the photo")
        if not Path(src).is_file():
            raise InputError(f"{kind} file {src} does not exist")
        inputs[kind] = load_depth(Path(src), depth_scale) if kind == "depth" else load_normals(Path(src))
        used[kind] = str(src)
    return inputs, used


def _write_stats(path: Path, doc: Dict[str, Any]) -> None:
    """JSON through a temporary file, so an interrupted run never leaves half of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def segment_file(predictor, job: FileJob, *, out: Path, options: BatchOptions,
                 estimate: Optional[DepthEstimate] = None, progress=None) -> FileResult:
    """Segments `job.path` and writes its three files into `out` (plus
    `<stem>_depth_estimated.png` when the depth was estimated); raises `PanoSAMicError` (or
    OSError) on a bad input, before anything is written.

    estimate: makes a depth map from the image when none is found (`--estimate-maps`).
    progress: `Predictor.set_panorama`'s `on_progress` (ViT blocks done, time left).
    """
    t0 = time.perf_counter()
    needs = predictor.required_modalities
    if job.path.suffix.lower() not in IMAGE_EXTS:
        raise InputError(f"not an image file (expected {', '.join(IMAGE_EXTS)}); "
                         "give panorama images (RGB, 2:1 equirectangular)")
    # The image alone first, so that "not 2:1" comes before "no depth found"; the Predictor
    # checks the maps against the checkpoint with the same function.
    image = check_panorama(load_image(job.path)).image
    inputs, used = _maps(image, job, needs, options.depth_scale, estimate)
    predictor.set_panorama(image, depth=inputs.get("depth"), normals=inputs.get("normals"), on_progress=progress)
    labels = predictor.labels
    ds = predictor.dataset
    stats = class_stats(labels, ds.classes, ds.palette)
    paths = output_paths(out, job.stem)
    h, w = labels.shape
    save_labels_png(paths["labels"], labels_array(labels, ds.num_classes))
    save_image(paths["color"], ds.colorize(labels))
    if str(used["depth"] or "").startswith("estimated"):
        save_depth_png(out / f"{job.stem}_depth_estimated.png", inputs["depth"])
    seconds = time.perf_counter() - t0
    _write_stats(paths["stats"], {
        "input": str(job.path), "depth": used["depth"], "normals": used["normals"],
        "width": int(w), "height": int(h), "checkpoint": options.checkpoint, "subfolder": options.subfolder,
        "modalities": list(needs), "dataset": ds.name, "num_classes": ds.num_classes,
        "labels_png": paths["labels"].name, "color_png": paths["color"].name,
        "timings_s": {key: round(v, 4) for key, v in predictor.timings.items()}, "seconds": round(seconds, 4),
        "classes": stats,
    })
    return FileResult(stats, int(w), int(h), seconds, used["depth"], used["normals"])


def predict_row(predictor, job: FileJob, *, out: Path, options: BatchOptions,
                estimate: Optional[DepthEstimate] = None, progress=None) -> Tuple[Dict[str, Any], Optional[str]]:
    """`segment_file` as (summary.csv row, message to print or None): a failure becomes an
    error row and a one-line message (a bug: the traceback, asking for a report), so a batch
    goes on."""
    row: Dict[str, Any] = {"input": str(job.path), "stem": job.stem}
    try:
        result = segment_file(predictor, job, out=out, options=options, estimate=estimate, progress=progress)
    except (PanoSAMicError, OSError) as e:
        message = f"panosamic: error: {job.path}: {error_text(e)}"
        if options.debug:
            message = traceback.format_exc() + message
        row.update(status="error", error=error_text(e).replace("\n", " "))
        return row, message
    except Exception as e:  # noqa: BLE001  a bug: show where, keep the batch going
        row.update(status="error", error=f"internal error: {type(e).__name__}: {e}".replace("\n", " "))
        return row, f"panosamic: internal error on {job.path} (please report this):\n{traceback.format_exc()}"
    top = max(result.stats, key=lambda s: s["sphere_share"])
    row.update(status="ok", error="", width=result.width, height=result.height,
               depth=result.depth or "", normals=result.normals or "",
               seconds=round(result.seconds, 3), dominant_class=top["name"],
               **{f"sphere_share_{s['name']}": round(s["sphere_share"], 6) for s in result.stats})
    return row, None


def write_summary(path: Path, rows: List[Dict[str, Any]], classes: Sequence[str]) -> None:
    """summary.csv: one row per input (see `predict_row`), then the sphere share per class."""
    write_csv(path, rows, SUMMARY_FIELDS + [f"sphere_share_{c}" for c in classes])


@dataclass(frozen=True)
class SegmentTask:
    """`predict_row` for a runner: item (`FileJob.to_item`) -> {"index", "row", "message"}.
    Picklable, so Ray actors run it on the predictor they hold."""

    out: str
    options: BatchOptions

    def __call__(self, predictor, item: Dict[str, Any]) -> Dict[str, Any]:
        row, message = predict_row(predictor, FileJob.from_item(item), out=Path(self.out), options=self.options)
        return {"index": int(item["index"]), "row": row, "message": message}
