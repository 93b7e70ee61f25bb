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

`--compare-stock` runs the stock path (segment_anything's attention, float32) and ours
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
import platform
import resource
import statistics
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .precision import PRECISIONS, cpu_features, resolve_precision


def _rss_peak_mb() -> float:
    """Peak resident set size of this process so far, in MiB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _rss_now_mb() -> Optional[float]:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def _cpu_s() -> float:
    """User + system CPU seconds of this process so far (all threads). On a busy machine the
    CPU time of a run is steadier than its wall time."""
    t = os.times()
    return t.user + t.system


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def _run_facts(dev, cfg: Dict[str, Any], config, w: int, h: int) -> Dict[str, Any]:
    """What every bench JSON says about the machine and the model it ran."""
    from .config import describe

    return {
        "device": str(dev),
        "device_name": (torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name()),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "preset": cfg.get("vit_model") if config is None else None,
        "config": os.fspath(config) if config is not None else None,
        "architecture": describe(cfg),
        "modalities": list(cfg["modalities"]),
        "views": 2 if cfg["dual_view_fusion"] else 1,
        "image_size": {"width": w, "height": h, "model_input": cfg["image_size"]},
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _synthetic_inputs(h: int, w: int, seed: int) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "depth": rng.uniform(0.5, 8.0, (h, w)).astype(np.float32),
        "normals": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
    }


def _note(message: str, quiet: bool) -> None:
    if not quiet:
        print(f"[bench] {message}", file=sys.stderr, flush=True)


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
    cfg, dev = _setup(preset, config, modalities, single_view, size, device, threads, seed)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    rss_before = _rss_peak_mb()
    rss_now_before = _rss_now_mb()
    t0 = time.perf_counter()
    model = build_model(cfg)
    build_s = time.perf_counter() - t0
    predictor = Predictor(model, device=dev, dtype=dtype, encoder_chunk_size=encoder_chunk_size,
                          attention=attention, compile=compile)
    rss_after_build = _rss_peak_mb()
    rss_now_after = _rss_now_mb()
    _note(f"built {describe(cfg)} in {build_s:.1f} s on {dev}", quiet)

    h, w = model.erp_size
    inputs = _synthetic_inputs(h, w, seed)
    kwargs = {m: inputs[m] for m in model.modalities if m != "image"}

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    runs: List[float] = []
    stages: List[Dict[str, float]] = []
    labels_ms: List[float] = []
    set_peak_mb = 0.0
    cpu_runs: List[float] = []
    for i in range(warmup + repeats):
        with _PeakMemory(dev) as peak:
            t, c = time.perf_counter(), _cpu_s()
            predictor.set_panorama(inputs["image"], **kwargs)
            elapsed, cpu = time.perf_counter() - t, _cpu_s() - c
        set_peak_mb = max(set_peak_mb, peak.peak_mb or 0.0)
        t = time.perf_counter()
        _ = predictor.labels  # upsampling + argmax at the input size, as an app or the CLI does
        label_s = time.perf_counter() - t
        what = "warm-up" if i < warmup else f"run {i - warmup + 1}/{repeats}"
        _note(f"set_panorama {what}: {elapsed:.3f} s", quiet)
        if i >= warmup:
            runs.append(elapsed)
            cpu_runs.append(cpu)
            stages.append(predictor.timings)
            labels_ms.append(label_s * 1e3)

    if labels_out:
        np.save(labels_out, predictor.labels)
    encoder_s = _time_encoder(predictor, inputs, kwargs, encoder_repeats) if encoder_repeats else []

    rng = np.random.default_rng(seed + 1)
    predictor.predict(point_coords=[[w / 2, h / 2]], point_labels=[1], view=0)  # warm-up
    click_ms: List[float] = []
    views = [0, 0]
    for _ in range(clicks):
        x, y = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        t = time.perf_counter()
        # view="auto" may pick the yawed view 1, which a single-view model does not have
        predictor.predict(point_coords=[[x, y]], point_labels=[1], multimask_output=True,
                          view="auto" if model.num_views == 2 else 0)
        click_ms.append((time.perf_counter() - t) * 1e3)
        views[predictor.last_view or 0] += 1
    _note(f"predict: median {statistics.median(click_ms):.1f} ms over {clicks} clicks", quiet)

    memory: Dict[str, Any] = {
        "peak_rss_mb": round(_rss_peak_mb(), 1),
        "rss_peak_before_build_mb": round(rss_before, 1),
        "build_rss_delta_mb": round(rss_after_build - rss_before, 1),
    }
    if rss_now_before is not None and rss_now_after is not None:
        memory["build_rss_now_delta_mb"] = round(rss_now_after - rss_now_before, 1)
    if dev.type == "cuda":
        memory["cuda_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
        memory["cuda_peak_reserved_mb"] = round(torch.cuda.max_memory_reserved(dev) / 2**20, 1)
        memory["cuda_weights_mb"] = round(sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20, 1)

    def params(prefixes: Sequence[str]) -> float:
        return round(sum(p.numel() for n, p in model.named_parameters() if n.startswith(tuple(prefixes))) / 1e6, 3)

    stage_names = list(stages[0]) if stages else []
    result: Dict[str, Any] = {
        **_run_facts(dev, cfg, config, w, h),
        "cpu_count": os.cpu_count(),
        "num_classes": cfg["num_classes"],
        "dtype": str(predictor.dtype).replace("torch.", ""), "precision": predictor.precision, "cpu": cpu_features(),
        "attention": attention,
        "compile": bool(compile),
        "allocator": allocator_info(),
        "encoder_chunk_size": predictor.encoder_chunk_size,
        "params_m": {
            "total": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
            "sam": params(("image_encoder.", "prompt_encoder.", "mask_decoder.")),
            "panosamic": params(("feature_fuser.", "semantic_decoder.")),
        },
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
            "p90": round(_percentile(click_ms, 90), 3),
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
        result["encoder_per_image_s"] = _summary(encoder_s)
    return result


def _summary(runs: List[Tuple[float, float]]) -> Dict[str, Any]:
    """(wall, cpu) seconds per run -> medians and the wall times."""
    return {"median": round(statistics.median(w for w, _ in runs), 4), "runs": [round(w, 4) for w, _ in runs],
            "cpu_s_median": round(statistics.median(c for _, c in runs), 3)}


def _time_encoder(predictor, inputs, kwargs, repeats: int) -> List[Tuple[float, float]]:
    """(wall, CPU) seconds of one image (view 0, first modality) through the ViT encoder, `repeats` times."""
    stack = predictor._prepare(inputs["image"], kwargs.get("depth"), kwargs.get("normals"))[0]
    x = predictor.model.preprocess(stack.to(predictor.device))[:1]
    predictor.model.image_encoder.set_attention(predictor.attention)
    out = []
    with torch.inference_mode(), predictor._autocast(encoder=True):
        for _ in range(repeats):
            t, c = time.perf_counter(), _cpu_s()
            predictor.model.image_encoder(x)
            predictor._sync()
            out.append((time.perf_counter() - t, _cpu_s() - c))
    return out


def _setup(preset, config, modalities, single_view, size, device, threads, seed):
    """Resolved config and device, threads and seed set: shared by both benchmark modes."""
    from .config import resolve_config
    from .predictor import resolve_device

    if threads:
        torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    cfg = resolve_config(config if config is not None else (preset or "vit_b"),
                         modalities=modalities, dual_view=False if single_view else None)
    if size is not None:
        cfg["image_size"] = int(size)
        cfg = resolve_config(cfg)
    return cfg, resolve_device(device)


class _PeakMemory:
    """Peak memory of the code in a `with` block: CUDA allocated bytes on a GPU, else the
    process's resident set (sampled every 5 ms by a thread; /proc, Linux)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mb: Optional[float] = None

    def __enter__(self) -> "_PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        import threading

        self._stop = threading.Event()
        self._peak = _rss_now_mb() or 0.0

        def sample() -> None:
            while not self._stop.wait(0.005):
                now = _rss_now_mb()
                if now is not None and now > self._peak:
                    self._peak = now

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mb = self._peak


def run_comparison(preset: Optional[str] = "vit_b", config: Optional[str] = None,
                   modalities: Optional[Sequence[str]] = None, single_view: bool = False,
                   size: Optional[int] = None, device: str = "auto", dtype: str = "auto",
                   attention: str = "auto", compile: bool = False, repeats: int = 3, warmup: int = 1,
                   encoder_repeats: int = 3, clicks: int = 10, threads: Optional[int] = None,
                   encoder_chunk_size: Optional[int] = None, seed: int = 0, quiet: bool = True,
                   stock_allocator: str = "same") -> Dict[str, Any]:
    """Stock (segment_anything's attention, float32) against ours on one model, device and input.

    stock_allocator "system" runs the stock side first in a child process with the
    allocator left alone (PANOSAMIC_ALLOCATOR=system): "stock SAM run plainly", while ours
    runs here with the default (tcmalloc when installed). "same" (default) runs both here.

    Both sides run alternately (stock, ours, stock, ours, ...) so that a busy machine slows
    both alike. Times: whole `set_panorama` (median of `repeats` after `warmup`) and one image
    through the ViT encoder (median of `encoder_repeats`). Returns the JSON-able result with
    `ratio` = ours / stock (below 1 is faster) and the label agreement over the panorama.
    """
    import copy

    from .allocator import allocator_info
    from .build import build_model
    from .config import describe
    from .predictor import Predictor

    if repeats < 1 or warmup < 0 or encoder_repeats < 0 or clicks < 0:
        raise ValueError("repeats must be at least 1; warmup, encoder_repeats and clicks at least 0")
    cfg, dev = _setup(preset, config, modalities, single_view, size, device, threads, seed)
    child: Optional[Dict[str, Any]] = None
    child_labels: Optional[np.ndarray] = None
    if stock_allocator == "system":
        child, child_labels = _stock_in_child(preset, config, modalities, single_view, size, str(dev),
                                              repeats, warmup, encoder_repeats, threads, encoder_chunk_size,
                                              seed, quiet)
    model = build_model(cfg)
    stock = Predictor(model, device=dev, dtype="float32", attention="sam", encoder_chunk_size=encoder_chunk_size)
    # torch.compile and int8 change the modules in place: ours then needs its own copy of the weights
    own = compile or resolve_precision(dtype, dev, cfg) == "int8"
    ours = Predictor(copy.deepcopy(model) if own else model, device=dev, dtype=dtype, attention=attention,
                     compile=compile, encoder_chunk_size=encoder_chunk_size)
    _note(f"built {describe(cfg)} on {dev}; stock vs ours ({attention}, {ours.precision}"
          f"{', compiled' if compile else ''}), allocator {allocator_info()['name']}", quiet)
    h, w = model.erp_size
    inputs = _synthetic_inputs(h, w, seed)
    kwargs = {m: inputs[m] for m in model.modalities if m != "image"}
    sides = {"stock": stock, "ours": ours} if child is None else {"ours": ours}
    runs: Dict[str, List[Tuple[float, float]]] = {k: [] for k in sides}
    stages: Dict[str, List[Dict[str, float]]] = {k: [] for k in sides}
    peaks: Dict[str, float] = {k: 0.0 for k in sides}
    for i in range(warmup + repeats):
        for name, predictor in sides.items():
            with _PeakMemory(dev) as mem:
                t, c = time.perf_counter(), _cpu_s()
                predictor.set_panorama(inputs["image"], **kwargs)
                elapsed, cpu = time.perf_counter() - t, _cpu_s() - c
            peaks[name] = max(peaks[name], mem.peak_mb or 0.0)
            _note(f"{name} set_panorama {'warm-up' if i < warmup else f'run {i - warmup + 1}/{repeats}'}: "
                  f"{elapsed:.3f} s", quiet)
            if i >= warmup:
                runs[name].append((elapsed, cpu))
                stages[name].append(predictor.timings)

    # One image through the encoder alone (the per-image cost, without fusion and decoding).
    encoder: Dict[str, List[Tuple[float, float]]] = {k: [] for k in sides}
    for _ in range(encoder_repeats):
        for name, predictor in sides.items():
            encoder[name] += _time_encoder(predictor, inputs, kwargs, 1)

    if child is None:
        agree = float(np.mean(stock.labels == ours.labels))
        emb_diff: Optional[float] = float(np.abs(stock.embeddings - ours.embeddings).max())
    else:
        agree = float(np.mean(child_labels == ours.labels))
        emb_diff = None  # the child keeps its embeddings
    click_ms: List[float] = []
    rng = np.random.default_rng(seed + 1)
    for _ in range(clicks + 1):
        px, py = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        t = time.perf_counter()
        ours.predict(point_coords=[[px, py]], point_labels=[1], view=0)
        click_ms.append((time.perf_counter() - t) * 1e3)
    click_ms = click_ms[1:]  # the first click warms up

    def side(name: str) -> Dict[str, Any]:
        p = sides[name]
        out: Dict[str, Any] = {
            "attention": p.attention, "dtype": str(p.dtype).replace("torch.", ""), "precision": p.precision,
            "compile": p.compiled,
            "set_panorama_s": {**_summary(runs[name]),
                               "stages_median": {k: round(statistics.median(s[k] for s in stages[name]), 4)
                                                 for k in stages[name][0]}},
            ("peak_cuda_allocated_mb" if dev.type == "cuda" else "peak_rss_mb"): round(peaks[name], 1),
        }
        if encoder[name]:
            out["encoder_per_image_s"] = _summary(encoder[name])
        return out

    stock_side = side("stock") if child is None else {
        "attention": "sam", "dtype": "float32", "compile": False, "allocator": child["allocator"],
        "process": "child, PANOSAMIC_ALLOCATOR=system",
        "set_panorama_s": {k: child["set_panorama_s"][k] for k in ("median", "runs", "cpu_s_median", "stages_median")},
        ("peak_cuda_allocated_mb" if dev.type == "cuda" else "peak_rss_mb"): child["set_panorama_peak_mb"],
        **({"encoder_per_image_s": child["encoder_per_image_s"]} if "encoder_per_image_s" in child else {}),
    }
    ours_side = side("ours")

    def ratios(key: str) -> Dict[str, float]:
        a, b = ours_side[key], stock_side[key]
        def ratio(x: float, y: float):
            return round(x / y, 4) if y > 0 else None  # a tiny model can finish within the clock's tick

        return {"wall": ratio(a["median"], b["median"]), "cpu": ratio(a["cpu_s_median"], b["cpu_s_median"])}

    ratio = {"set_panorama": ratios("set_panorama_s")}
    if encoder_repeats:
        ratio["encoder_per_image"] = ratios("encoder_per_image_s")
    result: Dict[str, Any] = {
        "mode": "compare-stock",
        **_run_facts(dev, cfg, config, w, h),
        "allocator": allocator_info(),
        "encoder_chunk_size": ours.encoder_chunk_size,
        "stock": stock_side,
        "ours": ours_side,
        "ratio": ratio,
        "label_agreement": round(agree, 6),
        "embeddings_max_abs_diff": emb_diff,
        "ours_predict_ms": {"median": round(statistics.median(click_ms), 3), "clicks": clicks} if click_ms else None,
        "repeats": repeats, "warmup": warmup, "encoder_repeats": encoder_repeats,
    }
    if dev.type != "cuda" and child is None:
        result["memory_note"] = ("CPU peaks are resident-set peaks of one process: the side that runs "
                                 "second may reuse memory the first left with the allocator")
    return result


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

    cfg, dev = _setup(preset, config, modalities, single_view, size, device, threads, seed)
    dtype = resolve_precision(dtype, dev, cfg)  # what the Predictor will run: the ETA follows it
    t, c = time.perf_counter(), _cpu_s()
    load_before = os.getloadavg()
    before = eta.estimate_seconds(cfg, dev, dtype, attention)
    probe_s, probe_cpu = time.perf_counter() - t, _cpu_s() - c
    _note(f"estimate {before.seconds:.1f} s ({before.source}, {before.rate_tflops * 1e3:.1f} GFLOP/s; "
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


def _stock_in_child(preset, config, modalities, single_view, size, device, repeats, warmup, encoder_repeats,
                    threads, encoder_chunk_size, seed, quiet):
    """The stock side (segment_anything's attention, float32) in a fresh process with the
    system allocator. Returns its benchmark JSON and its labels."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        labels = os.path.join(tmp, "labels.npy")
        args = [sys.executable, "-m", "panosamic.bench", "--attention", "sam", "--dtype", "float32",
                "--device", device, "--repeats", str(repeats), "--warmup", str(warmup), "--clicks", "1",
                "--encoder-repeats", str(encoder_repeats), "--seed", str(seed), "--labels-out", labels]
        args += ["--config", os.fspath(config)] if config is not None else ["--preset", preset or "vit_b"]
        if modalities:
            args += ["--modalities", ",".join(modalities)]
        if single_view:
            args.append("--single-view")
        for flag, value in (("--size", size), ("--threads", threads), ("--encoder-chunk-size", encoder_chunk_size)):
            if value is not None:
                args += [flag, str(value)]
        if quiet:
            args.append("--quiet")
        env = dict(os.environ, PANOSAMIC_ALLOCATOR="system")
        env.pop("LD_PRELOAD", None)
        env.pop("PANOSAMIC_ALLOCATOR_REEXEC", None)
        _note("stock side: child process, system allocator", quiet)
        proc = subprocess.run(args, stdout=subprocess.PIPE, stderr=None, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"the stock child process failed (exit {proc.returncode})")
        return json.loads(proc.stdout), np.load(labels)


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
