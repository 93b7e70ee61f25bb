"""`python -m panosamic.bench --compare-stock`: the stock path (segment_anything's attention,
float32) against ours on one model, device and input, run alternately so that a busy machine
slows both alike; the stock side optionally in a child process with the system allocator.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .bench_tools import PeakMemory, cpu_s, note, run_facts, setup, summary, synthetic_inputs, time_encoder
from .precision import resolve_precision


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
    cfg, dev = setup(preset, config, modalities, single_view, size, device, threads, seed)
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
    note(f"built {describe(cfg)} on {dev}; stock vs ours ({attention}, {ours.precision}"
          f"{', compiled' if compile else ''}), allocator {allocator_info()['name']}", quiet)
    h, w = model.erp_size
    inputs = synthetic_inputs(h, w, seed)
    kwargs = {m: inputs[m] for m in model.modalities if m != "image"}
    sides = {"stock": stock, "ours": ours} if child is None else {"ours": ours}
    runs, stages, peaks = _alternate(sides, inputs, kwargs, dev, warmup, repeats, quiet)
    # One image through the encoder alone (the per-image cost, without fusion and decoding).
    encoder: Dict[str, List[Tuple[float, float]]] = {k: [] for k in sides}
    for _ in range(encoder_repeats):
        for name, predictor in sides.items():
            encoder[name] += time_encoder(predictor, inputs, kwargs, 1)

    if child is None:
        agree = float(np.mean(stock.labels == ours.labels))
        emb_diff: Optional[float] = float(np.abs(stock.embeddings - ours.embeddings).max())
    else:
        agree = float(np.mean(child_labels == ours.labels))
        emb_diff = None  # the child keeps its embeddings
    click_ms = _click_ms(ours, w, h, clicks, seed)
    peak_key = "peak_cuda_allocated_mb" if dev.type == "cuda" else "peak_rss_mb"
    stock_side = (_side_json(stock, runs["stock"], stages["stock"], peaks["stock"], encoder["stock"], peak_key)
                  if child is None else _child_side_json(child, peak_key))
    ours_side = _side_json(ours, runs["ours"], stages["ours"], peaks["ours"], encoder["ours"], peak_key)
    ratio = {"set_panorama": _ratios(ours_side["set_panorama_s"], stock_side["set_panorama_s"])}
    if encoder_repeats:
        ratio["encoder_per_image"] = _ratios(ours_side["encoder_per_image_s"], stock_side["encoder_per_image_s"])
    result: Dict[str, Any] = {
        "mode": "compare-stock",
        **run_facts(dev, cfg, config, w, h),
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


def _alternate(sides: Dict[str, Any], inputs: Dict[str, np.ndarray], kwargs: Dict[str, np.ndarray], dev,
               warmup: int, repeats: int, quiet: bool):
    """`set_panorama` on each side in turn, `warmup` + `repeats` rounds: per side the timed
    (wall, CPU) seconds, the per-stage timings and the peak memory (MiB)."""
    runs: Dict[str, List[Tuple[float, float]]] = {k: [] for k in sides}
    stages: Dict[str, List[Dict[str, float]]] = {k: [] for k in sides}
    peaks: Dict[str, float] = {k: 0.0 for k in sides}
    for i in range(warmup + repeats):
        for name, predictor in sides.items():
            with PeakMemory(dev) as mem:
                t, c = time.perf_counter(), cpu_s()
                predictor.set_panorama(inputs["image"], **kwargs)
                elapsed, cpu = time.perf_counter() - t, cpu_s() - c
            peaks[name] = max(peaks[name], mem.peak_mb or 0.0)
            note(f"{name} set_panorama {'warm-up' if i < warmup else f'run {i - warmup + 1}/{repeats}'}: "
                 f"{elapsed:.3f} s", quiet)
            if i >= warmup:
                runs[name].append((elapsed, cpu))
                stages[name].append(predictor.timings)
    return runs, stages, peaks


def _click_ms(predictor, w: int, h: int, clicks: int, seed: int) -> List[float]:
    """Milliseconds of `clicks` single-point predicts on view 0 at random pixels (one more first, to warm up)."""
    click_ms: List[float] = []
    rng = np.random.default_rng(seed + 1)
    for _ in range(clicks + 1):
        px, py = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        t = time.perf_counter()
        predictor.predict(point_coords=[[px, py]], point_labels=[1], view=0)
        click_ms.append((time.perf_counter() - t) * 1e3)
    return click_ms[1:]  # the first click warms up


def _side_json(p, runs: List[Tuple[float, float]], stages: List[Dict[str, float]], peak_mb: float,
               encoder: List[Tuple[float, float]], peak_key: str) -> Dict[str, Any]:
    """One side of the comparison as JSON: its settings, timings and peak memory."""
    out: Dict[str, Any] = {
        "attention": p.attention, "dtype": str(p.dtype).replace("torch.", ""), "precision": p.precision,
        "compile": p.compiled,
        "set_panorama_s": {**summary(runs),
                           "stages_median": {k: round(statistics.median(s[k] for s in stages), 4) for k in stages[0]}},
        peak_key: round(peak_mb, 1),
    }
    if encoder:
        out["encoder_per_image_s"] = summary(encoder)
    return out


def _child_side_json(child: Dict[str, Any], peak_key: str) -> Dict[str, Any]:
    """The stock side from the child process's benchmark JSON, in `_side_json`'s form."""
    return {
        "attention": "sam", "dtype": "float32", "compile": False, "allocator": child["allocator"],
        "process": "child, PANOSAMIC_ALLOCATOR=system",
        "set_panorama_s": {k: child["set_panorama_s"][k] for k in ("median", "runs", "cpu_s_median", "stages_median")},
        peak_key: child["set_panorama_peak_mb"],
        **({"encoder_per_image_s": child["encoder_per_image_s"]} if "encoder_per_image_s" in child else {}),
    }


def _ratios(ours: Dict[str, Any], stock: Dict[str, Any]) -> Dict[str, Optional[float]]:
    """ours / stock of the median wall and CPU seconds (below 1 is faster)."""
    def ratio(x: float, y: float):
        return round(x / y, 4) if y > 0 else None  # a tiny model can finish within the clock's tick

    return {"wall": ratio(ours["median"], stock["median"]), "cpu": ratio(ours["cpu_s_median"], stock["cpu_s_median"])}


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
        note("stock side: child process, system allocator", quiet)
        proc = subprocess.run(args, stdout=subprocess.PIPE, stderr=None, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"the stock child process failed (exit {proc.returncode})")
        return json.loads(proc.stdout), np.load(labels)
