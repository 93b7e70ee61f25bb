"""How long will it take? Progress events with an ETA, and run-time estimates before a run.

- `encoder_flops(config)`: floating-point operations of one image through SAM's ViT
  (multiply-add = 2), per block and in total, from the architecture alone.
- `estimate_seconds(config, device, dtype)`: expected seconds of one `set_panorama`: the
  seconds of one windowed and one global-attention ViT block of this encoder's shape on this
  device (`calibrate`: real-size blocks; vit_h int8 about 1.2 s windowed / 3.8 s global on a 2-core CPU) times their numbers,
  times the images, plus fusion and decoding of this model (`calibrate_tail`). A real run of
  the same shape on the same device then replaces both by what it took (`record_rate`,
  `record_tail`).
- `Progress`: what `Predictor.set_panorama(on_progress=...)` reports: the stage, ViT blocks
  done of total, seconds elapsed and seconds left.

ViT-H RGB-D-N dual view is 6 images x ~6 TFLOP = ~36 TFLOP per panorama; RGB needs a third.
"""

from __future__ import annotations

import math
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from .precision import autocast_dtype, quantize_encoder

STAGES = ("preprocess", "encode", "fuse", "decode", "done")

# Preprocessing, fusion and decoding as a share of the encoder's time, where they were not timed
# for this model (see `estimate_seconds`): measured 18 % for vit_b RGB dual view (bfloat16 encoder)
# and 11 % for vit_h RGB (float32) on the 2-core AMD EPYC.
TAIL = 0.15

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


# --- device speed -------------------------------------------------------------------------------
#
# What one ViT block costs on this device is measured on real-size blocks: a block's speed per
# FLOP depends on its shape (a 64x64-token global attention block streams 4096x4096 score
# matrices through memory; a 32x32-token probe's fit in cache), so a small probe overestimates
# the rate. Measured on the 2-core AMD EPYC (torch 2.13 CPU): the old 32x32-token, 768-wide
# probe said 20 GFLOP/s while vit_h's real run did 63 GFLOP/s (618 s announced, 212 s taken).
#
# Per (device type, dtype, attention, shape) with shape = (embed dim, heads, token grid side,
# window), `_times` holds the seconds of one windowed and one global-attention block on one
# image: "calibrated" from a probe of exactly that shape, then "measured" once a real run of a
# model of that shape finished (the calibrated times scaled to what the run took). `_rates`
# holds device-wide FLOP/s ("injected" by `set_rate`, or recorded without a config) used for
# shapes without times of their own.

Shape = Tuple[int, int, int, int]

_times: Dict[Tuple[str, str, str, Shape], "BlockTimes"] = {}
# (device type, dtype, tail shape) -> (seconds of fusion + decoding of one panorama, source)
_tails: Dict[Tuple[str, str, Tuple[int, ...]], Tuple[float, str]] = {}
_rates: Dict[Tuple[str, str, str], Tuple[float, str]] = {}
_lock = threading.Lock()
_probe_lock = threading.Lock()  # one probe at a time: two would share the cores and both read slow


@dataclass(frozen=True)
class BlockTimes:
    """Seconds of one ViT block on one image, for one encoder shape on one device.

    windowed_s / global_s: a windowed-attention block / a global-attention block, seconds;
    source: "calibrated" (a probe of that shape), "measured" (a real run of that shape) or
    "flops" (derived from a device-wide rate and the FLOP model).
    """

    windowed_s: float
    global_s: float
    source: str


def _key(device: Union[str, torch.device], dtype: Union[str, torch.dtype], attention: str = "auto") -> Tuple[str, str, str]:
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    name = str(dtype).replace("torch.", "")
    name = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "qint8": "int8"}.get(name, name)
    return dev.type, name, attention


def encoder_shape(config: Mapping[str, Any]) -> Shape:
    """(embed dim, heads, token grid side, window size): what one block's cost depends on."""
    return (int(config["encoder_embed_dim"]), int(config["encoder_num_heads"]),
            int(config["image_size"]) // int(config["patch_size"]), int(config["encoder_window_size"]))


def _kinds(config: Mapping[str, Any]) -> Tuple[int, int]:
    """(windowed blocks, global blocks) of the encoder."""
    glob = set(config["encoder_global_attn_indexes"])
    n_global = sum(1 for i in range(config["encoder_depth"]) if i in glob)
    return config["encoder_depth"] - n_global, n_global


def tail_shape(config: Mapping[str, Any]) -> Tuple[int, ...]:
    """What fusion and decoding cost depends on: (embed dim, token grid side, prompt dim,
    modalities, views, classes, taps)."""
    return (int(config["encoder_embed_dim"]), int(config["image_size"]) // int(config["patch_size"]),
            int(config["prompt_embed_dim"]), len(config["modalities"]), encoder_passes(config) // len(config["modalities"]),
            int(config["num_classes"]), len(config["encoder_global_attn_indexes"]))


def record_tail(device, dtype, config: Mapping[str, Any], seconds: float, source: str = "measured") -> None:
    """Remembers the seconds of preprocessing, fusion and decoding of one panorama of `config`
    (`Predictor.encode` calls it with what a real run took)."""
    if seconds <= 0:
        return
    key = _tail_key(device, config)
    with _lock:
        old = _tails.get(key)
        if source == "measured" and old is not None and old[1] == "measured":
            seconds = 0.5 * (seconds + old[0])  # smooth run-to-run noise
        if source == "measured" or old is None or old[1] != "measured":
            _tails[key] = (float(seconds), source)


def _tail_key(device, config: Mapping[str, Any]) -> Tuple[str, str, Tuple[int, ...]]:
    # fusion and decoding run in float32 whatever the encoder's precision (panosamic.precision)
    return _key(device, "float32")[:2] + (tail_shape(config),)


def tail_seconds(config: Mapping[str, Any], device, dtype=None) -> Optional[Tuple[float, str]]:
    """(seconds, source) of fusion and decoding of one panorama of `config`, None if not timed.
    `dtype` (the encoder's precision) does not matter: they run in float32."""
    with _lock:
        return _tails.get(_tail_key(device, config))


def calibrate_tail(device: Union[str, torch.device] = "cpu", dtype: Union[str, torch.dtype] = "float32",
                   config: Optional[Mapping[str, Any]] = None) -> float:
    """Times fusion and decoding of one panorama of `config` at full size, random weights: one
    of its (identical) fusion blocks on the real tapped-map shape, counted once per tap, and the
    semantic decoder once. Every op there is local (per pixel or small window), but the maps are
    large (vit_b RGB dual view: 4 x 2 x 768 x 64 x 64 in, 2 x 1024 x 256 x 256 out), so it is
    timed at full size. Cost: one fusion block of the four and the decoder, a few seconds on the
    2-core AMD EPYC for the released sizes."""
    from .model.decoder import SemanticDecoder
    from .model.fusion import FusionBlock

    if config is None:
        from .config import resolve_config

        config = resolve_config("vit_b", modalities=("image",))
    C, g, P, M, V, K, taps = tail_shape(config)
    dev = torch.device(device)
    with _probe_lock:
        block = FusionBlock(embed_dim=C, grid=g, num_modalities=M, prompt_embed_dim=P,
                            channel_attention=config["channel_attention"],
                            spatial_attention=config["spatial_attention"]).to(dev).eval()
        decoder = SemanticDecoder(in_channels=taps * P, hidden_dim=P, num_classes=K, size=4 * g,
                                  dual_view=V == 2).to(dev).eval()
        x = torch.randn(V * M, C, g, g, device=dev)
        with torch.inference_mode():  # float32, as in a run
            t = time.perf_counter()
            fused = block(x)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t_block = time.perf_counter() - t
            fused = fused.repeat(1, taps, 1, 1)
            t = time.perf_counter()
            decoder(fused)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t_decoder = time.perf_counter() - t
        del block, decoder, fused, x
    seconds = taps * t_block + t_decoder
    record_tail(dev, dtype, config, seconds, source="calibrated")
    return tail_seconds(config, dev, dtype)[0]


def set_rate(device, dtype, flops_per_s: float, attention: str = "auto", source: str = "injected") -> None:
    """Sets a device-wide rate (FLOP/s) for every shape without block times of its own, and
    forgets those of (device, dtype, attention): for tests and for a rate known in advance."""
    if flops_per_s <= 0:
        raise ValueError("flops_per_s must be positive")
    key = _key(device, dtype, attention)
    with _lock:
        _rates[key] = (float(flops_per_s), source)
        for k in [k for k in _times if k[:3] == key]:
            del _times[k]


def set_block_times(config: Mapping[str, Any], device, dtype, windowed_s: float, global_s: float,
                    attention: str = "auto", source: str = "injected") -> None:
    """Sets the seconds of one windowed and one global block of `config`'s shape (tests, or
    times known in advance); a later real run of that shape corrects them."""
    if windowed_s <= 0 or global_s <= 0:
        raise ValueError("block times must be positive")
    with _lock:
        _times[_key(device, dtype, attention) + (encoder_shape(config),)] = BlockTimes(windowed_s, global_s, source)


def reset_rates() -> None:
    """Forgets every rate and block time (tests)."""
    with _lock:
        _rates.clear()
        _times.clear()
        _tails.clear()


def known(config: Mapping[str, Any], device, dtype="float32", attention: str = "auto") -> bool:
    """Whether `estimate_seconds` for `config` can answer without running a probe."""
    key = _key(device, dtype, attention)
    with _lock:
        return (key + (encoder_shape(config),)) in _times or key in _rates


def _flop_times(config: Mapping[str, Any], rate: float, source: str) -> BlockTimes:
    S, P, C = config["image_size"], config["patch_size"], config["encoder_embed_dim"]
    g, window = S // P, config["encoder_window_size"]
    return BlockTimes(_block_flops(g, C, window) / rate, _block_flops(g, C, 0) / rate, source)


def _lookup(config: Mapping[str, Any], key: Tuple[str, str, str]) -> Optional[BlockTimes]:
    with _lock:
        times = _times.get(key + (encoder_shape(config),))
        rate = _rates.get(key)
    if times is not None:
        return times
    if rate is not None:
        return _flop_times(config, rate[0], rate[1])
    return None


def _encoder_seconds(config: Mapping[str, Any], times: BlockTimes) -> float:
    """Seconds of one image through the encoder: the blocks, plus the patch embedding and the
    neck at the windowed blocks' rate per FLOP."""
    n_windowed, n_global = _kinds(config)
    flops = encoder_flops(config)
    windowed_flops = _block_flops(encoder_shape(config)[2], config["encoder_embed_dim"], config["encoder_window_size"])
    return (n_windowed * times.windowed_s + n_global * times.global_s
            + flops["patch_and_neck"] * times.windowed_s / windowed_flops)


def record_rate(device, dtype, flops: float, seconds: float, attention: str = "auto",
                config: Optional[Mapping[str, Any]] = None, images: int = 1) -> None:
    """Remembers what a real encoder run took (`Predictor.encode` calls it): `seconds` for
    `images` images of `config`'s encoder (`flops` in all). With a config, the block times of
    that shape become "measured": the calibrated ones scaled to this run (or, without any, the
    FLOP model's split), averaged with an earlier measurement to smooth run-to-run noise.
    Without a config, a device-wide FLOP/s for every shape (the old behaviour)."""
    if seconds <= 0 or flops <= 0:
        return
    key = _key(device, dtype, attention)
    if config is None:
        with _lock:
            old = _rates.get(key)
            rate = flops / seconds
            if old is not None and old[1] == "measured":
                rate = 0.5 * (rate + old[0])
            _rates[key] = (rate, "measured")
        return
    base = _lookup(config, key) or _flop_times(config, flops / seconds, "flops")
    scale = seconds / max(images, 1) / _encoder_seconds(config, base)
    new = BlockTimes(base.windowed_s * scale, base.global_s * scale, "measured")
    if base.source == "measured":
        new = BlockTimes(0.5 * (new.windowed_s + base.windowed_s), 0.5 * (new.global_s + base.global_s), "measured")
    with _lock:
        _times[key + (encoder_shape(config),)] = new


def _probe_config(dim: int, heads: int, grid: int, window: int) -> Dict[str, Any]:
    return {"encoder_embed_dim": dim, "encoder_num_heads": heads, "image_size": grid * 16, "patch_size": 16,
            "encoder_window_size": window, "encoder_depth": 2, "encoder_global_attn_indexes": [1],
            "prompt_embed_dim": 256}


def calibrate(device: Union[str, torch.device] = "cpu", dtype: Union[str, torch.dtype] = "float32",
              attention: str = "auto", config: Optional[Mapping[str, Any]] = None,
              tail: bool = True) -> BlockTimes:
    """Times one windowed and one global-attention block of `config`'s real shape (random
    weights, one image) on `device`; with `tail` (and a full model config) also its fusion and
    decoding (`calibrate_tail`).

    Two pairs of blocks are built; the first pair runs untimed (kernel set-up, first touch of
    the 4096x4096 score buffers: once per real run), then the second pair is timed, once each:
    its weights come from memory, not from a cache that a repeat would have warmed, as a real
    model's do (a small effect: 1.04x for a vit_b block in bfloat16 on the 2-core AMD EPYC).
    `config` defaults to SAM's vit_b. Measured with the tail on the 2-core AMD EPYC: vit_b 4.8 s
    (bfloat16) / 13.5 s (float32, machine busy), vit_h 5.8 s (bfloat16) for 2 x (65 + 110) /
    2 x (177 + 248) GFLOP; milliseconds on a GPU. vit_h int8 (the CPU default) on the 2-core
    AVX2 EPYC: windowed 1.21 s, global 3.83 s, against 0.87-0.94 s and 2.6-3.5 s for the same
    blocks inside a whole encoder pass in the same process (the probe reads 1.1-1.4x high).
    """
    from functools import partial

    from .model.encoder import TappedImageEncoderViT

    if config is None:
        from .config import resolve_config

        config = resolve_config("vit_b", modalities=("image",))
    dim, heads, grid, window = encoder_shape(config)
    dev = torch.device(device)
    key = _key(dev, dtype, attention)
    torch_dtype = autocast_dtype(key[1])  # int8: float32 around the quantised linear layers
    with _probe_lock:
        vit = TappedImageEncoderViT(depth=4, embed_dim=dim, img_size=grid * 16, mlp_ratio=4,
                                    norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=heads,
                                    patch_size=16, qkv_bias=True, use_rel_pos=True, global_attn_indexes=(1, 3),
                                    window_size=window, out_chans=256, attention=attention).to(dev).eval()
        if key[1] == "int8":
            quantize_encoder(vit)  # the run's encoder is quantised: so is the probe
        x = torch.randn(1, grid, grid, dim, device=dev)
        autocast = torch.autocast(dev.type, dtype=torch_dtype) if torch_dtype != torch.float32 else nullcontext()
        seconds: List[float] = []
        with torch.inference_mode(), autocast:
            for block in vit.blocks:  # windowed, global (untimed), windowed, global
                t = time.perf_counter()
                block(x)
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                seconds.append(time.perf_counter() - t)
        del vit
    times = BlockTimes(seconds[2], seconds[3], "calibrated")
    with _lock:
        slot = key + (encoder_shape(config),)
        if slot not in _times:  # a real run's times are better than a probe's
            _times[slot] = times
        times = _times[slot]
    if tail and "channel_attention" in config and tail_seconds(config, dev, dtype) is None:
        calibrate_tail(dev, dtype, config)
    return times


def block_times(config: Mapping[str, Any], device="cpu", dtype="float32", attention: str = "auto",
                probe: bool = True) -> Optional[BlockTimes]:
    """Seconds of one windowed and one global block of `config` on `device`: measured or
    calibrated for its shape, else from a device-wide rate, else (with `probe`) calibrated now;
    None when unknown and `probe` is False."""
    key = _key(device, dtype, attention)
    times = _lookup(config, key)
    if times is None and probe:
        times = calibrate(device, dtype, attention, config)
    return times


def device_rate(device, dtype="float32", attention: str = "auto",
                config: Optional[Mapping[str, Any]] = None) -> Tuple[float, str]:
    """(FLOP/s, source) of `config`'s encoder (default vit_b) on this device: from a real run
    of that shape if there was one, else calibrated now on blocks of that shape."""
    if config is None:
        from .config import resolve_config

        config = resolve_config("vit_b", modalities=("image",))
    times = block_times(config, device, dtype, attention)
    return encoder_flops(config)["total"] / _encoder_seconds(config, times), times.source


@dataclass(frozen=True)
class Estimate:
    """Expected cost of one `set_panorama`.

    seconds: expected wall time; passes: images through the ViT; tflop: their work in TFLOP;
    rate_tflops: the device's effective rate on this encoder (TFLOP/s); source: "measured"
    (a real run of this encoder shape here), "calibrated" (a probe of real-size blocks of this
    shape), "injected" (`set_rate`) or "measured" device-wide.
    """

    seconds: float
    passes: int
    tflop: float
    rate_tflops: float
    source: str


def estimate_seconds(config: Mapping[str, Any], device: Union[str, torch.device] = "cpu",
                     dtype: Union[str, torch.dtype] = "float32", attention: str = "auto",
                     modalities: Optional[Sequence[str]] = None, probe: bool = True) -> Estimate:
    """Expected seconds of one `set_panorama` of a `config` model on `device`.

    `modalities` overrides the config's (e.g. ("image",) to price the RGB checkpoint). The
    encoder's blocks at this device's measured seconds per block of this shape (`block_times`;
    a probe runs first when none is known and `probe` is True, else ValueError), plus
    preprocessing, fusion and decoding as timed for this model (`calibrate_tail`, then real
    runs), else counted as `TAIL` of the encoder's time.
    """
    cfg = dict(config)
    if modalities is not None:
        cfg["modalities"] = list(modalities)
    passes = encoder_passes(cfg)
    flops = passes * encoder_flops(cfg)["total"]
    times = block_times(cfg, device, dtype, attention, probe=probe)
    if times is None:
        raise ValueError("no rate known for this encoder on this device (estimate_seconds(probe=True) measures one)")
    encoder_s = passes * _encoder_seconds(cfg, times)
    tail = tail_seconds(cfg, device, dtype) if "channel_attention" in cfg else None
    tail_s = tail[0] if tail is not None else TAIL * encoder_s
    return Estimate(seconds=encoder_s + tail_s, passes=passes, tflop=flops / 1e12,
                    rate_tflops=flops / encoder_s / 1e12, source=times.source)


# --- progress -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """One progress event of `Predictor.set_panorama`.

    stage: "preprocess", "encode", "fuse", "decode" or "done"; done/total: ViT blocks run of all
    blocks of this panorama (views x modalities x depth); elapsed_s: seconds since the call
    began; eta_s: seconds left (0 when done; before the first block finished, None unless
    this device's block times are known);
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
    """Turns stage starts and per-block callbacks into `Progress` events with a weighted ETA.

    blocks: the cost of each ViT block of one image in any unit: its FLOPs (`encoder_flops`)
    or, better, its expected seconds on this device (`block_seconds`: a global-attention block
    costs more per FLOP than a windowed one); passes: images through the ViT. The ETA
    extrapolates the seconds per unit seen so far in this run over the units left, so it
    corrects itself as blocks finish. `seconds_per_unit` (1.0 when `blocks` are expected
    seconds) gives an ETA before the first block has finished; without it that ETA is None.
    """

    TAIL = TAIL  # preprocessing, fusion and decoding, as a share of the encoder's work

    def __init__(self, blocks: Sequence[float], passes: int, emit: Callable[[Progress], None],
                 seconds_per_unit: Optional[float] = None) -> None:
        self.block_flops: List[float] = list(blocks) * passes
        self.total_flops = sum(self.block_flops) * (1 + self.TAIL)
        self.cumulative = [0.0]
        for f in self.block_flops:
            self.cumulative.append(self.cumulative[-1] + f)
        self.emit = emit
        self.prior = seconds_per_unit
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
        left = self.total_flops - self.cumulative[self.done]
        if self.t_encode is None or self.done == 0:
            return None if self.prior is None else max(0.0, self.prior * left)
        spent = time.perf_counter() - self.t_encode
        per_unit = spent / self.cumulative[self.done]
        return max(0.0, per_unit * left)


def block_seconds(config: Mapping[str, Any], device="cpu", dtype="float32", attention: str = "auto"
                  ) -> Optional[List[float]]:
    """Expected seconds of each ViT block of `config` on one image on this device (weights for
    `ProgressTracker`), or None when no rate is known yet (no probe is run here)."""
    times = block_times(config, device, dtype, attention, probe=False)
    if times is None:
        return None
    glob = set(config["encoder_global_attn_indexes"])
    return [times.global_s if i in glob else times.windowed_s for i in range(config["encoder_depth"])]
