"""Access to `segment_anything`'s modules without its torchvision-only extras.

`segment_anything/__init__.py` eagerly imports its predictor and automatic mask
generator, which need torchvision. PanoSAMic only uses the modeling modules and
`utils.amg` (pure torch), so where torchvision is missing or broken (there is no
CPU build on PyPI that matches every torch) we import those submodules without
running the package's `__init__`.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types


def _load_segment_anything() -> None:
    try:
        import segment_anything  # noqa: F401  (full package, torchvision works)
        return
    except ImportError:
        pass
    spec = importlib.util.find_spec("segment_anything")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "segment_anything is not installed: run `pip install segment-anything==1.0` "
            "(or `pip install -r requirements.txt`)."
        )
    # A bare package object: submodules import normally, __init__ is skipped.
    package = types.ModuleType("segment_anything")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    package.__file__ = spec.origin
    sys.modules["segment_anything"] = package


_load_segment_anything()

modeling = importlib.import_module("segment_anything.modeling")
amg = importlib.import_module("segment_anything.utils.amg")

ImageEncoderViT = modeling.ImageEncoderViT
PromptEncoder = modeling.PromptEncoder
MaskDecoder = modeling.MaskDecoder
TwoWayTransformer = modeling.TwoWayTransformer
LayerNorm2d = importlib.import_module("segment_anything.modeling.common").LayerNorm2d


def batched_nms(boxes, scores, idxs, iou_threshold: float):
    """torchvision's `batched_nms` where it works, else an equivalent pure-torch version.

    boxes (N, 4) XYXY, scores (N,), idxs (N,) category per box. Returns kept indices
    sorted by decreasing score.
    """
    try:
        from torchvision.ops.boxes import batched_nms as tv_batched_nms

        return tv_batched_nms(boxes, scores, idxs, iou_threshold)
    except Exception:  # torchvision missing, or its compiled ops do not match this torch
        pass
    import torch

    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    # Offset boxes per category so that boxes of different categories never overlap.
    offsets = idxs.to(boxes) * (boxes.max() + 1)
    b = boxes + offsets[:, None]
    order = scores.argsort(descending=True)
    b = b[order]
    area = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(b[:, None, :2], b[None, :, :2])
    rb = torch.minimum(b[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    iou = inter / (area[:, None] + area[None, :] - inter).clamp(min=1e-12)
    keep = torch.ones(len(order), dtype=torch.bool, device=boxes.device)
    for i in range(len(order)):
        if keep[i]:
            suppress = iou[i] > iou_threshold
            suppress[: i + 1] = False
            keep &= ~suppress
    return order[keep]
