"""How long will it take? Progress events with an ETA, and run-time estimates before a run.

- `encoder_flops(config)`: floating-point operations of one image through SAM's ViT
  (multiply-add = 2), per block and in total, from the architecture alone.
- `estimate_seconds(config, device, dtype)`: expected seconds of one `set_panorama`, from
  those FLOPs and this device's rate. The rate is measured once per (device, dtype) by timing
  two small ViT blocks (a fraction of a second on a CPU), and replaced by the rate of real
  runs as soon as a `Predictor` has encoded a panorama on that device.
- `Progress`: what `Predictor.set_panorama(on_progress=...)` reports: the stage, ViT blocks
  done of total, seconds elapsed and seconds left.

ViT-H RGB-D-N dual view is 6 images x ~5.5 TFLOP = ~33 TFLOP per panorama; RGB needs a third.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

STAGES = ("preprocess", "encode", "fuse", "decode", "done")

# --- FLOP model ---------------------------------------------------------------------------------


def _block_flops(tokens_side: int, dim: int, window: int, mlp_ratio: float = 4.0) -> float:
    """FLOPs of one SAM ViT block on a (g x g) token grid; window 0 = global attention."""
    g = tokens_side
    n = g * g
    if window > 0:
        gp = math.ceil(g / window) * window  # SAM pads the grid to whole windows before attention
        attn_tokens, per_window = gp * gp, window * window
    else:
        attn_tokens, per_window = n, n
    qkv_proj = 2 * attn_tokens * dim * (3 * dim + dim)
    mlp = 2 * n * dim * int(dim * mlp_ratio) * 2
    scores = 4 * attn_tokens * per_window * dim  # q k^T and attn v
    side = window if window > 0 else g
    rel_pos = 2 * attn_tokens * 2 * side * dim  # the two decomposed einsums
    return float(qkv_proj + mlp + scores + rel_pos)


def encoder_flops(config: Mapping[str, Any]) -> Dict[str, Any]:
    """FLOPs of one image through the image encoder of `config` (a resolved config dict).

    Returns {"blocks": [FLOPs per ViT block], "patch_and_neck": FLOPs, "total": FLOPs}.
    """
    S, P, C = config["image_size"], config["patch_size"], config["encoder_embed_dim"]
    g = S // P
    glob = set(config["encoder_global_attn_indexes"])
    window = config["encoder_window_size"]
    blocks = [_block_flops(g, C, 0 if i in glob else window) for i in range(config["encoder_depth"])]
    out = config["prompt_embed_dim"]
    patch_and_neck = 2.0 * g * g * (C * 3 * P * P + C * out + out * out * 9)
    return {"blocks": blocks, "patch_and_neck": patch_and_neck, "total": sum(blocks) + patch_and_neck}


def encoder_passes(config: Mapping[str, Any]) -> int:
    """Images through the ViT per panorama: views x modalities."""
    return (2 if config.get("dual_view_fusion") else 1) * len(config["modalities"])


# --- device rates -------------------------------------------------------------------------------

# (device type, dtype name, attention) -> (FLOP/s, "calibrated" | "measured")
_rates: Dict[Tuple[str, str, str], Tuple[float, str]] = {}
_lock = threading.Lock()


def _key(device: Union[str, torch.device], dtype: Union[str, torch.dtype], attention: str = "auto") -> Tuple[str, str, str]:
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    name = str(dtype).replace("torch.", "")
    name = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(name, name)
    return dev.type, name, attention


def record_rate(device, dtype, flops: float, seconds: float, attention: str = "auto") -> None:
    """Remembers the rate of a real encoder run (used by `Predictor.set_panorama`)."""
    if seconds <= 0 or flops <= 0:
        return
    key = _key(device, dtype, attention)
    with _lock:
        old = _rates.get(key)
        rate = flops / seconds
        if old is not None and old[1] == "measured":
            rate = 0.5 * (rate + old[0])  # smooth run-to-run noise
        _rates[key] = (rate, "measured")


def calibrate(device: Union[str, torch.device] = "cpu", dtype: Union[str, torch.dtype] = "float32",
              attention: str = "auto", dim: int = 768, grid: int = 32) -> float:
    """Measures FLOP/s of SAM ViT blocks (one windowed, one global; random weights) on `device`.

    About 30 GFLOP of work: a fraction of a second on a laptop CPU, milliseconds on a GPU.
    """
    from functools import partial

    from .model.encoder import TappedImageEncoderViT

    dev = torch.device(device)
    key = _key(dev, dtype, attention)
    torch_dtype = getattr(torch, key[1])
    vit = TappedImageEncoderViT(depth=2, embed_dim=dim, img_size=grid * 16, mlp_ratio=4,
                                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=dim // 64,
                                patch_size=16, qkv_bias=True, use_rel_pos=True, global_attn_indexes=(1,),
                                window_size=14, out_chans=256, attention=attention).to(dev).eval()
    x = torch.randn(1, grid, grid, dim, device=dev)
    autocast = torch.autocast(dev.type, dtype=torch_dtype) if torch_dtype != torch.float32 else None

    def run() -> None:
        y = x
        for block in vit.blocks:
            y = block(y)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    with torch.inference_mode():
        if autocast is not None:
            autocast.__enter__()
        try:
            run()  # warm-up: kernels, caches, allocator
            t = time.perf_counter()
            run()
            seconds = time.perf_counter() - t
        finally:
            if autocast is not None:
                autocast.__exit__(None, None, None)
    flops = _block_flops(grid, dim, 14) + _block_flops(grid, dim, 0)
    rate = flops / max(seconds, 1e-9)
    with _lock:
        if key not in _rates:
            _rates[key] = (rate, "calibrated")
    return rate


def device_rate(device, dtype="float32", attention: str = "auto") -> Tuple[float, str]:
    """(FLOP/s, source) for this device: a real run's rate if there was one, else calibrated now."""
    key = _key(device, dtype, attention)
    with _lock:
        known = _rates.get(key)
    if known is None:
        calibrate(device, dtype, attention)
        with _lock:
            known = _rates[key]
    return known


@dataclass(frozen=True)
class Estimate:
    """Expected cost of one `set_panorama`.

    seconds: expected wall time; passes: images through the ViT; tflop: their work in TFLOP;
    rate_tflops: the device's rate used (TFLOP/s); source: "measured" (real runs here) or
    "calibrated" (a short probe).
    """

    seconds: float
    passes: int
    tflop: float
    rate_tflops: float
    source: str


def estimate_seconds(config: Mapping[str, Any], device: Union[str, torch.device] = "cpu",
                     dtype: Union[str, torch.dtype] = "float32", attention: str = "auto",
                     modalities: Optional[Sequence[str]] = None) -> Estimate:
    """Expected seconds of one `set_panorama` of a `config` model on `device`.

    `modalities` overrides the config's (e.g. ("image",) to price the RGB checkpoint). The
    encoder dominates; fusion and decoding add a few percent, counted as 5 %.
    """
    cfg = dict(config)
    if modalities is not None:
        cfg["modalities"] = list(modalities)
    passes = encoder_passes(cfg)
    flops = passes * encoder_flops(cfg)["total"]
    rate, source = device_rate(device, dtype, attention)
    return Estimate(seconds=1.05 * flops / rate, passes=passes, tflop=flops / 1e12,
                    rate_tflops=rate / 1e12, source=source)


# --- progress -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """One progress event of `Predictor.set_panorama`.

    stage: "preprocess", "encode", "fuse", "decode" or "done"; done/total: ViT blocks run of all
    blocks of this panorama (views x modalities x depth); elapsed_s: seconds since the call
    began; eta_s: seconds left (None until the first block finished, 0 when done);
    fraction: 0..1 of the expected work.
    """

    stage: str
    done: int
    total: int
    elapsed_s: float
    eta_s: Optional[float]
    fraction: float

    def __str__(self) -> str:
        eta = "" if self.eta_s is None else f", ~{self.eta_s:.0f} s left"
        return f"{self.stage} {self.done}/{self.total} blocks{eta}"


class ProgressTracker:
    """Turns stage starts and per-block callbacks into `Progress` events with a FLOP-weighted ETA.

    blocks: FLOPs of each ViT block of one image (see `encoder_flops`), passes: images through
    the ViT. The ETA extrapolates the seconds per FLOP seen so far in this run over the
    FLOPs left, so that cheap windowed and costly global blocks are weighed correctly.
    """

    TAIL = 0.05  # fusion + decoding, as a share of the encoder's work

    def __init__(self, blocks: Sequence[float], passes: int, emit: Callable[[Progress], None]) -> None:
        self.block_flops: List[float] = list(blocks) * passes
        self.total_flops = sum(self.block_flops) * (1 + self.TAIL)
        self.cumulative = [0.0]
        for f in self.block_flops:
            self.cumulative.append(self.cumulative[-1] + f)
        self.emit = emit
        self.t0 = time.perf_counter()
        self.t_encode: Optional[float] = None
        self.done = 0

    @property
    def total(self) -> int:
        return len(self.block_flops)

    def _event(self, stage: str, eta: Optional[float]) -> None:
        work = self.cumulative[self.done] if stage != "done" else self.total_flops
        self.emit(Progress(stage=stage, done=self.done, total=self.total,
                           elapsed_s=time.perf_counter() - self.t0, eta_s=eta,
                           fraction=min(1.0, work / self.total_flops) if self.total_flops else 1.0))

    def stage(self, name: str) -> None:
        """A stage begins."""
        if name == "encode":
            self.t_encode = time.perf_counter()
        self._event(name, self._eta())

    def block(self, done: int, total: int) -> None:
        """`done` of `total` ViT blocks finished (the encoder's on_block callback)."""
        self.done = min(done, self.total)
        self._event("encode", self._eta())

    def finish(self) -> None:
        self.done = self.total
        self._event("done", 0.0)

    def _eta(self) -> Optional[float]:
        if self.t_encode is None or self.done == 0:
            return None
        spent = time.perf_counter() - self.t_encode
        per_flop = spent / self.cumulative[self.done]
        return max(0.0, per_flop * (self.total_flops - self.cumulative[self.done]))
