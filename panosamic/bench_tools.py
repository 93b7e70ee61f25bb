"""What the benchmarks measure with: process memory and CPU time, peak memory of a block,
synthetic inputs, the run's facts (device, torch, model) and the shared set-up of a model.
`panosamic.bench` (latency, `--check-eta`) and `panosamic.bench_compare` (`--compare-stock`)
use them.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch


def rss_peak_mb() -> float:
    """Peak resident set size of this process so far, in MiB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def rss_now_mb() -> Optional[float]:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def cpu_s() -> float:
    """User + system CPU seconds of this process so far (all threads). On a busy machine the
    CPU time of a run is steadier than its wall time."""
    t = os.times()
    return t.user + t.system


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def run_facts(dev, cfg: Dict[str, Any], config, w: int, h: int) -> Dict[str, Any]:
    """What every bench JSON says about the machine and the model it ran."""
    from .config import describe

    return {
        "device": str(dev),
        "device_name": (torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name()),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "preset": cfg.get("vit_model") if config is None else None,
        "config": os.fspath(config) if config is not None else None,
        "architecture": describe(cfg),
        "modalities": list(cfg["modalities"]),
        "views": 2 if cfg["dual_view_fusion"] else 1,
        "image_size": {"width": w, "height": h, "model_input": cfg["image_size"]},
    }


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def synthetic_inputs(h: int, w: int, seed: int) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "depth": rng.uniform(0.5, 8.0, (h, w)).astype(np.float32),
        "normals": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
    }


def note(message: str, quiet: bool) -> None:
    if not quiet:
        print(f"[bench] {message}", file=sys.stderr, flush=True)


def summary(runs: List[Tuple[float, float]]) -> Dict[str, Any]:
    """(wall, cpu) seconds per run -> medians and the wall times."""
    return {"median": round(statistics.median(w for w, _ in runs), 4), "runs": [round(w, 4) for w, _ in runs],
            "cpu_s_median": round(statistics.median(c for _, c in runs), 3)}


def time_encoder(predictor, inputs, kwargs, repeats: int) -> List[Tuple[float, float]]:
    """(wall, CPU) seconds of one image (view 0, first modality) through the ViT encoder, `repeats` times."""
    stack = predictor._prepare(inputs["image"], kwargs.get("depth"), kwargs.get("normals"))[0]
    x = predictor.model.preprocess(stack.to(predictor.device))[:1]
    predictor.model.image_encoder.set_attention(predictor.attention)
    out = []
    with torch.inference_mode(), predictor._autocast(encoder=True):
        for _ in range(repeats):
            t, c = time.perf_counter(), cpu_s()
            predictor.model.image_encoder(x)
            predictor._sync()
            out.append((time.perf_counter() - t, cpu_s() - c))
    return out


def setup(preset, config, modalities, single_view, size, device, threads, seed):
    """Resolved config and device, threads and seed set: shared by both benchmark modes."""
    from .config import resolve_config
    from .device import resolve_device

    if threads:
        torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    cfg = resolve_config(config if config is not None else (preset or "vit_b"),
                         modalities=modalities, dual_view=False if single_view else None)
    if size is not None:
        cfg["image_size"] = int(size)
        cfg = resolve_config(cfg)
    return cfg, resolve_device(device)


class PeakMemory:
    """Peak memory of the code in a `with` block: CUDA allocated bytes on a GPU, else the
    process's resident set (sampled every 5 ms by a thread; /proc, Linux)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mb: Optional[float] = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        import threading

        self._stop = threading.Event()
        self._peak = rss_now_mb() or 0.0

        def sample() -> None:
            while not self._stop.wait(0.005):
                now = rss_now_mb()
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
