"""Seconds per panorama of depth estimation (panosamic.estimation), for the README's figures.

    python -m devtools.bench_estimation                 # demo + real-size Depth Anything V2 Small
    python -m devtools.bench_estimation --only demo

For each estimator and input size (1024x512 and 8192x4096, the office example scaled up):
`estimate_maps(rgb, est, 512, 1024)` (depth + normals at a checkpoint's size) and
`estimate_depth(rgb, est)` (depth at the photo's own size, what an export writes), the
median of `--runs` runs, with the stage times of the first.

"real-size" is `DepthAnythingForDepthEstimation(hf.small_config())` with RANDOM weights and
Depth Anything's published preprocessing (518 px, ImageNet mean/std): the architecture and
input size of Depth Anything V2 Metric Indoor Small, for timing only (offline, its weights
cannot be downloaded). The depth it predicts is meaningless.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from panosamic import geometry, io


def _real_size_estimator(device: str):
    from transformers import DepthAnythingForDepthEstimation

    try:
        from transformers import DPTImageProcessorPil as Processor
    except ImportError:  # older transformers name the PIL processor DPTImageProcessor
        from transformers import DPTImageProcessor as Processor

    from panosamic.estimation.hf import TransformersDepthEstimator, small_config

    torch.manual_seed(0)
    model = DepthAnythingForDepthEstimation(small_config())
    processor = Processor(size={"height": 518, "width": 518}, keep_aspect_ratio=True, ensure_multiple_of=14,
                          do_pad=False, resample=3, image_mean=[0.485, 0.456, 0.406],
                          image_std=[0.229, 0.224, 0.225])
    est = TransformersDepthEstimator("real-size Depth Anything V2 Small (random weights)", device=device,
                                     model=model, processor=processor)
    est.params = sum(p.numel() for p in model.parameters())
    return est


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["demo", "real-size"], default=None)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from panosamic.estimation import estimate_depth, estimate_maps, load_estimator

    base = io.load_image(io.example_paths("office")["image"])
    inputs = {"1024x512": base, "8192x4096": geometry.resize_erp(base, 4096, 8192)}
    names = [args.only] if args.only else ["demo", "real-size"]
    report = {"torch_threads": torch.get_num_threads(), "device": args.device, "results": {}}
    for name in names:
        est = load_estimator("demo", device=args.device) if name == "demo" else _real_size_estimator(args.device)
        for size, rgb in inputs.items():
            row = {}
            for what in ("estimate_maps_512x1024", "estimate_depth_full_size"):
                times, stages = [], None
                for _ in range(args.runs):
                    t0 = time.perf_counter()
                    if what.startswith("estimate_maps"):
                        maps = estimate_maps(rgb, est, 512, 1024)
                        stages = stages or maps.seconds
                    else:
                        d = estimate_depth(rgb, est)
                        assert d.shape == rgb.shape[:2]
                    times.append(time.perf_counter() - t0)
                row[what] = round(float(np.median(times)), 2)
                if stages:
                    row["stages"] = stages
            report["results"][f"{name} @ {size}"] = row
            print(json.dumps({f"{name} @ {size}": row}), flush=True)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
