"""Command line: `python -m panosamic {predict,evaluate,info,list-checkpoints,bench}`.

    python -m panosamic predict rooms/ --checkpoint dfki-av/PanoSAMic \
        --subfolder stanford2d3ds-vith-rgbdn-fold1 --out results/
    python -m panosamic evaluate --dataset stanford2d3ds --root data/s2d3ds --fold 1 \
        --checkpoint dfki-av/PanoSAMic --subfolder stanford2d3ds-vith-rgbdn-fold1 --out eval/
    python -m panosamic info --checkpoint path/to/model_dir
    python -m panosamic list-checkpoints
    python -m panosamic bench --preset vit_b --modalities image

`predict` loads the model once and, for every panorama, writes `<stem>_labels.png` (class
indices), `<stem>_colors.png` (palette colours) and `<stem>_stats.json` (per-class pixel and
sphere shares) into --out, plus one `summary.csv` over all inputs. A panorama that fails
(unreadable, not 2:1, a modality the checkpoint needs is missing) is reported on stderr and
the batch goes on. `--engine ray` spreads `predict` and `evaluate` over Ray actors
(panosamic.ray_engine) and writes the same files. `evaluate` is panosamic.evaluation.
Exit codes: 0 all succeeded, 1 some failed (or a dataset folder in the wrong layout),
2 usage error (also: a fold the dataset lacks, Ray not installed).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import InputError, PanoSAMicError
from .inputs import check_panorama
from .precision import PRECISIONS
from .io import (DEPTH_EXTS, IMAGE_EXTS, find_companions, load_depth, load_image, load_normals, panorama_stem,
                 save_image, save_labels_png, write_csv)
from .exports import COLORS_PNG_SUFFIX, class_stats

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

IMAGE_EXTENSIONS = IMAGE_EXTS
# File-name suffixes of companions and of our own outputs: never panoramas themselves.
COMPANION_SUFFIXES = ("_depth", "_normals", "_labels", "_colors", "_color", "_colour", "_semantic", "_overlay")
_GLOB_CHARS = "*?["


class UsageError(Exception):
    """Wrong arguments: printed as `panosamic: error: ...`, exit code 2."""


# --- inputs ----------------------------------------------------------------------------------


def _is_companion(path: Path) -> bool:
    return path.stem.lower().endswith(COMPANION_SUFFIXES)


def _images_in(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not _is_companion(p))


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
                problems.append(f"{spec}: no panorama images ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
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
                elif m.is_file() and m.suffix.lower() in IMAGE_EXTENSIONS:
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


def output_stem(path: Path) -> str:
    """`room_rgb.png` (or `room_image.png`) -> `room`, `room.jpg` -> `room` (outputs sit beside
    `room_depth.png`): `panosamic.io.panorama_stem`."""
    return panorama_stem(path)


def _unique_stems(paths: Sequence[Path]) -> List[str]:
    """One output stem per input; equal stems from different folders get `-2`, `-3`, ..."""
    stems: List[str] = []
    used: Dict[str, int] = {}
    for p in paths:
        base = output_stem(p)
        n = used.get(base.lower(), 0) + 1
        used[base.lower()] = n
        stems.append(base if n == 1 else f"{base}-{n}")
    return stems


def _expected_companion_names(path: Path, kind: str) -> str:
    base = output_stem(path)
    exts = DEPTH_EXTS if kind == "depth" else (".png",)
    return f"{base}_{kind}" + "/".join(exts)


# --- outputs ---------------------------------------------------------------------------------


def labels_array(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Class indices as uint8 (K <= 255) or uint16."""
    return np.asarray(labels).astype(np.uint8 if num_classes <= 255 else np.uint16)


def output_paths(out: Path, stem: str) -> Dict[str, Path]:
    return {"labels": out / f"{stem}_labels.png", "color": out / f"{stem}{COLORS_PNG_SUFFIX}",
            "stats": out / f"{stem}_stats.json"}


# --- predict ---------------------------------------------------------------------------------


def _say(message: str, bar=None) -> None:
    if bar is not None:
        bar.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr)


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text


def _check_device(name: Optional[str]) -> Optional[str]:
    """None for auto; else the name, if torch knows it and it is available here."""
    if name in (None, "auto"):
        return None
    from .device import resolve_device

    try:
        resolve_device(name)
    except InputError as e:
        raise UsageError(f"--{e}") from None
    return name


def _check_engine(args) -> None:
    """--engine ray: Ray must be importable (else a usage error that says how to install it)."""
    if getattr(args, "engine", "local") != "ray":
        for flag in ("ray_address", "ray_actors", "num_gpus_per_actor"):
            if getattr(args, flag, None) is not None:
                raise UsageError(f"--{flag.replace('_', '-')} needs --engine ray")
        return
    from .ray_engine import RayUnavailableError, require_ray

    try:
        require_ray()
    except RayUnavailableError as e:
        raise UsageError(str(e)) from None


def _load_predictor(args):
    from .weights import from_pretrained

    device = None if args.device in (None, "auto") else args.device  # checked by _check_device before loading
    return from_pretrained(args.checkpoint, subfolder=args.subfolder, sam=args.sam, config=args.config,
                           device=device, dtype=args.dtype, max_depth=args.max_depth)


def _process_one(predictor, path: Path, depth_path: Optional[Path], normals_path: Optional[Path],
                 args, stem: str, out: Path, progress=None) -> Dict[str, Any]:
    """Segments one panorama and writes its three files; raises on failure (nothing half-written
    is left behind: files are written only after the prediction succeeded)."""
    t0 = time.perf_counter()
    needs = predictor.required_modalities
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise InputError(f"not an image file (expected {', '.join(IMAGE_EXTENSIONS)}); "
                         "give panorama images (RGB, 2:1 equirectangular)")
    # The image alone first, so that "not 2:1" comes before "no depth found"; the Predictor
    # checks the maps against the checkpoint with the same function.
    image = check_panorama(load_image(path)).image
    companions = None
    inputs: Dict[str, Any] = {}
    used: Dict[str, Optional[str]] = {"depth": None, "normals": None}
    estimator_name = getattr(args, "estimate_maps", None)
    for kind, given in (("depth", depth_path), ("normals", normals_path)):
        if kind not in needs:
            continue
        src = given
        if src is None:
            companions = companions if companions is not None else find_companions(path)
            src = companions.get(kind)
        if src is None and estimator_name and kind == "depth":
            inputs["depth"], used["depth"] = _estimated_depth(image, args), f"estimated ({args.estimator.name})"
            continue
        if src is None and kind == "normals" and "depth" in inputs:  # the Predictor derives them from the depth
            used["normals"] = "derived from the depth"
            continue
        if src is None:
            flag = f"--{kind}"
            raise InputError(f"this checkpoint needs {kind} ({'+'.join(needs)}) but no {kind} was found for it: "
                             f"put {_expected_companion_names(path, kind)} next to it, pass {flag} PATH "
                             "(one per panorama, in order), or add --estimate-maps to estimate it from the photo")
        if not Path(src).is_file():
            raise InputError(f"{kind} file {src} does not exist")
        inputs[kind] = load_depth(Path(src), args.depth_scale) if kind == "depth" else load_normals(Path(src))
        used[kind] = str(src)
    predictor.set_panorama(image, depth=inputs.get("depth"), normals=inputs.get("normals"), on_progress=progress)
    labels = predictor.labels
    ds = predictor.dataset
    k = ds.num_classes
    stats = class_stats(labels, ds.classes, ds.palette)
    paths = output_paths(out, stem)
    h, w = labels.shape
    save_labels_png(paths["labels"], labels_array(labels, k))
    save_image(paths["color"], ds.colorize(labels))
    if str(used["depth"] or "").startswith("estimated"):
        from .io import save_depth_png

        save_depth_png(out / f"{stem}_depth_estimated.png", inputs["depth"])
    seconds = time.perf_counter() - t0
    doc = {
        "input": str(path), "depth": used["depth"], "normals": used["normals"],
        "width": int(w), "height": int(h), "checkpoint": args.checkpoint, "subfolder": args.subfolder,
        "modalities": list(needs), "dataset": ds.name, "num_classes": k,
        "labels_png": paths["labels"].name, "color_png": paths["color"].name,
        "timings_s": {key: round(v, 4) for key, v in predictor.timings.items()}, "seconds": round(seconds, 4),
        "classes": stats,
    }
    tmp = paths["stats"].with_name(paths["stats"].name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, paths["stats"])
    return {"stats": stats, "width": w, "height": h, "seconds": seconds, **used}


def _estimated_depth(image: np.ndarray, args) -> np.ndarray:
    """Depth (metres, the image's size) estimated from the panorama with `--estimate-maps`'s
    estimator, loaded once per command (`panosamic.estimation`)."""
    from .estimation import estimate_depth, load_estimator

    if getattr(args, "estimator", None) is None:
        args.estimator = load_estimator(args.estimate_maps, device=args.device)
        if getattr(args.estimator, "note", None):
            print(f"note: {args.estimator.note}", file=sys.stderr)
    return estimate_depth(image, args.estimator, size=image.shape[:2])


class _BlockBar:
    """A second tqdm line per panorama: ViT blocks done of all, the stage and the time left
    (FLOP-weighted, from `Predictor.set_panorama(on_progress=...)`)."""

    def __init__(self, tqdm, disable: bool) -> None:
        self.tqdm = tqdm
        self.disable = disable
        self.bar = None
        self.desc = ""

    def __call__(self, event) -> None:
        if self.bar is None:
            self.bar = self.tqdm(total=event.total, desc=f"  {self.desc}", unit="block", file=sys.stderr,
                                 leave=False, position=1, disable=self.disable, dynamic_ncols=True,
                                 bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} blocks [{elapsed}{postfix}]")
        self.bar.n = event.done
        eta = "" if event.eta_s is None else f", ~{event.eta_s:.0f} s left"
        self.bar.set_postfix_str(f"{event.stage}{eta}", refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _pair_flags(flag: str, values: Optional[List[str]], n: int) -> List[Optional[Path]]:
    if not values:
        return [None] * n
    if len(values) != n:
        raise UsageError(f"{flag} was given {len(values)} times for {n} panoramas: give one per panorama, in "
                         "the same order, or none and name the files by convention (X_depth.png, X_normals.png)")
    return [Path(v).expanduser() for v in values]


def cmd_predict(args) -> int:
    from tqdm.auto import tqdm

    paths, problems, skipped = expand_inputs(args.panoramas)
    if not paths:
        raise UsageError("no panoramas to segment: " + ("; ".join(problems) if problems else "none given"))
    depth_flags = _pair_flags("--depth", args.depth, len(paths))
    normals_flags = _pair_flags("--normals", args.normals, len(paths))
    if args.max_depth is not None and not (args.max_depth > 0):
        raise UsageError("--max-depth must be a positive number of metres")
    if args.depth_scale is not None and not (args.depth_scale > 0):
        raise UsageError("--depth-scale must be positive (metres per PNG unit, 0.001 for millimetres)")

    _check_device(args.device)
    _check_engine(args)
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    stems = _unique_stems(paths)
    summary_path = out / "summary.csv"
    if not args.overwrite:
        existing = [p for s in stems for p in output_paths(out, s).values() if p.exists()]
        if summary_path.exists():
            existing.append(summary_path)
        if existing:
            names = ", ".join(p.name for p in existing[:5]) + (", ..." if len(existing) > 5 else "")
            raise UsageError(f"{out} already holds results ({names}): pass --overwrite or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    if skipped:
        _say(f"panosamic: skipped {skipped} companion file(s) (_depth, _normals, _labels, ...)")
    for message in problems:
        _say(f"panosamic: warning: {message}")
    if args.engine == "ray":
        return _predict_on_ray(args, paths, stems, depth_flags, normals_flags, out, summary_path)

    t_load = time.perf_counter()
    try:
        predictor = _load_predictor(args)
    except PanoSAMicError as e:
        if args.debug:
            traceback.print_exc()
        _say(f"panosamic: cannot load the model: {e}")
        return EXIT_FAILED
    from .config import describe

    from .allocator import describe_allocator

    _say(f"panosamic: {describe(predictor.model.config)} on {predictor.device}, {predictor.precision} encoder "
         f"(loaded in {time.perf_counter() - t_load:.1f} s; allocator: {describe_allocator()}); "
         f"{len(paths)} panorama(s) -> {out}")
    unused = [k for k, v in (("depth", args.depth), ("normals", args.normals))
              if v and k not in predictor.required_modalities]
    if unused:
        _say(f"panosamic: warning: this checkpoint uses {'+'.join(predictor.required_modalities)}; "
             f"the --{' and --'.join(unused)} files are ignored")

    ds = predictor.dataset
    rows: List[Dict[str, Any]] = []
    bar = tqdm(total=len(paths), desc="panoramas", unit="pano", file=sys.stderr,
               disable=True if args.no_progress else None, dynamic_ncols=True)

    blocks = _BlockBar(tqdm, disable=bar.disable)

    for path, stem, dflag, nflag in zip(paths, stems, depth_flags, normals_flags):
        blocks.desc = stem
        try:
            row, message = _predict_row(predictor, path, stem, dflag, nflag, args, out, progress=blocks)
        except KeyboardInterrupt:
            bar.close()
            _say("panosamic: interrupted")
            _write_summary(summary_path, rows, ds.classes)
            return 130
        finally:
            blocks.close()
        if message:
            _say(message, bar)
        rows.append(row)
        bar.update(1)
    bar.close()
    return _finish_predict(summary_path, rows, ds.classes)


def _finish_predict(summary_path: Path, rows: List[Dict[str, Any]], classes: Sequence[str]) -> int:
    _write_summary(summary_path, rows, classes)
    failures = sum(1 for r in rows if r.get("status") != "ok")
    ok = len(rows) - failures
    _say(f"panosamic: {ok} of {len(rows)} panorama(s) segmented"
         + (f", {failures} failed (see above)" if failures else "") + f"; summary: {summary_path}")
    return EXIT_FAILED if failures else EXIT_OK


def _predict_row(predictor, path: Path, stem: str, dflag: Optional[Path], nflag: Optional[Path], args,
                 out: Path, progress=None) -> Tuple[Dict[str, Any], Optional[str]]:
    """One panorama of `predict`, for the local and the Ray engine alike: writes its files and
    returns (summary.csv row, message to print or None). A failure becomes an error row."""
    row: Dict[str, Any] = {"input": str(path), "stem": stem}
    try:
        result = _process_one(predictor, path, dflag, nflag, args, stem, out, progress=progress)
    except (PanoSAMicError, OSError) as e:
        message = f"panosamic: error: {path}: {_first_line(e)}"
        if getattr(args, "debug", False):
            message = traceback.format_exc() + message
        row.update(status="error", error=_first_line(e).replace("\n", " "))
        return row, message
    except Exception as e:  # noqa: BLE001  a bug: show where, keep the batch going
        row.update(status="error", error=f"internal error: {type(e).__name__}: {e}".replace("\n", " "))
        return row, f"panosamic: internal error on {path} (please report this):\n{traceback.format_exc()}"
    stats = result["stats"]
    top = max(stats, key=lambda s: s["sphere_share"])
    row.update(status="ok", error="", width=result["width"], height=result["height"],
               depth=result["depth"] or "", normals=result["normals"] or "",
               seconds=round(result["seconds"], 3), dominant_class=top["name"],
               **{f"sphere_share_{s['name']}": round(s["sphere_share"], 6) for s in stats})
    return row, None


def _predict_on_ray(args, paths, stems, depth_flags, normals_flags, out: Path, summary_path: Path) -> int:
    """`predict --engine ray`: the same files and summary as the local engine, computed by Ray actors."""
    from . import ray_engine

    ray_engine.require_ray()
    info = checkpoint_info(args.checkpoint, args.subfolder, args.sam, args.config)  # fail early, before Ray
    _say(f"panosamic: {info['architecture']}; {len(paths)} panorama(s) -> {out} on Ray")
    jobs = [{"path": p, "stem": s, "depth": d, "normals": n}
            for p, s, d, n in zip(paths, stems, depth_flags, normals_flags)]
    model = {"checkpoint": args.checkpoint, "subfolder": args.subfolder, "sam": args.sam, "config": args.config,
             "device": args.device, "dtype": args.dtype}
    options = {"depth_scale": args.depth_scale, "checkpoint": args.checkpoint, "subfolder": args.subfolder,
               "debug": args.debug}
    from tqdm.auto import tqdm

    found: Dict[int, Dict[str, Any]] = {}
    bar = tqdm(total=len(jobs), desc="panoramas", unit="pano", file=sys.stderr,
               disable=True if args.no_progress else None, dynamic_ncols=True)
    try:
        for index, row, message in ray_engine.predict_on_ray(
                jobs, model, args.max_depth, options, out, address=args.ray_address, num_actors=args.ray_actors,
                num_gpus_per_actor=args.num_gpus_per_actor, num_cpus_per_actor=args.num_cpus_per_actor,
                log=lambda m: _say(m, bar)):
            if message:
                _say(message, bar)
            found[index] = row
            bar.update(1)
    except KeyboardInterrupt:
        bar.close()
        _say("panosamic: interrupted")
        _write_summary(summary_path, [found[i] for i in sorted(found)], info["classes"])
        return 130
    bar.close()
    return _finish_predict(summary_path, [found[i] for i in sorted(found)], info["classes"])


def _write_summary(path: Path, rows: List[Dict[str, Any]], classes: Sequence[str]) -> None:
    fields = ["input", "stem", "status", "error", "width", "height", "depth", "normals", "seconds",
              "dominant_class"] + [f"sphere_share_{c}" for c in classes]
    write_csv(path, rows, fields)


# --- evaluate ------------------------------------------------------------------------------------


def cmd_evaluate(args) -> int:
    """Thin wrapper over :func:`panosamic.evaluation.evaluate_dataset`."""
    from .evaluation import FoldError, evaluate_dataset, format_report

    _check_device(args.device)
    _check_engine(args)
    if args.max_depth is not None and not (args.max_depth > 0):
        raise UsageError("--max-depth must be a positive number of metres")
    model = {"checkpoint": args.checkpoint, "subfolder": args.subfolder, "sam": args.sam, "config": args.config,
             "device": args.device if args.device != "auto" else None, "dtype": args.dtype}
    ray_options = {"address": args.ray_address, "num_actors": args.ray_actors,
                   "num_gpus_per_actor": args.num_gpus_per_actor, "num_cpus_per_actor": args.num_cpus_per_actor}
    try:
        result = evaluate_dataset(args.dataset, args.root, args.fold, model, args.out, max_depth=args.max_depth,
                                  save_labels=args.save_labels, engine=args.engine, ray_options=ray_options,
                                  overwrite=args.overwrite, progress=not args.no_progress,
                                  estimate_maps=args.estimate_maps)
    except FoldError as e:
        raise UsageError(str(e)) from None
    except KeyboardInterrupt:
        _say("panosamic: interrupted; run the same command again to resume")
        return 130
    print(format_report(result))
    _say(f"panosamic: wrote {Path(args.out) / 'metrics.json'} and per_sample.csv")
    return EXIT_FAILED if result["num_failed"] else EXIT_OK


# --- info / list-checkpoints ---------------------------------------------------------------------


def checkpoint_info(checkpoint: str, subfolder: Optional[str] = None, sam: Optional[str] = None,
                    config: Optional[str] = None) -> Dict[str, Any]:
    """What a checkpoint is, without building the model: paths, architecture, classes, sizes."""
    from . import weights as W
    from .config import describe, infer_config, resolve_config
    from .datasets import dataset_for_num_classes

    ckpt = W.resolve_panosamic_checkpoint(checkpoint, subfolder=subfolder)
    companions = W.find_companions(ckpt)
    sam_path = Path(sam).expanduser() if sam else companions["sam"]
    if sam_path is not None and not Path(sam_path).is_file():
        sam_path = None  # a preset name or URL: not read here
    shapes = W.read_shapes(ckpt)
    if config is not None:
        cfg, source = resolve_config(config), str(config)
    elif companions["config"] is not None:
        cfg, source = resolve_config(companions["config"]), str(companions["config"])
    else:
        sam_shapes = W.read_shapes(sam_path) if sam_path is not None else None
        cfg, source = infer_config(shapes, sam_shapes), "tensor shapes"
    ds = dataset_for_num_classes(cfg["num_classes"])
    sam_params = None
    if sam_path is not None:
        sam_params = sum(int(np.prod(s)) for s in W.read_shapes(sam_path).values())
    return {
        "checkpoint": str(ckpt), "sam": str(sam_path) if sam_path else (sam or cfg.get("vit_model")),
        "config_source": source, "architecture": describe(cfg), "modalities": cfg["modalities"],
        "num_classes": cfg["num_classes"], "dual_view": cfg["dual_view_fusion"],
        "erp_size": [cfg["image_size"], cfg["image_size"] // 2], "dataset": ds.name, "classes": list(ds.classes),
        "panosamic_params_M": round(sum(int(np.prod(s)) for s in shapes.values()) / 1e6, 3),
        "sam_params_M": round(sam_params / 1e6, 3) if sam_params is not None else None,
        "config": cfg,
    }


def cmd_info(args) -> int:
    info = checkpoint_info(args.checkpoint, args.subfolder, args.sam, args.config)
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    w, h = info["erp_size"]
    print(f"checkpoint:   {info['checkpoint']}")
    print(f"SAM weights:  {info['sam']}")
    print(f"architecture: {info['architecture']}  (from {info['config_source']})")
    print(f"inputs:       {', '.join(info['modalities'])}; panoramas of any 2:1 size, resized to {w}x{h}")
    print(f"classes:      {info['num_classes']} ({info['dataset']}): {', '.join(info['classes'])}")
    params = f"{info['panosamic_params_M']} M PanoSAMic"
    if info["sam_params_M"] is not None:
        params += f" + {info['sam_params_M']} M SAM"
    print(f"parameters:   {params}")
    return EXIT_OK


def cmd_list_checkpoints(args) -> int:
    from . import weights as W

    if args.folder:
        root = Path(args.folder).expanduser()
        if not root.is_dir():
            raise UsageError(f"{root} is not a folder")
        found = ([""] if (root / W.PANOSAMIC_FILENAME).is_file() else []) + W.local_subfolders(root)
        if not found:
            print(f"no {W.PANOSAMIC_FILENAME} in {root} or its subfolders", file=sys.stderr)
            return EXIT_FAILED
        for sub in found:
            try:
                desc = checkpoint_info(str(root), sub or None)["architecture"]
            except PanoSAMicError as e:
                desc = f"(unreadable: {_first_line(e).splitlines()[0]})"
            print(f"{sub or '.'}\t{desc}")
        return EXIT_OK
    if args.online:
        subs = W.list_subfolders(args.repo)
    else:
        subs = sorted(set(W.cached_subfolders(args.repo))
                      | (set(W.RELEASED_SUBFOLDERS) if args.repo == W.HUB_REPO_ID else set()))
    cached = set(W.cached_subfolders(args.repo))
    if not subs:
        print(f"no checkpoints known for {args.repo} (try --online)", file=sys.stderr)
        return EXIT_FAILED
    print(f"# {args.repo}  (use: --checkpoint {args.repo} --subfolder NAME)")
    for sub in subs:
        mods = W.RELEASED_SUBFOLDERS.get(sub)
        note = "+".join(mods) if mods else ""
        print(f"{sub}\t{note}\t{'cached' if sub in cached else ''}".rstrip())
    return EXIT_OK


# --- argument parsing ----------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's usage errors: exit 2 with the usage line
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _add_model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--checkpoint", required=required, metavar="CKPT",
                   help="PanoSAMic weights: a Hub repo id (dfki-av/PanoSAMic, with --subfolder), a "
                        "model.safetensors file, or a folder holding one (+ optional config.json, sam.pth)")
    p.add_argument("--subfolder", metavar="S", help="subfolder of the repo/folder, e.g. stanford2d3ds-vith-rgb-fold1")
    p.add_argument("--sam", metavar="SAM", help="SAM weights: path, URL or vit_b/vit_l/vit_h "
                                                "(default: sam.pth beside the checkpoint, else downloaded)")
    p.add_argument("--config", metavar="CFG", help="architecture: config.json or preset "
                                                   "(default: config.json beside the checkpoint, else inferred)")


def _add_run_args(p: argparse.ArgumentParser, overwrite: str) -> None:
    """The options `predict` and `evaluate` share: device, precision, output and engine."""
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps")
    p.add_argument("--dtype", default=None, choices=PRECISIONS,
                   help="encoder precision (panosamic.precision): default auto, int8 for vit_b/l/h on an x86 "
                        "CPU, else float32; float32, bfloat16, float16 (CUDA only) or int8 (CPU only)")
    p.add_argument("--overwrite", action="store_true", help=overwrite)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks of all errors")
    _add_engine_args(p)


def _add_engine_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine", "where the model runs: this process, or actors on a Ray cluster")
    g.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local (default) or ray: Ray Data actors, one model each (needs pip install 'ray[data]')")
    g.add_argument("--ray-address", metavar="ADDR", help="an existing Ray cluster (auto, ray://head:10001); "
                                                          "default: start Ray on this machine")
    g.add_argument("--ray-actors", type=int, metavar="N",
                   help="number of model actors (default: one per GPU, else one per --num-cpus-per-actor CPUs)")
    g.add_argument("--num-gpus-per-actor", type=float, metavar="G",
                   help="GPUs per actor (default 1 when the cluster has GPUs, else 0; 0.5 puts two on a GPU)")
    g.add_argument("--num-cpus-per-actor", type=float, default=1, metavar="C",
                   help="CPUs per actor (default 1; also its torch threads on CPU actors)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m panosamic",
                     description="PanoSAMic: semantic segmentation of 360° equirectangular panoramas.",
                     epilog="Exit codes: 0 success, 1 some inputs failed, 2 usage error.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"panosamic {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("predict", help="segment panoramas into label/colour PNGs and class statistics",
                       description="Segment panoramas; writes <stem>_labels.png, <stem>_colors.png, "
                                   "<stem>_stats.json per input and summary.csv into --out.")
    p.add_argument("panoramas", nargs="+", metavar="PANORAMA",
                   help="image files, folders or glob patterns (companions X_depth.*, X_normals.*, X_labels.* "
                        "are skipped)")
    _add_model_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    p.add_argument("--depth", nargs="+", action="extend", metavar="PATH",
                   help="depth maps, one per panorama in order (default: X_depth.png|npy|exr beside X.png)")
    p.add_argument("--normals", nargs="+", action="extend", metavar="PATH",
                   help="normal maps, one per panorama in order (default: X_normals.png beside X.png)")
    p.add_argument("--depth-scale", type=float, default=None, metavar="S",
                   help="metres per unit of depth PNGs (default 0.001: 16-bit millimetres; .npy/.exr are metres)")
    p.add_argument("--max-depth", type=float, default=10.0, metavar="M",
                   help="depth in metres that maps to black in the depth encoding (default 10)")
    p.add_argument("--estimate-maps", nargs="?", const="auto", default=None, metavar="ESTIMATOR",
                   help="estimate depth (and so normals) from the photo where a checkpoint needs them and none "
                        "is found: auto (Depth Anything V2 Metric Indoor Small, else the offline demo; the "
                        "default when the flag is given alone), demo, or a Hub id; writes <stem>_depth_estimated.png")
    _add_run_args(p, overwrite="replace existing results in --out")
    p.set_defaults(func=cmd_predict)

    from .evaluation.layouts import LAYOUTS

    p = sub.add_parser("evaluate", help="score a checkpoint on a dataset's held-out fold (mIoU, mAcc, ...)",
                       description="Evaluate on the test split of a fold of a dataset in the PanoSAMic authors' "
                                   "processed layout; writes metrics.json, per_sample.csv (and labels/ with "
                                   "--save-labels) into --out. Rerunning the same command resumes.")
    p.add_argument("--dataset", required=True, choices=sorted(LAYOUTS), help="which dataset layout --root holds")
    p.add_argument("--root", required=True, metavar="DIR", help="the processed dataset folder")
    p.add_argument("--fold", required=True, type=int, metavar="N",
                   help="Stanford2D3DS 1-3 (cross-validation); Matterport3D/Structured3D 1 (validation) or 2 (test); "
                        "ToF-360 1 (all four scenes, zero-shot)")
    _add_model_args(p)
    p.add_argument("--max-depth", type=float, default=None, metavar="T",
                   help="depth encoding range in metres (default: the fold's training split's 99.5%% inlier "
                        "depth, as the checkpoints were trained; cached)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    p.add_argument("--save-labels", action="store_true", help="also write labels/<area>/<sample>.png")
    p.add_argument("--estimate-maps", nargs="?", const="auto", default=None, metavar="ESTIMATOR",
                   help="estimate depth (and normals) from each RGB image instead of reading the dataset's maps "
                        "(auto, the default when given alone, demo, or a Hub id; local engine): how a checkpoint "
                        "does on photos that come without them")
    _add_run_args(p, overwrite="discard earlier results in --out instead of resuming")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("info", help="describe a checkpoint (architecture, inputs, classes)")
    _add_model_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--debug", action="store_true", help="show tracebacks of all errors")
    p.set_defaults(func=cmd_info)

    from .weights import HUB_REPO_ID

    p = sub.add_parser("list-checkpoints", help="list released/cached checkpoints, or those in a local folder")
    p.add_argument("folder", nargs="?", help="a local folder: list its subfolders holding a model.safetensors")
    p.add_argument("--repo", default=HUB_REPO_ID, help=f"Hub repo id (default {HUB_REPO_ID})")
    p.add_argument("--online", action="store_true", help="ask the Hub (default: released list + local cache)")
    p.add_argument("--debug", action="store_true", help="show tracebacks of all errors")
    p.set_defaults(func=cmd_list_checkpoints)

    sub.add_parser("bench", help="time a randomly initialised model (see `python -m panosamic bench --help`)",
                   add_help=False)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        from .bench import main as bench_main

        return bench_main(argv[1:], prog="python -m panosamic bench")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return args.func(args)
    except UsageError as e:
        print(f"{parser.prog} {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except PanoSAMicError as e:
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"panosamic: error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("panosamic: interrupted", file=sys.stderr)
        return 130


def entry() -> int:
    """The `panosamic` console script: the fast allocator first (see `panosamic.allocator`)."""
    from .allocator import use_fast_allocator

    use_fast_allocator()
    return main()


if __name__ == "__main__":
    sys.exit(entry())
