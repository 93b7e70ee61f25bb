"""The GPU benchmark in one command: stock float32 against ours, for every model and variant.

    python scripts/bench_gpu.py --output gpu_bench.json            # on a CUDA machine

For each preset (vit_b, vit_h) and input set (RGB; RGB-D-N), dual view, it runs
`panosamic.bench_compare.run_comparison`: segment_anything's attention in float32 ("stock") against
ours in float32 (sdpa), bfloat16 (sdpa under autocast) and bfloat16 + torch.compile, on the
same random-weight model, inputs and GPU. Everything goes into one JSON file: per case the
time ratio ours/stock, peak GPU memory of each side, label agreement and click latency.

On a machine without CUDA, test it on a small config:

    python scripts/bench_gpu.py --device cpu --config ../shared/reference/tiny_rgbdn_dual/config.json \\
        --variants fp32,bf16 --repeats 1 --warmup 0 --output /tmp/cpu_check.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = {  # name -> (attention, dtype, compile)
    "fp32": ("sdpa", "float32", False),
    "bf16": ("sdpa", "bfloat16", False),
    "bf16-compile": ("sdpa", "bfloat16", True),
}
INPUTS = {"rgb": ("image",), "rgbdn": ("image", "depth", "normals")}


def main(argv=None) -> int:
    from panosamic.allocator import use_fast_allocator

    use_fast_allocator()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--presets", default="vit_b,vit_h", help="comma-separated (ignored with --config)")
    p.add_argument("--config", default=None, help="a config.json instead of the presets")
    p.add_argument("--inputs", default="rgb,rgbdn", help=f"comma-separated of {', '.join(INPUTS)}")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated of {', '.join(VARIANTS)}")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--encoder-repeats", type=int, default=5)
    p.add_argument("--clicks", type=int, default=20)
    p.add_argument("--output", required=True, help="the JSON file to write")
    args = p.parse_args(argv)

    from panosamic.bench_compare import run_comparison

    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    unknown += [i for i in args.inputs.split(",") if i not in INPUTS]
    if unknown:
        p.error(f"unknown variant or input set: {', '.join(unknown)}")
    models = [(None, args.config)] if args.config else [(name, None) for name in args.presets.split(",")]
    cases = []
    t0 = time.perf_counter()
    for preset, config in models:
        for inputs in args.inputs.split(","):
            for variant in args.variants.split(","):
                attention, dtype, compile_ = VARIANTS[variant]
                label = f"{preset or Path(config).parent.name} {inputs} {variant}"
                print(f"[bench_gpu] {label} ...", file=sys.stderr, flush=True)
                try:
                    result = run_comparison(preset=preset, config=config, modalities=INPUTS[inputs],
                                            device=args.device, dtype=dtype, attention=attention,
                                            compile=compile_, repeats=args.repeats, warmup=args.warmup,
                                            encoder_repeats=args.encoder_repeats, clicks=args.clicks)
                except Exception as e:  # noqa: BLE001  one failing case (e.g. out of memory) must not lose the rest
                    result = {"error": f"{type(e).__name__}: {e}"}
                cases.append({"case": label, "preset": preset, "inputs": inputs, "variant": variant, **result})
                summary = result.get("ratio", result.get("error"))  # ours / stock, wall and CPU time
                print(f"[bench_gpu] {label}: {summary}, agreement {result.get('label_agreement')}",
                      file=sys.stderr, flush=True)
                _free(args.device)
    out = {"cases": cases, "total_s": round(time.perf_counter() - t0, 1)}
    Path(args.output).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(json.dumps([{k: c.get(k) for k in ("case", "ratio", "label_agreement", "error")} for c in cases], indent=1))
    return 0 if all("error" not in c for c in cases) else 1


def _free(device: str) -> None:
    import gc

    import torch

    torch._dynamo.reset()  # compiled graphs of one case must not count against the next one's limits
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


if __name__ == "__main__":
    sys.exit(main())
