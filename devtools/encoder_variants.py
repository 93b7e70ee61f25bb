"""Side-by-side CPU timing of SAM's ViT encoder in several numeric variants, one process.

    python -m devtools.encoder_variants --preset vit_b --repeats 3
    python -m devtools.encoder_variants --preset vit_h --repeats 2 --variants fp32,bf16,int8

One 1024x1024 image (random weights, seed 0: random weights time like trained ones) goes
through the encoder in each variant, the variants taking turns (stock, fp32, bf16, ... then
again) so that a busy machine slows all alike. Variants:

- stock: segment_anything's attention, float32 (the `--compare-stock` baseline).
- fp32: ours, the float32 path (`lean` attention, bit-identical to stock).
- bf16: CPU autocast to bfloat16 (`sdpa` attention).
- int8: `torch.ao.quantization.quantize_dynamic` of the ViT's nn.Linear layers (weights int8
  per tensor, activations quantised per call), attention in float32 (`lean`).
- compile: `torch.compile` of each ViT block, float32.
- compile_bf16: both.

Prints one JSON object: per variant the median wall and CPU seconds of one image (after one
untimed warm-up pass; compile's warm-up includes compilation), the ratio to fp32 and to stock,
and the largest absolute difference of its neck embedding from fp32's. The machine's load
average before and after is included: on a shared machine read the ratios, not the times.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from typing import Any, Dict, List, Tuple

import torch
from torch import nn

VARIANTS = ("stock", "fp32", "bf16", "int8", "compile", "compile_bf16")


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _sys_s() -> float:
    """Kernel CPU seconds of this process: page faults of freshly mapped memory land here."""
    return os.times().system


def quantize_int8(encoder: nn.Module) -> nn.Module:
    """A copy of `encoder` with its ViT blocks' nn.Linear layers dynamically quantised to int8:
    the library's int8 precision (`panosamic.precision.quantize_encoder`)."""
    from panosamic.precision import quantize_encoder

    return quantize_encoder(copy.deepcopy(encoder))


def build_variants(encoder, names) -> Dict[str, Dict[str, Any]]:
    """name -> {"module": encoder to call, "attention": kernel, "autocast": bool}."""
    out: Dict[str, Dict[str, Any]] = {}
    for name in names:
        if name == "stock":
            out[name] = {"module": encoder, "attention": "sam", "autocast": False}
        elif name == "fp32":
            out[name] = {"module": encoder, "attention": "auto", "autocast": False}
        elif name == "bf16":
            out[name] = {"module": encoder, "attention": "auto", "autocast": True}
        elif name == "int8":
            out[name] = {"module": quantize_int8(encoder), "attention": "auto", "autocast": False}
        elif name in ("compile", "compile_bf16"):
            compiled = copy.deepcopy(encoder)
            compiled.compile_blocks()
            out[name] = {"module": compiled, "attention": "auto", "autocast": name == "compile_bf16"}
        else:
            raise SystemExit(f"unknown variant {name!r}; use {', '.join(VARIANTS)}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m devtools.encoder_variants", description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="vit_b", choices=["vit_b", "vit_l", "vit_h"])
    p.add_argument("--variants", default="stock,fp32,bf16,int8,compile")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--size", type=int, default=None, help="model input size (default 1024; smaller for a smoke test)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import numpy as np

    from panosamic.allocator import allocator_info
    from panosamic.build import build_model
    from panosamic.config import resolve_config

    torch.manual_seed(args.seed)
    load_before = os.getloadavg()
    cfg = resolve_config(args.preset, modalities=("image",))
    if args.size:
        cfg["image_size"] = args.size
        cfg = resolve_config(cfg)
    model = build_model(cfg).eval()
    S = cfg["image_size"]
    x = torch.randn(1, 3, S, S, generator=torch.Generator().manual_seed(args.seed))
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    variants = build_variants(model.image_encoder, names)
    wall: Dict[str, List[float]] = {n: [] for n in names}
    cpu: Dict[str, List[float]] = {n: [] for n in names}
    system: Dict[str, List[float]] = {n: [] for n in names}
    embeddings: Dict[str, torch.Tensor] = {}
    warm: Dict[str, float] = {}

    def once(name: str) -> float:
        v = variants[name]
        v["module"].set_attention(v["attention"])
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if v["autocast"] else torch.autocast("cpu", enabled=False)
        t, c, k = time.perf_counter(), _cpu_s(), _sys_s()
        with torch.inference_mode(), ctx:
            emb, _ = v["module"](x)
        elapsed = time.perf_counter() - t
        embeddings[name] = emb.float()
        return elapsed, _cpu_s() - c, _sys_s() - k

    warm_cpu: Dict[str, Tuple[float, float]] = {}
    for name in names:  # warm-up (and compilation) of each variant, untimed
        w, c, k = once(name)
        warm[name], warm_cpu[name] = round(w, 3), (round(c, 3), round(k, 3))
        print(f"[variants] {name} warm-up {warm[name]:.1f} s", file=sys.stderr, flush=True)
    for r in range(args.repeats):
        for name in names:
            w, c, k = once(name)
            wall[name].append(w)
            cpu[name].append(c)
            system[name].append(k)
            print(f"[variants] {name} run {r + 1}/{args.repeats}: {w:.2f} s", file=sys.stderr, flush=True)

    med = {n: statistics.median(wall[n]) for n in names}
    med_cpu = {n: statistics.median(cpu[n]) for n in names}
    ref = embeddings.get("fp32")
    result = {
        "preset": args.preset, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "allocator": allocator_info()["name"],
        "loadavg_before": [round(v, 2) for v in load_before],
        "loadavg_after": [round(v, 2) for v in os.getloadavg()],
        "repeats": args.repeats,
        "variants": {
            n: {"median_s": round(med[n], 3), "runs_s": [round(v, 3) for v in wall[n]],
                "cpu_s_median": round(med_cpu[n], 3), "sys_s_median": round(statistics.median(system[n]), 3),
                "warmup_s": warm[n], "warmup_cpu_s": warm_cpu[n][0], "warmup_sys_s": warm_cpu[n][1],
                "vs_fp32": round(med[n] / med["fp32"], 3) if "fp32" in med else None,
                "vs_stock": round(med[n] / med["stock"], 3) if "stock" in med else None,
                "cpu_vs_stock": round(med_cpu[n] / med_cpu["stock"], 3) if "stock" in med else None,
                "embedding_max_abs_diff_vs_fp32": (float((embeddings[n] - ref).abs().max()) if ref is not None else None),
                "embedding_rel_rms_vs_fp32": (float(((embeddings[n] - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt()))
                                              if ref is not None else None)}
            for n in names},
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    from panosamic.allocator import use_fast_allocator

    use_fast_allocator()
    sys.exit(main())
