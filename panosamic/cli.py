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
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .batch import (BatchOptions, FileJob, error_text, expand_inputs, output_paths, predict_row, unique_stems,
                    write_summary)
from .errors import InputError, PanoSAMicError
from .precision import PRECISIONS
from .spec import ModelSpec

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

SUMMARY_FILE = "summary.csv"


class UsageError(Exception):
    """Wrong arguments: printed as `panosamic: error: ...`, exit code 2."""


# --- predict ---------------------------------------------------------------------------------


def _say(message: str, bar=None) -> None:
    if bar is not None:
        bar.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr)


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


def model_spec(args) -> ModelSpec:
    """The one `ModelSpec` of `predict`/`evaluate`/`info`'s model flags (device checked by
    `_check_device` before anything loads; evaluate's T is chosen later, from the data)."""
    max_depth = getattr(args, "max_depth", None)
    return ModelSpec(args.checkpoint, subfolder=args.subfolder, sam=args.sam, config=args.config,
                     device=getattr(args, "device", None), precision=getattr(args, "dtype", None),
                     max_depth=10.0 if max_depth is None else max_depth)


class _Estimates:
    """`--estimate-maps`: the depth estimator, loaded at the first panorama without depth and
    kept for the rest of the command (`panosamic.estimation`); a `batch.DepthEstimate`."""

    def __init__(self, name: str, device: Optional[str]) -> None:
        self.name, self.device, self.estimator = name, device, None

    def __call__(self, image: np.ndarray) -> Tuple[np.ndarray, str]:
        from .estimation.estimate import estimate_depth
        from .estimation.load import load_estimator

        if self.estimator is None:
            self.estimator = load_estimator(self.name, device=self.device)
            if getattr(self.estimator, "note", None):
                print(f"note: {self.estimator.note}", file=sys.stderr)
        return estimate_depth(image, self.estimator, size=image.shape[:2]), self.estimator.name


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


def _predict_jobs(args) -> Tuple[List[FileJob], Path]:
    """`predict`'s arguments checked (usage errors before anything loads): the jobs and --out."""
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
    jobs = [FileJob(p, s, d, n) for p, s, d, n in zip(paths, unique_stems(paths), depth_flags, normals_flags)]
    if not args.overwrite:
        existing = [p for job in jobs for p in output_paths(out, job.stem).values() if p.exists()]
        if (out / SUMMARY_FILE).exists():
            existing.append(out / SUMMARY_FILE)
        if existing:
            names = ", ".join(p.name for p in existing[:5]) + (", ..." if len(existing) > 5 else "")
            raise UsageError(f"{out} already holds results ({names}): pass --overwrite or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    if skipped:
        _say(f"panosamic: skipped {skipped} companion file(s) (_depth, _normals, _labels, ...)")
    for message in problems:
        _say(f"panosamic: warning: {message}")
    return jobs, out


def _options(args) -> BatchOptions:
    return BatchOptions(args.checkpoint, subfolder=args.subfolder, depth_scale=args.depth_scale, debug=args.debug)


def _progress_bar(args, total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="panoramas", unit="pano", file=sys.stderr,
                disable=True if args.no_progress else None, dynamic_ncols=True)


def cmd_predict(args) -> int:
    jobs, out = _predict_jobs(args)
    if args.engine == "ray":
        return _predict_on_ray(args, jobs, out)
    return _predict_here(args, jobs, out)


def _predict_here(args, jobs: List[FileJob], out: Path) -> int:
    """`predict` in this process, one panorama after the other, with a second progress line
    for the ViT blocks of the one in hand."""
    from tqdm.auto import tqdm

    from .allocator import describe_allocator
    from .config import describe

    t_load = time.perf_counter()
    try:
        predictor = model_spec(args).load()
    except PanoSAMicError as e:
        if args.debug:
            traceback.print_exc()
        _say(f"panosamic: cannot load the model: {e}")
        return EXIT_FAILED
    _say(f"panosamic: {describe(predictor.model.config)} on {predictor.device}, {predictor.precision} encoder "
         f"(loaded in {time.perf_counter() - t_load:.1f} s; allocator: {describe_allocator()}); "
         f"{len(jobs)} panorama(s) -> {out}")
    unused = [k for k, v in (("depth", args.depth), ("normals", args.normals))
              if v and k not in predictor.required_modalities]
    if unused:
        _say(f"panosamic: warning: this checkpoint uses {'+'.join(predictor.required_modalities)}; "
             f"the --{' and --'.join(unused)} files are ignored")

    classes = predictor.dataset.classes
    options = _options(args)
    estimate = _Estimates(args.estimate_maps, args.device) if args.estimate_maps else None
    rows: List[Dict[str, Any]] = []
    bar = _progress_bar(args, len(jobs))
    blocks = _BlockBar(tqdm, disable=bar.disable)
    for job in jobs:
        blocks.desc = job.stem
        try:
            row, message = predict_row(predictor, job, out=out, options=options, estimate=estimate, progress=blocks)
        except KeyboardInterrupt:
            bar.close()
            _say("panosamic: interrupted")
            write_summary(out / SUMMARY_FILE, rows, classes)
            return 130
        finally:
            blocks.close()
        if message:
            _say(message, bar)
        rows.append(row)
        bar.update(1)
    bar.close()
    return _finish_predict(out / SUMMARY_FILE, rows, classes)


def _finish_predict(summary_path: Path, rows: List[Dict[str, Any]], classes: Sequence[str]) -> int:
    write_summary(summary_path, rows, classes)
    failures = sum(1 for r in rows if r.get("status") != "ok")
    ok = len(rows) - failures
    _say(f"panosamic: {ok} of {len(rows)} panorama(s) segmented"
         + (f", {failures} failed (see above)" if failures else "") + f"; summary: {summary_path}")
    return EXIT_FAILED if failures else EXIT_OK


def _ray_runner(args):
    from .ray_engine import RayRunner

    return RayRunner(address=args.ray_address, num_actors=args.ray_actors,
                     num_gpus_per_actor=args.num_gpus_per_actor, num_cpus_per_actor=args.num_cpus_per_actor)


def _predict_on_ray(args, jobs: List[FileJob], out: Path) -> int:
    """`predict --engine ray`: the same files and summary as the local engine, computed by Ray actors."""
    from .batch import SegmentTask

    spec = model_spec(args)
    info = spec.info()  # fail early, before Ray
    _say(f"panosamic: {info['architecture']}; {len(jobs)} panorama(s) -> {out} on Ray")
    task = SegmentTask(str(out.resolve()), _options(args))
    found: Dict[int, Dict[str, Any]] = {}
    bar = _progress_bar(args, len(jobs))
    try:
        for res in _ray_runner(args).map(spec, task, [job.to_item(i) for i, job in enumerate(jobs)],
                                         log=lambda m: _say(m, bar)):
            if res["message"]:
                _say(res["message"], bar)
            found[res["index"]] = res["row"]
            bar.update(1)
    except KeyboardInterrupt:
        bar.close()
        _say("panosamic: interrupted")
        write_summary(out / SUMMARY_FILE, [found[i] for i in sorted(found)], info["classes"])
        return 130
    bar.close()
    return _finish_predict(out / SUMMARY_FILE, [found[i] for i in sorted(found)], info["classes"])


# --- evaluate ------------------------------------------------------------------------------------


def cmd_evaluate(args) -> int:
    """Thin wrapper over :func:`panosamic.evaluation.evaluate.evaluate_dataset`."""
    from .evaluation.evaluate import evaluate_dataset, format_report
    from .evaluation.layouts import FoldError

    _check_device(args.device)
    _check_engine(args)
    if args.max_depth is not None and not (args.max_depth > 0):
        raise UsageError("--max-depth must be a positive number of metres")
    runner = _ray_runner(args) if args.engine == "ray" else None
    try:
        result = evaluate_dataset(args.dataset, args.root, args.fold, model_spec(args), args.out,
                                  max_depth=args.max_depth, save_labels=args.save_labels, runner=runner,
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


def cmd_info(args) -> int:
    info = model_spec(args).info()
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
    from .config import RELEASED_SUBFOLDERS
    from .hub import HUB_REPO_ID, PANOSAMIC_FILENAME, cached_subfolders, list_subfolders, local_subfolders
    from .weights import checkpoint_info

    if args.folder:
        root = Path(args.folder).expanduser()
        if not root.is_dir():
            raise UsageError(f"{root} is not a folder")
        found = ([""] if (root / PANOSAMIC_FILENAME).is_file() else []) + local_subfolders(root)
        if not found:
            print(f"no {PANOSAMIC_FILENAME} in {root} or its subfolders", file=sys.stderr)
            return EXIT_FAILED
        for sub in found:
            try:
                desc = checkpoint_info(str(root), sub or None)["architecture"]
            except PanoSAMicError as e:
                desc = f"(unreadable: {error_text(e).splitlines()[0]})"
            print(f"{sub or '.'}\t{desc}")
        return EXIT_OK
    if args.online:
        subs = list_subfolders(args.repo)
    else:
        subs = sorted(set(cached_subfolders(args.repo))
                      | (set(RELEASED_SUBFOLDERS) if args.repo == HUB_REPO_ID else set()))
    cached = set(cached_subfolders(args.repo))
    if not subs:
        print(f"no checkpoints known for {args.repo} (try --online)", file=sys.stderr)
        return EXIT_FAILED
    print(f"# {args.repo}  (use: --checkpoint {args.repo} --subfolder NAME)")
    for sub in subs:
        mods = RELEASED_SUBFOLDERS.get(sub)
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

    from .hub import HUB_REPO_ID

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
