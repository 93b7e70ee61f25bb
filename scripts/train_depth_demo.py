"""Train the DEMO depth estimator in assets/demo-depth on procedurally rendered rooms (CPU, 1 thread).

    python scripts/train_depth_demo.py                     # render, train, save assets/demo-depth, evaluate
    python scripts/train_depth_demo.py --eval-only         # re-measure the saved files
    python scripts/train_depth_demo.py --steps 30 --pool 12 --out /tmp/dd   # smoke test

The network is `panosamic.estimation.demo.ErpUNet` (a ~0.5 M-parameter U-Net on the 256x128
ERP with spherical padding; see its docstring). Training data: `devtools.scenes` rooms with
seeds SEED_BASE + i (kinds round robin), disjoint from the bundled examples
(`scenes.EXAMPLES`, seeds 11..66), which are the held-out test set. Each scene is rendered
once at 512x256 and area-shrunk 2x (RGB and depth) to 256x128.

Per step: a batch of panoramas from the in-memory pool, each with a random yaw (a roll of any
whole pixel), a horizontal flip (p = 0.5) and brightness/contrast jitter. Loss on log depth,
every pixel weighted by cos(latitude): L1 of the log depth + `--grad-weight` x L1 of its
x and y differences (x across the seam), which keeps planes planar so that the normals derived
from the depth (`geometry.normals_for_model`) are usable. AdamW, warm-up + cosine.

Saved: config.json, model.safetensors (float16), metrics.json (recipe, loss curve, held-out
numbers). The evaluation reloads the saved folder with `panosamic.estimation.load_estimator`
and runs `estimate_maps` on the bundled 1024x512 examples: depth AbsRel against the examples'
depth PNGs, and the angle between the normals derived from the estimated depth and the
examples' true normals.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from multiprocessing import Pool
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from devtools import scenes  # noqa: E402
from devtools.training import LossCurve, set_lr, warmup_cosine  # noqa: E402
from panosamic import geometry  # noqa: E402
from panosamic.estimation.demo import DEMO_CONFIG, ErpUNet  # noqa: E402

RENDER_WIDTH = 512  # rendered at 2x the network's ERP and area-averaged
SEED_BASE = 1000  # training seeds: SEED_BASE + i; the examples use 11..66


# --------------------------------------------------------------------------- data
def _render_one(job: Tuple[str, int]) -> Tuple[np.ndarray, np.ndarray]:
    kind, seed = job
    pano = scenes.render(scenes.make_scene(kind, seed), RENDER_WIDTH)
    h, w = DEMO_CONFIG["erp_size"]
    return geometry.resize_erp(pano.rgb, h, w), geometry.resize_erp(pano.depth, h, w)


def training_jobs(n: int) -> List[Tuple[str, int]]:
    held_out = {seed for _, seed in scenes.EXAMPLES.values()}
    jobs = [(scenes.SCENE_KINDS[i % len(scenes.SCENE_KINDS)], SEED_BASE + i) for i in range(n)]
    assert not held_out & {s for _, s in jobs}, "training seeds overlap the held-out examples"
    return jobs


def render_pool(n: int, workers: int, cache: Path = None) -> Tuple[np.ndarray, np.ndarray]:
    """(n, h, w, 3) uint8 RGB and (n, h, w) float32 depth (metres); cached in `cache` (.npz) if given."""
    if cache is not None and cache.is_file():
        z = np.load(cache)
        if len(z["rgb"]) >= n:
            return z["rgb"][:n], z["depth"][:n]
    jobs = training_jobs(n)
    if workers > 1:
        with Pool(workers) as pool:
            out = pool.map(_render_one, jobs, chunksize=4)
    else:
        out = [_render_one(j) for j in jobs]
    rgb, depth = np.stack([o[0] for o in out]), np.stack([o[1] for o in out]).astype(np.float32)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, rgb=rgb, depth=depth)
    return rgb, depth


def batch(rgb: np.ndarray, depth: np.ndarray, idx: np.ndarray, rng: np.random.Generator):
    """Augmented (B, 3, h, w) RGB in 0..1 and (B, 1, h, w) log depth."""
    xs, ys = [], []
    for i in idx:
        x, d = rgb[i], depth[i]
        if rng.random() < 0.5:
            x, d = x[:, ::-1], d[:, ::-1]
        shift = int(rng.integers(0, x.shape[1]))
        x, d = np.roll(x, shift, axis=1), np.roll(d, shift, axis=1)
        x = x.astype(np.float32) / 255.0
        x = np.clip((x - 0.5) * rng.uniform(0.8, 1.2) + 0.5 + rng.uniform(-0.06, 0.06), 0, 1)
        xs.append(x)
        ys.append(np.log(np.maximum(d, 1e-3)))
    x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(np.stack(ys).astype(np.float32))[:, None]
    return x, y


def latitude_weights(h: int, w: int) -> torch.Tensor:
    lat = (0.5 - (torch.arange(h, dtype=torch.float32) + 0.5) / h) * math.pi
    return torch.cos(lat)[:, None].expand(h, w)


def loss_fn(pred: torch.Tensor, target: torch.Tensor, lat_w: torch.Tensor, grad_weight: float):
    err = pred - target
    l1 = (err.abs() * lat_w).sum() / (lat_w.sum() * err.shape[0])
    gx = err - torch.roll(err, 1, dims=-1)  # across the seam too
    gy = err[..., 1:, :] - err[..., :-1, :]
    wy = lat_w[1:]
    grad = (gx.abs() * lat_w).sum() / (lat_w.sum() * err.shape[0]) + (gy.abs() * wy).sum() / (wy.sum() * err.shape[0])
    return l1 + grad_weight * grad, l1


# --------------------------------------------------------------------------- evaluation
def evaluate(folder: Path, seg_checkpoint: Path = None) -> Dict:
    """Held-out numbers on the bundled 1024x512 examples, through `load_estimator` + `estimate_maps`.

    With `seg_checkpoint` (default: the RGB-D-N demo, assets/demo) also the issue's done-when:
    the checkpoint's mIoU on the examples with the estimated depth and normals (the panorama
    alone) against its mIoU with the true maps."""
    from panosamic import io, metrics
    from panosamic.estimation import estimate_maps, load_estimator
    from panosamic.estimation.metrics import depth_errors, normal_angle_errors

    est = load_estimator(str(folder), device="cpu")
    predictor = None
    if seg_checkpoint is not None and (seg_checkpoint / "config.json").is_file():
        import panosamic

        predictor = panosamic.from_pretrained(str(seg_checkpoint), device="cpu")
    per, t, cms = {}, [], {"true": 0, "estimated": 0}
    for name in io.list_examples():
        paths = io.example_paths(name)
        rgb = io.load_image(paths["image"])
        true_d = io.load_depth(paths["depth"])
        true_rgbn = io.load_normals(paths["normals"])
        true_n = geometry.decode_normals(true_rgbn)
        H, W = true_d.shape
        t0 = time.perf_counter()
        maps = estimate_maps(rgb, est, H, W)
        t.append(time.perf_counter() - t0)
        per[name] = {**depth_errors(maps.depth, true_d), **normal_angle_errors(maps.normals, true_n)}
        if predictor is not None:
            gt = io.load_labels(paths["labels"]).astype(np.int64)
            k = predictor.dataset.num_classes
            for key, (d, n) in {"true": (true_d, true_rgbn), "estimated": (maps.depth, maps.normals_rgb)}.items():
                predictor.set_panorama(rgb, d, n)
                cm = metrics.confusion_matrix(predictor.labels, gt, k)
                cms[key] = cms[key] + cm
                per[name][f"miou_{key}_maps"] = float(np.nanmean(metrics.iou_from_confusion(cm)))
    keys = [k for k in next(iter(per.values())).keys() if not k.startswith("miou")]
    overall = {f"median_over_examples_{k}": float(np.median([v[k] for v in per.values()])) for k in keys}
    overall.update({f"mean_over_examples_{k}": float(np.mean([v[k] for v in per.values()])) for k in keys})
    out = {"overall": overall, "per_example": per, "seconds_per_example": float(np.median(t))}
    if predictor is not None:
        seg = {f"miou_{k}_maps": float(np.nanmean(metrics.iou_from_confusion(cm))) for k, cm in cms.items()}
        seg["ratio"] = seg["miou_estimated_maps"] / seg["miou_true_maps"]
        out["segmentation"] = {"checkpoint": str(seg_checkpoint.relative_to(ROOT) if seg_checkpoint.is_relative_to(ROOT)
                                                 else seg_checkpoint), **seg,
                               "how": "confusion matrices summed over the six examples; the checkpoint gets the "
                                      "panorama with the true depth + normals, then with estimate_maps' depth + "
                                      "normals at the image's 1024x512 (the Predictor wants the image's size; "
                                      "the normals come from the estimator's working depth either way)"}
    return out


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "assets" / "demo-depth")
    ap.add_argument("--pool", type=int, default=480, help="rendered training scenes (all kinds, round robin)")
    ap.add_argument("--pool-cache", type=Path, default=None, help="an .npz to keep the rendered pool in")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=40)
    ap.add_argument("--grad-weight", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--render-workers", type=int, default=2)
    ap.add_argument("--eval-only", action="store_true")
    ap.add_argument("--seg-checkpoint", type=Path, default=ROOT / "assets" / "demo",
                    help="a PanoSAMic checkpoint reading depth + normals, run with true and estimated maps")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.eval_only:
        print(json.dumps(evaluate(args.out, args.seg_checkpoint), indent=1))
        return 0

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t_start = time.perf_counter()
    rgb, depth = render_pool(args.pool, args.render_workers, args.pool_cache)
    t_render = time.perf_counter() - t_start
    print(f"pool: {len(rgb)} scenes at {rgb.shape[2]}x{rgb.shape[1]} in {t_render:.1f} s "
          f"(depth {depth.min():.2f}..{depth.max():.2f} m)", flush=True)

    net = ErpUNet(DEMO_CONFIG["channels"], DEMO_CONFIG["groups"]).train()
    h, w = DEMO_CONFIG["erp_size"]
    lat_w = latitude_weights(h, w)
    decay = [p for p in net.parameters() if p.ndim >= 2]
    no_decay = [p for p in net.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)

    lr_at = warmup_cosine(args.lr, args.warmup, args.steps)
    order = np.concatenate([rng.permutation(len(rgb)) for _ in range(args.steps * args.batch // len(rgb) + 1)])
    curve = LossCurve(lr_at, args.steps, every=25)
    t_train = time.perf_counter()
    for step in range(args.steps):
        set_lr(opt, lr_at(step))
        x, y = batch(rgb, depth, order[step * args.batch:(step + 1) * args.batch], rng)
        loss, l1 = loss_fn(net(x), y, lat_w, args.grad_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        curve.add(step, loss=loss.item(), log_l1=l1.item())
    t_train = time.perf_counter() - t_train

    from safetensors.torch import save_file

    net.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().to(torch.float16).contiguous() for k, v in net.state_dict().items()},
              str(args.out / "model.safetensors"))
    config = {**DEMO_CONFIG, "name": "demo-depth",
              "licence": "Apache-2.0 (PanoSAMic Studio; trained only on its procedural rooms)",
              "dtype": "float16", "parameters": int(sum(p.numel() for p in net.parameters()))}
    (args.out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    sizes = {f.name: f.stat().st_size for f in sorted(args.out.iterdir()) if f.is_file()}
    print(f"trained {args.steps} steps in {t_train:.0f} s; saved {args.out}: {sizes}", flush=True)

    t_eval = time.perf_counter()
    results = evaluate(args.out, args.seg_checkpoint)
    t_eval = time.perf_counter() - t_eval
    report = {
        "recipe": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "render_width": RENDER_WIDTH,
        "train_seeds": f"{SEED_BASE}..{SEED_BASE + args.pool - 1} (kinds round robin)",
        "torch": torch.__version__,
        "seconds": {"render": round(t_render, 1), "train": round(t_train, 1), "eval": round(t_eval, 1),
                    "total": round(time.perf_counter() - t_start, 1)},
        "files_bytes": {k: v for k, v in sizes.items() if k != "metrics.json"},
        "curve": curve.rows,
        "held_out": results,
    }
    (args.out / "metrics.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    o = results["overall"]
    print(f"held-out (6 examples, 1024x512): AbsRel median {o['median_over_examples_absrel']:.3f} "
          f"(mean {o['mean_over_examples_absrel']:.3f}), normal angle median "
          f"{o['median_over_examples_angle_median_deg']:.1f} deg", flush=True)
    if "segmentation" in results:
        sg = results["segmentation"]
        print(f"{sg['checkpoint']}: mIoU {sg['miou_estimated_maps']:.3f} with estimated maps vs "
              f"{sg['miou_true_maps']:.3f} with true maps ({sg['ratio']:.2f}x)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
