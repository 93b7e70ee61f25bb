"""Latency and memory benchmark of a randomly initialised PanoSAMic model.

    python -m panosamic.bench --preset vit_b --modalities image --repeats 3 --clicks 20
    python -m panosamic bench --config shared/reference/tiny_rgbdn_dual/config.json

Random weights time the same as trained ones, so no download is needed. Prints one JSON
object on stdout (progress notes go to stderr): the device and torch build, the model
(preset, modalities, views, ERP size, parameters), `set_panorama` latency (median/min over
--repeats, with per-stage timings), single-click `predict` latency (median/p90 over --clicks
random clicks), peak memory and the size of the cached panorama state, and which memory
allocator runs (`panosamic.allocator`: tcmalloc when installed).

    python -m panosamic.bench --preset vit_b --modalities image --compare-stock --repeats 3

`--compare-stock` (`panosamic.bench_compare`) runs the stock path (segment_anything's attention, float32) and ours
(`--attention`, `--dtype`, `--compile`) on the same model, device and inputs, alternating
them, and prints both timings (whole `set_panorama` and the encoder on one image), the
ratio ours/stock, peak memory of each side and how many labels agree.

    python -m panosamic.bench --preset vit_h --modalities image --check-eta --repeats 1

`--check-eta` first asks `panosamic.eta.estimate_seconds` how long the run will take (a probe
of real-size blocks of this encoder, as the app does before a Run), then runs it (no warm-up:
the first run is the one a user waits for) and adds "eta" to the JSON: the estimate, the
measured run, the ratio estimate/measured and whether it is within 0.67-1.5x.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .bench_tools import (PeakMemory, cpu_s, note, percentile, rss_now_mb, rss_peak_mb, run_facts, setup, summary,
                          synthetic_inputs, time_encoder)
from .precision import PRECISIONS, cpu_features, resolve_precision


def run_benchmark(preset: Optional[str] = "vit_b", config: Optional[str] = None,
                  modalities: Optional[Sequence[str]] = None, single_view: bool = False,
                  size: Optional[int] = None, device: str = "auto", dtype: str = "auto",
                  repeats: int = 3, clicks: int = 20, warmup: int = 1, threads: Optional[int] = None,
                  encoder_chunk_size: Optional[int] = None, seed: int = 0, quiet: bool = True,
                  attention: str = "auto", compile: bool = False, encoder_repeats: int = 0,
                  labels_out: Optional[str] = None) -> Dict[str, Any]:
    """Builds the model, times it and returns the JSON-able result (see the module docstring).

    encoder_repeats: also time one image through the ViT encoder this many times.
    labels_out: save the last panorama's labels there (.npy), for agreement checks."""
    from .allocator import allocator_info
    from .build import build_model
    from .config import describe
    from .predictor import Predictor

    if repeats < 1 or clicks < 1 or warmup < 0:
        raise ValueError("repeats and clicks must be at least 1, warmup at least 0")
    cfg, dev = setup(preset, config, modalities, single_view, size, device, threads, seed)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    rss_before = rss_peak_mb()
    rss_now_before = rss_now_mb()
    t0 = time.perf_counter()
    model = build_model(cfg)
    build_s = time.perf_counter() - t0
    predictor = Predictor(model, device=dev, dtype=dtype, encoder_chunk_size=encoder_chunk_size,
                          attention=attention, compile=compile)
    rss_after_build = rss_peak_mb()
    rss_now_after = rss_now_mb()
    note(f"built {describe(cfg)} in {build_s:.1f} s on {dev}", quiet)

    h, w = model.erp_size
    inputs = synthetic_inputs(h, w, seed)
    kwargs = {m: inputs[m] for m in model.modalities if m != "image"}

    timed = _time_set_panorama(predictor, inputs, kwargs, dev, warmup, repeats, quiet)
    if labels_out:
        np.save(labels_out, predictor.labels)
    encoder_s = time_encoder(predictor, inputs, kwargs, encoder_repeats) if encoder_repeats else []
    click_ms, views = _time_clicks(predictor, w, h, clicks, seed)
    note(f"predict: median {statistics.median(click_ms):.1f} ms over {clicks} clicks", quiet)
    runs, cpu_runs, stages, labels_ms = timed["runs"], timed["cpu"], timed["stages"], timed["labels_ms"]
    set_peak_mb = timed["peak_mb"]

    memory = _memory_json(model, dev, rss_before, rss_after_build, rss_now_before, rss_now_after)
    stage_names = list(stages[0]) if stages else []
    result: Dict[str, Any] = {
        **run_facts(dev, cfg, config, w, h),
        "cpu_count": os.cpu_count(),
        "num_classes": cfg["num_classes"],
        "dtype": str(predictor.dtype).replace("torch.", ""), "precision": predictor.precision, "cpu": cpu_features(),
        "attention": attention,
        "compile": bool(compile),
        "allocator": allocator_info(),
        "encoder_chunk_size": predictor.encoder_chunk_size,
        "params_m": _params_m(model),
        "build_s": round(build_s, 3),
        "set_panorama_s": {
            "median": round(statistics.median(runs), 4),
            "min": round(min(runs), 4),
            "runs": [round(r, 4) for r in runs],
            "repeats": repeats,
            "warmup": warmup,
            "stages_median": {k: round(statistics.median(s[k] for s in stages), 4) for k in stage_names},
            "cpu_s_median": round(statistics.median(cpu_runs), 3),
            "encoder_calls": predictor.encoder_calls,
        },
        "labels_ms": {"median": round(statistics.median(labels_ms), 3)},
        "set_panorama_peak_mb": round(set_peak_mb, 1),
        "predict_ms": {
            "median": round(statistics.median(click_ms), 3),
            "p90": round(percentile(click_ms, 90), 3),
            "min": round(min(click_ms), 3),
            "max": round(max(click_ms), 3),
            "clicks": clicks,
            "views_used": {"0": views[0], "1": views[1]},
        },
        "memory": memory,
        "cache_mb": round(predictor.state.nbytes / 2**20, 3),
        "cache_bytes": int(predictor.state.nbytes),
    }
    if encoder_s:
        result["encoder_per_image_s"] = summary(encoder_s)
    return result


def _memory_json(model, dev, rss_before: float, rss_after_build: float, rss_now_before: Optional[float],
                 rss_now_after: Optional[float]) -> Dict[str, Any]:
    """The run's memory in MiB: peak RSS, what building the model added, and CUDA's peaks."""
    memory: Dict[str, Any] = {
        "peak_rss_mb": round(rss_peak_mb(), 1),
        "rss_peak_before_build_mb": round(rss_before, 1),
        "build_rss_delta_mb": round(rss_after_build - rss_before, 1),
    }
    if rss_now_before is not None and rss_now_after is not None:
        memory["build_rss_now_delta_mb"] = round(rss_now_after - rss_now_before, 1)
    if dev.type == "cuda":
        memory["cuda_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
        memory["cuda_peak_reserved_mb"] = round(torch.cuda.max_memory_reserved(dev) / 2**20, 1)
        memory["cuda_weights_mb"] = round(sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20, 1)
    return memory


def _params_m(model) -> Dict[str, float]:
    """Parameters in millions: all, SAM's part and PanoSAMic's own."""
    def params(prefixes: Sequence[str]) -> float:
        return round(sum(p.numel() for n, p in model.named_parameters() if n.startswith(tuple(prefixes))) / 1e6, 3)

    return {"total": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
            "sam": params(("image_encoder.", "prompt_encoder.", "mask_decoder.")),
            "panosamic": params(("feature_fuser.", "semantic_decoder."))}


def _time_set_panorama(predictor, inputs: Dict[str, np.ndarray], kwargs: Dict[str, np.ndarray], dev,
                       warmup: int, repeats: int, quiet: bool) -> Dict[str, Any]:
    """`set_panorama` `warmup` + `repeats` times: wall and CPU seconds, per-stage timings and
    the labels' milliseconds of the timed runs, and the peak memory (MiB) of all of them."""
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    out: Dict[str, Any] = {"runs": [], "cpu": [], "stages": [], "labels_ms": [], "peak_mb": 0.0}
    for i in range(warmup + repeats):
        with PeakMemory(dev) as peak:
            t, c = time.perf_counter(), cpu_s()
            predictor.set_panorama(inputs["image"], **kwargs)
            elapsed, cpu = time.perf_counter() - t, cpu_s() - c
        out["peak_mb"] = max(out["peak_mb"], peak.peak_mb or 0.0)
        t = time.perf_counter()
        _ = predictor.labels  # upsampling + argmax at the input size, as an app or the CLI does
        label_s = time.perf_counter() - t
        what = "warm-up" if i < warmup else f"run {i - warmup + 1}/{repeats}"
        note(f"set_panorama {what}: {elapsed:.3f} s", quiet)
        if i >= warmup:
            out["runs"].append(elapsed)
            out["cpu"].append(cpu)
            out["stages"].append(predictor.timings)
            out["labels_ms"].append(label_s * 1e3)
    return out


def _time_clicks(predictor, w: int, h: int, clicks: int, seed: int) -> Tuple[List[float], List[int]]:
    """Milliseconds of `clicks` single-point predicts at random pixels (after one warm-up), and
    how often each view decoded them."""
    rng = np.random.default_rng(seed + 1)
    predictor.predict(point_coords=[[w / 2, h / 2]], point_labels=[1], view=0)  # warm-up
    click_ms: List[float] = []
    views = [0, 0]
    dual = predictor.model.num_views == 2
    for _ in range(clicks):
        x, y = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        t = time.perf_counter()
        # view="auto" may pick the yawed view 1, which a single-view model does not have
        predictor.predict(point_coords=[[x, y]], point_labels=[1], multimask_output=True,
                          view="auto" if dual else 0)
        click_ms.append((time.perf_counter() - t) * 1e3)
        views[predictor.last_view or 0] += 1
    return click_ms, views


def run_eta_check(preset: Optional[str] = "vit_b", config: Optional[str] = None,
                  modalities: Optional[Sequence[str]] = None, single_view: bool = False,
                  size: Optional[int] = None, device: str = "auto", dtype: str = "auto",
                  attention: str = "auto", repeats: int = 1, warmup: int = 0, threads: Optional[int] = None,
                  encoder_chunk_size: Optional[int] = None, seed: int = 0, quiet: bool = True) -> Dict[str, Any]:
    """The announced time against the run that follows, in one process (`--check-eta`).

    First `panosamic.eta.estimate_seconds` for the model (it probes real-size blocks of this
    encoder shape, as the app does before a Run), then `run_benchmark` on the same model with
    `warmup` (default 0: the first run is what a user waits for) and `repeats` runs. Returns
    the benchmark's JSON plus "eta": the estimate (seconds, source, rate, probe seconds),
    the measured first run and median, their ratios estimate/measured, whether the first is
    within 0.67-1.5x (`holds`), and the estimate a later run would get (from the measured rate).
    """
    from . import eta

    cfg, dev = setup(preset, config, modalities, single_view, size, device, threads, seed)
    dtype = resolve_precision(dtype, dev, cfg)  # what the Predictor will run: the ETA follows it
    t, c = time.perf_counter(), cpu_s()
    load_before = os.getloadavg()
    before = eta.estimate_seconds(cfg, dev, dtype, attention)
    probe_s, probe_cpu = time.perf_counter() - t, cpu_s() - c
    note(f"estimate {before.seconds:.1f} s ({before.source}, {before.rate_tflops * 1e3:.1f} GFLOP/s; "
          f"probe {probe_s:.1f} s)", quiet)
    result = run_benchmark(preset=preset, config=config, modalities=modalities, single_view=single_view,
                           size=size, device=str(dev), dtype=dtype, repeats=repeats, clicks=1, warmup=warmup,
                           threads=threads, encoder_chunk_size=encoder_chunk_size, seed=seed, quiet=quiet,
                           attention=attention)
    runs = result["set_panorama_s"]["runs"]
    first, median = runs[0], result["set_panorama_s"]["median"]
    after = eta.estimate_seconds(cfg, dev, dtype, attention)
    result["mode"] = "check-eta"
    result["eta"] = {
        "estimate_s": round(before.seconds, 3), "source": before.source,
        "rate_gflops": round(before.rate_tflops * 1e3, 2), "tflop": round(before.tflop, 3),
        "passes": before.passes, "probe_s": round(probe_s, 2),
        # cores this process got (CPU s / wall s) during the probe and the run: on a shared
        # machine a gap between them, not the model, is what moves the ratio
        "probe_cores": round(probe_cpu / probe_s, 2) if probe_s > 0 else None,
        "run_cores": round(result["set_panorama_s"]["cpu_s_median"] / median, 2) if median > 0 else None,
        "loadavg_before": [round(v, 2) for v in load_before],
        "measured_first_s": first, "measured_median_s": median,
        "ratio_first": round(before.seconds / first, 4), "ratio_median": round(before.seconds / median, 4),
        "holds": bool(0.67 <= before.seconds / first <= 1.5),
        "next_estimate_s": round(after.seconds, 3), "next_source": after.source,
        "loadavg_after": [round(v, 2) for v in os.getloadavg()],
    }
    return result


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog or "python -m panosamic.bench",
                                description="Time a randomly initialised PanoSAMic model; prints JSON.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", default=None, choices=["vit_b", "vit_l", "vit_h"],
                     help="released SAM size (default vit_b)")
    src.add_argument("--config", default=None, help="a config.json instead of a preset")
    p.add_argument("--modalities", default=None,
                   help="comma-separated: image,depth,normals (default: the preset's/config's)")
    p.add_argument("--single-view", action="store_true", help="no second, yawed view")
    p.add_argument("--size", type=int, default=None,
                   help="model input size S (the ERP is S x S/2; default the config's, 1024 for presets)")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, mps")
    p.add_argument("--dtype", default="auto", choices=PRECISIONS,
                   help="encoder precision (panosamic.precision; default auto: int8 on x86 CPUs for vit_b/l/h)")
    p.add_argument("--repeats", type=int, default=3, help="timed set_panorama runs (default 3)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed set_panorama runs first (default 1; 0 with --check-eta)")
    p.add_argument("--clicks", type=int, default=20, help="timed single-click predicts (default 20)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default torch's)")
    p.add_argument("--encoder-chunk-size", type=int, default=None, help="images per ViT call (default: all on CUDA, 1 elsewhere)")
    p.add_argument("--attention", default="auto", choices=["auto", "sam", "lean", "sdpa"],
                   help="ViT attention kernel (default auto: lean for float32 off CUDA, else sdpa)")
    p.add_argument("--compile", action="store_true", help="torch.compile the ViT blocks")
    p.add_argument("--compare-stock", action="store_true",
                   help="time the stock path (segment_anything's attention, float32) against ours "
                        "(--attention/--dtype/--compile) alternately; prints ratio, peak memory, label agreement")
    p.add_argument("--check-eta", action="store_true",
                   help="estimate the run first (panosamic.eta, as the app does before a Run), then run it "
                        "(--warmup default 0 here); prints both and the ratio estimate/measured")
    p.add_argument("--encoder-repeats", type=int, default=None,
                   help="timed single-image encoder runs (per side with --compare-stock; default 3 there, else 0)")
    p.add_argument("--stock-allocator", default="same", choices=["same", "system"],
                   help="with --compare-stock: run the stock side in this process (same) or first in a child "
                        "process with the system allocator (system: 'stock, run plainly')")
    p.add_argument("--labels-out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=None, help="also write the JSON to this file")
    p.add_argument("--quiet", action="store_true", help="no progress notes on stderr")
    return p


def main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    from .config import modalities_from_names
    from .errors import PanoSAMicError

    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.warmup is None:
        args.warmup = 0 if args.check_eta else 1
    if args.repeats < 1 or args.clicks < 1 or args.warmup < 0:
        parser.error("--repeats and --clicks must be at least 1, --warmup at least 0")
    try:
        mods = modalities_from_names(args.modalities.split(",")) if args.modalities else None
        if args.check_eta:
            result = run_eta_check(preset=args.preset, config=args.config, modalities=mods,
                                   single_view=args.single_view, size=args.size, device=args.device,
                                   dtype=args.dtype, attention=args.attention, repeats=args.repeats,
                                   warmup=args.warmup, threads=args.threads,
                                   encoder_chunk_size=args.encoder_chunk_size, seed=args.seed, quiet=args.quiet)
        elif args.compare_stock:
            from .bench_compare import run_comparison

            result = run_comparison(preset=args.preset, config=args.config, modalities=mods,
                                    single_view=args.single_view, size=args.size, device=args.device,
                                    dtype=args.dtype, attention=args.attention, compile=args.compile,
                                    repeats=args.repeats, warmup=args.warmup,
                                    encoder_repeats=3 if args.encoder_repeats is None else args.encoder_repeats,
                                    stock_allocator=args.stock_allocator,
                                    clicks=args.clicks, threads=args.threads,
                                    encoder_chunk_size=args.encoder_chunk_size, seed=args.seed, quiet=args.quiet)
        else:
            result = run_benchmark(preset=args.preset, config=args.config, modalities=mods,
                               single_view=args.single_view, size=args.size, device=args.device,
                               dtype=args.dtype, repeats=args.repeats, clicks=args.clicks, warmup=args.warmup,
                               threads=args.threads, encoder_chunk_size=args.encoder_chunk_size,
                               seed=args.seed, quiet=args.quiet, attention=args.attention, compile=args.compile,
                               encoder_repeats=args.encoder_repeats or 0, labels_out=args.labels_out)
    except PanoSAMicError as e:
        print(f"panosamic bench: error: {e}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    from .allocator import use_fast_allocator

    use_fast_allocator()  # may restart this command once with tcmalloc preloaded
    sys.exit(main())
