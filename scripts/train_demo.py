"""Train the small "demo" checkpoint in assets/demo on procedurally rendered rooms (CPU, ~17 min).

    python scripts/train_demo.py                       # trains, saves assets/demo, evaluates
    python scripts/train_demo.py --eval-only           # re-measure the saved checkpoint
    python scripts/train_demo.py --steps 20 --pool 12 --out /tmp/demo   # smoke test
    python scripts/train_demo.py --modalities image              # the RGB demo, assets/demo-rgb
    python scripts/train_demo.py --modalities image,depth        # the RGB-D demo, assets/demo-rgbd

The architecture is the tiny reference one (shared/reference/tiny_rgbdn_dual/config.json:
ViT 96x4, 256x128 ERP, image+depth+normals, 13 Stanford2D3DS classes, dual view), trained
from scratch on panoramas from `devtools.scenes` whose seeds are disjoint from the bundled
examples (`scenes.EXAMPLES`), which are the held-out test set.

Per step: one panorama from an in-memory pool (random yaw roll + horizontal flip, normals
rotated/mirrored with it so they stay in the "image centre = +x" frame), forward through the
library's own stages (`preprocess`, `encode`, `fuse`, `decode_semantics`, `postprocess`),
cos-latitude weighted cross-entropy (sqrt inverse-frequency class weights) on the ERP logits,
plus SAM's prompt path: single clicks inside connected components of the label map
(components merged across the seam), decoded with `decode_prompts` on the image embedding
of the view whose seam is farther from the click, best-of-3 BCE + dice to the component,
and MSE of the IoU head to the real IoU. AdamW, warm-up + cosine. Deterministic per --seed
(on the same torch build and thread count).

Saved: config.json, model.safetensors (feature_fuser.*, semantic_decoder.*; float16),
sam.pth (image_encoder.*, prompt_encoder.*, mask_decoder.*; float16; the loader casts to
float32), metrics.json (loss curve, held-out numbers). The evaluation reloads the saved
files with `panosamic.from_pretrained` and runs the bundled 1024x512 examples.
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

import cv2
import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from devtools import scenes  # noqa: E402
from devtools.training import LossCurve, set_lr, warmup_cosine  # noqa: E402
from panosamic import build_model  # noqa: E402
from panosamic.config import resolve_config  # noqa: E402
from panosamic.encoding import encode_depth  # noqa: E402

REFERENCE_CONFIG = ROOT.parent / "shared" / "reference" / "tiny_rgbdn_dual" / "config.json"
# The reference architecture, inlined so the script also runs where shared/ is absent.
CONFIG = {
    "image_size": 256, "patch_size": 16, "encoder_embed_dim": 96, "encoder_depth": 4,
    "encoder_num_heads": 4, "encoder_global_attn_indexes": [1, 3], "encoder_window_size": 6,
    "prompt_embed_dim": 64,
    "mask_decoder": {"transformer_depth": 2, "mlp_dim": 128, "num_heads": 4, "iou_head_hidden_dim": 64},
    "modalities": ["image", "depth", "normals"], "num_classes": 13, "dual_view_fusion": True,
    "channel_attention": {"moving_attention": True, "window_size": 8, "stride": 4, "aggregation": "max"},
    "spatial_attention": {"moving_attention": True, "window_size": 8, "stride": 4, "aggregation": "none"},
}
MAX_DEPTH = 10.0
NUM_CLASSES = 13
RENDER_WIDTH = 512  # rendered at 2x the model ERP and area-averaged, like the Predictor shrinks inputs
SEED_BASE = 1000  # training seeds: SEED_BASE + i; the examples use 11..66
ALL_MODALITIES = ("image", "depth", "normals")  # the order of the rendered layers in the pool
#: Where each modality set's demo lives (the app and the README name them the same way).
DEMO_FOLDERS = {("image",): "demo-rgb", ("image", "depth"): "demo-rgbd", ALL_MODALITIES: "demo"}


# --------------------------------------------------------------------------- data
def _render_one(job: Tuple[str, int]) -> Dict[str, np.ndarray]:
    kind, seed = job
    pano = scenes.render(scenes.make_scene(kind, seed), RENDER_WIDTH)
    layers = np.stack([pano.rgb.astype(np.float32), encode_depth(pano.depth, MAX_DEPTH),
                       pano.normals.astype(np.float32)])  # (3, H, W, 3) in 0..255
    x = torch.from_numpy(layers).permute(0, 3, 1, 2)
    x = F.avg_pool2d(x, 2)  # == F.interpolate(mode="area") for an exact 2x shrink
    return {"x": x.to(torch.float16).numpy(), "labels": pano.labels.copy()}


def training_jobs(n: int) -> List[Tuple[str, int]]:
    held_out = {seed for _, seed in scenes.EXAMPLES.values()}
    jobs = [(scenes.SCENE_KINDS[i % len(scenes.SCENE_KINDS)], SEED_BASE + i) for i in range(n)]
    assert not held_out & {s for _, s in jobs}, "training seeds overlap the held-out examples"
    return jobs


def render_pool(n: int, workers: int) -> List[Dict[str, np.ndarray]]:
    jobs = training_jobs(n)
    if workers > 1:
        with Pool(workers) as pool:
            return pool.map(_render_one, jobs, chunksize=4)
    return [_render_one(j) for j in jobs]


def _rotate_normals(n_enc: torch.Tensor, angle: float, flip: bool) -> torch.Tensor:
    """Encoded normals (3, H, W) 0..255: mirror y (flip) then rotate about z by `angle`."""
    v = n_enc / 127.5 - 1.0
    x, y, z = v[0], v[1], v[2]
    if flip:
        y = -y
    c, s = math.cos(angle), math.sin(angle)
    x, y = c * x - s * y, s * x + c * y
    return (torch.stack([x, y, z]) + 1.0) * 127.5


def augment(sample: Dict[str, np.ndarray], rng: np.random.Generator,
            modalities: Tuple[str, ...] = ALL_MODALITIES) -> Tuple[torch.Tensor, np.ndarray]:
    """Random yaw (roll by an even number of render pixels) and horizontal flip, brightness jitter.
    Returns the (M, 3, h, w) layers of `modalities` and the (2h, 2w) labels."""
    x = torch.from_numpy(sample["x"]).float()  # (3, 3, h, w)
    lab = sample["labels"]  # (2h, 2w)
    w = x.shape[-1]
    flip = bool(rng.random() < 0.5)
    shift = int(rng.integers(0, w))  # model pixels
    if flip:
        x = torch.flip(x, dims=[-1])
        lab = lab[:, ::-1]
    x = torch.roll(x, shift, dims=-1)
    lab = np.roll(lab, 2 * shift, axis=1)
    # Content moves from longitude lon to lon + d; ray(lon) = (cos, -sin) in xy, so directions
    # (and the normals, which are in the "image centre = +x" frame) rotate by -d about z.
    angle = -2 * math.pi * shift / w
    x[2] = _rotate_normals(x[2], angle, flip)
    x[0] = (x[0] * float(rng.uniform(0.85, 1.15)) + float(rng.uniform(-12, 12))).clamp(0, 255)
    keep = [ALL_MODALITIES.index(m) for m in modalities]
    return x[keep], np.ascontiguousarray(lab)


def components(labels: np.ndarray, min_area: int) -> List[np.ndarray]:
    """Boolean masks of the connected components of every class, merged across the left/right seam."""
    out = []
    for c in np.unique(labels):
        n, cc = cv2.connectedComponents((labels == c).astype(np.uint8), connectivity=4)
        parent = list(range(n))

        def find(a):
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        left, right = cc[:, 0], cc[:, -1]
        for a, b in zip(left[(left > 0) & (right > 0)], right[(left > 0) & (right > 0)]):
            ra, rb = find(int(a)), find(int(b))
            if ra != rb:
                parent[ra] = rb
        roots = np.array([find(i) for i in range(n)])
        merged = roots[cc]
        for r in np.unique(roots[1:]):
            m = (merged == r) & (cc > 0)
            if m.sum() >= min_area:
                out.append(m)
    return out


def sample_click(mask: np.ndarray, rng: np.random.Generator) -> Tuple[int, int]:
    """A pixel (x, y) inside `mask`, preferably not on its border (SAM samples uniformly inside)."""
    dist = cv2.distanceTransform(np.pad(mask.astype(np.uint8), 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    ys, xs = np.nonzero(dist >= min(3.0, dist.max()))
    i = int(rng.integers(len(ys)))
    return int(xs[i]), int(ys[i])


# --------------------------------------------------------------------------- losses
def latitude_weights(h: int, w: int) -> torch.Tensor:
    lat = (0.5 - (torch.arange(h, dtype=torch.float32) + 0.5) / h) * math.pi
    return torch.cos(lat)[:, None].expand(h, w)


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    p = logits.sigmoid().flatten(-2)
    t = target.flatten(-2)
    return 1.0 - (2 * (p * t).sum(-1) + 1.0) / (p.sum(-1) + t.sum(-1) + 1.0)


def prompt_losses(model, embeddings: torch.Tensor, labels: np.ndarray, rng: np.random.Generator,
                  clicks: int) -> Tuple[torch.Tensor, Dict[str, float]]:
    """Best-of-3 BCE + dice and IoU-head MSE for `clicks` single positive clicks."""
    H2, W2 = labels.shape  # render size (2x the model ERP)
    h, w = model.erp_size
    comps = components(labels, min_area=48)
    if not comps:
        return embeddings.sum() * 0, {}
    area = np.array([m.sum() for m in comps], dtype=np.float64)
    p = np.sqrt(area) / np.sqrt(area).sum()
    M = len(model.modalities)
    total, ious, n = 0.0, [], 0
    groups: Dict[int, List[Tuple[np.ndarray, Tuple[float, float]]]] = {0: [], 1: []}
    for k in rng.choice(len(comps), size=clicks, p=p):
        mask = comps[k]
        x2, y2 = sample_click(mask, rng)
        x, y = x2 / 2.0, y2 / 2.0  # model-ERP pixels (what the Predictor passes)
        view = 1 if min((x + w / 2) % w, w - (x + w / 2) % w) > min(x, w - x) else 0
        target = torch.from_numpy(mask.astype(np.float32))
        if view == 1:
            x = (x + w / 2) % w
            target = torch.roll(target, W2 // 2, dims=-1)
        groups[view].append((F.avg_pool2d(target[None, None], 2)[0, 0], (x, y)))
    for view, items in groups.items():
        if not items:
            continue
        targets = torch.stack([t for t, _ in items])[:, None]  # (N, 1, h, w) soft
        pts = torch.tensor([[xy] for _, xy in items], dtype=torch.float32)  # (N, 1, 2)
        lab = torch.ones(len(items), 1, dtype=torch.int64)
        low, iou_pred = model.decode_prompts(embeddings[view * M][None], (pts, lab), None, None, True)
        masks = model.postprocess(low, (h, w))  # (N, 3, h, w), in this view's frame
        bce = F.binary_cross_entropy_with_logits(masks, targets.expand_as(masks), reduction="none").mean((-2, -1))
        loss = bce + dice_loss(masks, targets.expand_as(masks))  # (N, 3)
        best = loss.min(dim=1).values
        with torch.no_grad():
            pred = masks > 0
            tb = targets > 0.5
            inter = (pred & tb).flatten(-2).sum(-1).float()
            union = (pred | tb).flatten(-2).sum(-1).float().clamp(min=1)
            iou_true = inter / union
        total = total + best.sum() + F.mse_loss(iou_pred, iou_true, reduction="none").mean(1).sum()
        ious += iou_true.max(dim=1).values.tolist()
        n += len(items)
    return total / n, {"prompt_best_iou": float(np.mean(ious))}


# --------------------------------------------------------------------------- saving / evaluation
def save_checkpoint(model, out: Path, config: Dict) -> Dict[str, int]:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    sd = model.state_dict()
    pano = {k: v.detach().to(torch.float16).contiguous() for k, v in sd.items()
            if k.startswith(("feature_fuser.", "semantic_decoder."))}
    sam = {k: v.detach().to(torch.float16).contiguous() for k, v in sd.items()
           if k.startswith(("image_encoder.", "prompt_encoder.", "mask_decoder."))}
    assert len(pano) + len(sam) == len(sd), "unexpected state-dict keys"
    save_file(pano, str(out / "model.safetensors"))
    torch.save(sam, out / "sam.pth")
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return {f.name: f.stat().st_size for f in sorted(out.iterdir()) if f.is_file()}


def evaluate_checkpoint(folder: Path, clicks: int = 50, seed: int = 0) -> Dict:
    """Held-out numbers on the bundled 1024x512 examples, through `panosamic.from_pretrained`."""
    import panosamic
    from panosamic import io, metrics

    predictor = panosamic.from_pretrained(str(folder), device="cpu")
    rng = np.random.default_rng(seed)
    per_example, preds, gts, click_ious, top_ious = {}, [], [], [], []
    names = io.list_examples()
    prompt_items = []
    for name in names:
        paths = io.example_paths(name)
        image = io.load_image(paths["image"])
        predictor.set_panorama(image, io.load_depth(paths["depth"]), io.load_normals(paths["normals"]))
        gt = io.load_labels(paths["labels"]).astype(np.int64)
        pred = predictor.labels
        preds.append(pred)
        gts.append(gt)
        per_example[name] = {
            "miou": metrics.mean_iou(pred, gt, NUM_CLASSES),
            "miou_weighted": metrics.mean_iou(pred, gt, NUM_CLASSES, weighted=True),
            "pixel_accuracy": metrics.pixel_accuracy(pred, gt, NUM_CLASSES),
        }
        prompt_items.append((name, predictor.state, gt))
    stacked_p, stacked_g = np.concatenate(preds, 0), np.concatenate(gts, 0)
    overall = {}
    for weighted in (False, True):
        # the weights of an (H, W) map come from its rows: stacking keeps each example's latitudes
        cm = sum(metrics.confusion_matrix(p, g, NUM_CLASSES, weighted=weighted) for p, g in zip(preds, gts))
        iou = metrics.iou_from_confusion(cm)
        sfx = "_weighted" if weighted else ""
        overall["miou" + sfx] = float(np.nanmean(iou))
        overall["pixel_accuracy" + sfx] = float(np.trace(cm) / cm.sum())
        overall["per_class_iou" + sfx] = {c: (None if np.isnan(v) else round(float(v), 4))
                                          for c, v in zip(predictor.dataset.classes, iou)}
    overall["mean_of_example_miou"] = float(np.mean([v["miou"] for v in per_example.values()]))
    del stacked_p, stacked_g
    # prompts: `clicks` random single clicks over the examples, each inside a ground-truth component
    comps = {name: components(gt, min_area=400) for name, _, gt in prompt_items}
    for i in range(clicks):
        name, state, gt = prompt_items[i % len(prompt_items)]
        predictor.set_state(state)
        cs = comps[name]
        area = np.array([m.sum() for m in cs], dtype=np.float64)
        mask = cs[int(rng.choice(len(cs), p=np.sqrt(area) / np.sqrt(area).sum()))]
        x, y = sample_click(mask, rng)
        masks, scores, _ = predictor.predict(point_coords=[[x, y]], point_labels=[1])
        ious = [float((m & mask).sum() / max(1, (m | mask).sum())) for m in masks]
        click_ious.append(max(ious))
        top_ious.append(ious[int(np.argmax(scores))])
    return {"overall": overall, "per_example": per_example,
            "prompt": {"clicks": clicks, "best_of_3_iou": float(np.mean(click_ious)),
                       "top_score_iou": float(np.mean(top_ious))}}


def _shown_path(path: Path) -> str:
    """A path as metrics.json records it: relative to the repository when inside it."""
    path = path.resolve()
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modalities", default="image,depth,normals",
                    help="comma-separated: image | image,depth | image,depth,normals (the default)")
    ap.add_argument("--out", type=Path, default=None,
                    help="default: assets/demo, assets/demo-rgb or assets/demo-rgbd by --modalities")
    ap.add_argument("--pool", type=int, default=300, help="rendered training scenes (all kinds, round robin)")
    ap.add_argument("--steps", type=int, default=2400)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--warmup", type=int, default=60)
    ap.add_argument("--clicks", type=int, default=6, help="prompt clicks per step")
    ap.add_argument("--prompt-weight", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; 1 is ~3x faster than 2 when other processes share the 2 cores")
    ap.add_argument("--render-workers", type=int, default=2)
    ap.add_argument("--eval-clicks", type=int, default=50)
    ap.add_argument("--eval-only", action="store_true")
    args = ap.parse_args(argv)
    modalities = tuple(m.strip() for m in args.modalities.split(",") if m.strip())
    if modalities not in DEMO_FOLDERS:
        ap.error(f"--modalities must be one of {', '.join(','.join(k) for k in DEMO_FOLDERS)}")
    if args.out is None:
        args.out = ROOT / "assets" / DEMO_FOLDERS[modalities]
    torch.set_num_threads(args.threads)

    if args.eval_only:
        print(json.dumps(evaluate_checkpoint(args.out, args.eval_clicks), indent=1))
        return 0

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    config = resolve_config({**CONFIG, "modalities": list(modalities)})
    if REFERENCE_CONFIG.is_file() and modalities == ALL_MODALITIES:
        assert resolve_config(REFERENCE_CONFIG) == config, "the reference config changed"
    t_start = time.perf_counter()
    pool = render_pool(args.pool, workers=args.render_workers)
    t_render = time.perf_counter() - t_start
    print(f"rendered {len(pool)} scenes at {RENDER_WIDTH}x{RENDER_WIDTH // 2} in {t_render:.1f} s", flush=True)

    counts = np.bincount(np.concatenate([s["labels"][::4, ::4].ravel() for s in pool]), minlength=NUM_CLASSES)
    freq = counts / counts.sum()
    class_w = np.where(freq > 0, 1.0 / np.sqrt(np.maximum(freq, 1e-6)), 0.0)
    class_w = np.clip(class_w / (class_w * freq).sum(), 0.0, 5.0)
    class_w_t = torch.tensor(class_w, dtype=torch.float32)
    print("class weights", np.round(class_w, 2).tolist(), flush=True)

    model = build_model(config).train()
    h, w = model.erp_size
    lat_w = latitude_weights(2 * h, 2 * w)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.999))

    lr_at = warmup_cosine(args.lr, args.warmup, args.steps)
    curve = LossCurve(lr_at, args.steps, every=50)
    order = np.concatenate([rng.permutation(len(pool)) for _ in range(args.steps // len(pool) + 1)])
    t_train = time.perf_counter()
    for step in range(args.steps):
        set_lr(opt, lr_at(step))
        x, labels = augment(pool[int(order[step])], rng, modalities)
        y = torch.from_numpy(labels.astype(np.int64))
        embeddings, taps = model.encode(model.preprocess(x))
        logits = model.postprocess(model.decode_semantics(model.fuse(taps)), (2 * h, 2 * w))
        ce_px = F.cross_entropy(logits, y[None], weight=class_w_t, reduction="none")[0]
        ce = (ce_px * lat_w).sum() / (lat_w * class_w_t[y]).sum()
        p_loss, p_info = prompt_losses(model, embeddings, labels, rng, args.clicks)
        loss = ce + args.prompt_weight * p_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            acc = float((logits[0].argmax(0) == y).float().mean())
        curve.add(step, loss=loss.item(), ce=ce.item(), prompt=float(p_loss.detach()), acc=acc,
                  piou=p_info.get("prompt_best_iou", float("nan")))
    t_train = time.perf_counter() - t_train
    model.eval()
    sizes = save_checkpoint(model, args.out, config)
    print(f"trained {args.steps} steps in {t_train:.0f} s; saved {args.out}: {sizes}", flush=True)

    t_eval = time.perf_counter()
    results = evaluate_checkpoint(args.out, args.eval_clicks)
    t_eval = time.perf_counter() - t_eval
    report = {
        "recipe": {k: (_shown_path(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "render_width": RENDER_WIDTH, "max_depth": MAX_DEPTH,
        "train_seeds": f"{SEED_BASE}..{SEED_BASE + args.pool - 1} (kinds round robin)",
        "class_weights": [round(float(c), 3) for c in class_w],
        "torch": torch.__version__,
        "seconds": {"render": round(t_render, 1), "train": round(t_train, 1), "eval": round(t_eval, 1),
                    "total": round(time.perf_counter() - t_start, 1)},
        "files_bytes": sizes,
        "curve": curve.rows,
        "held_out": results,
    }
    (args.out / "metrics.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    o = results["overall"]
    print(f"held-out (6 examples, 1024x512): mIoU {o['miou']:.3f} (sphere-weighted {o['miou_weighted']:.3f}), "
          f"pixel acc. {o['pixel_accuracy']:.3f} (weighted {o['pixel_accuracy_weighted']:.3f}); "
          f"prompt IoU best-of-3 {results['prompt']['best_of_3_iou']:.3f}, "
          f"top-score {results['prompt']['top_score_iou']:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
