"""A real monocular depth model through Hugging Face ``transformers`` (perspective views).

Default: Depth Anything V2 Metric Indoor Small,
``depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf`` (DINOv2 ViT-S/14 + DPT head,
~25 M parameters, 99 MB of float32 safetensors; fine-tuned for metric depth on Hypersim,
predicting up to ``max_depth`` = 20 m; Apache-2.0 like every *Small* Depth Anything V2
checkpoint, whereas Base/Large are CC BY-NC 4.0). It predicts, for a perspective photo, depth
along the optical axis (z-depth) in metres; :mod:`.fusion` turns that into ray distances.

Loading is ``AutoImageProcessor.from_pretrained`` + ``AutoModelForDepthEstimation.from_pretrained``
with the Hub id, so the Hugging Face cache (``HF_HOME`` / ``HF_HUB_CACHE``) is used first and,
online, the files are downloaded once. ``HF_HUB_OFFLINE=1`` or ``local_files_only=True`` keeps
it to the cache. The default model is pinned to the revision :data:`DEFAULT_REVISION`.

Any other ``depth_anything`` checkpoint loads the same way. A *relative* one
(``config.depth_estimation_type == "relative"``) predicts relative inverse depth; its inverse is
used as relative depth (``metric`` False: the fusion then aligns the views on the front one, and
the result has no unit; the shift of an affine-invariant disparity is ignored, so this is
approximate).
"""

from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch

from ..errors import InputError
from .views import ViewSet

__all__ = ["DEFAULT_MODEL", "DEFAULT_REVISION", "LICENCES", "TransformersDepthEstimator", "small_config"]

DEFAULT_MODEL = "depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf"
#: The Hub commit of DEFAULT_MODEL this code was written against ("Add minimal transformers version
#: requirement (#2)", the head of main when checked).
DEFAULT_REVISION = "8078d68a9c75a972131914f6afd0c1723be0da7f"

_NC = "CC-BY-NC-4.0 (non-commercial use only)"
#: Licences of the Depth Anything V2 checkpoints, as their publishers state them.
LICENCES = {
    "depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf": "Apache-2.0",
    "depth-anything/Depth-Anything-V2-Metric-Outdoor-Small-hf": "Apache-2.0",
    "depth-anything/Depth-Anything-V2-Small-hf": "Apache-2.0",
    "depth-anything/Depth-Anything-V2-Metric-Indoor-Base-hf": _NC,
    "depth-anything/Depth-Anything-V2-Metric-Outdoor-Base-hf": _NC,
    "depth-anything/Depth-Anything-V2-Metric-Indoor-Large-hf": _NC,
    "depth-anything/Depth-Anything-V2-Metric-Outdoor-Large-hf": _NC,
    "depth-anything/Depth-Anything-V2-Base-hf": _NC,
    "depth-anything/Depth-Anything-V2-Large-hf": _NC,
}


def small_config():
    """The architecture of :data:`DEFAULT_MODEL`, written out by hand (a ``DepthAnythingConfig``).

    From the published sizes of Depth Anything V2 Small (ViT-S/14 DINOv2: hidden 384, 12
    layers, 6 heads, features from layers 3, 6, 9, 12; DPT neck 48/96/192/384, fusion 64, head
    32) with the metric-indoor head (``max_depth`` 20 m). Used to time the real-size network
    with random weights where the checkpoint cannot be downloaded; not a substitute for it.
    """
    from transformers import DepthAnythingConfig, Dinov2Config

    backbone = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4,
                            image_size=518, patch_size=14, out_indices=[3, 6, 9, 12], reshape_hidden_states=False)
    return DepthAnythingConfig(backbone_config=backbone, patch_size=14, reassemble_hidden_size=384,
                               reassemble_factors=[4, 2, 1, 0.5], neck_hidden_sizes=[48, 96, 192, 384],
                               fusion_hidden_size=64, head_hidden_size=32, head_in_index=-1,
                               depth_estimation_type="metric", max_depth=20)


class TransformersDepthEstimator:
    """A ``transformers`` depth-estimation checkpoint as a :class:`~.base.ViewDepthEstimator`.

    Attributes: ``name`` (the Hub id or folder), ``licence``, ``metric``, ``view_size`` (the
    processor's input size: 518 for Depth Anything), ``note`` (None), ``device``, ``model``,
    ``processor``. ``batch_size`` views go through the model at once (default 4 on a CPU, 16
    elsewhere; memory is bounded by it, not by the panorama's size).
    """

    note: Optional[str] = None
    fallback = False  # load_estimator("auto") sets True on the demo it fell back to
    toy = False  # a real model (see DemoDepthEstimator.toy)

    def __init__(self, model_id: str = DEFAULT_MODEL, revision: Optional[str] = None,
                 device: Union[str, torch.device, None] = "cpu", local_files_only: bool = False,
                 cache_dir: Optional[str] = None, batch_size: Optional[int] = None, model=None, processor=None):
        from ..device import resolve_device

        self.device = resolve_device(device)
        if revision is None and model_id == DEFAULT_MODEL:
            revision = DEFAULT_REVISION
        if model is None or processor is None:
            try:
                from transformers import AutoImageProcessor, AutoModelForDepthEstimation
            except ImportError as e:  # pragma: no cover - transformers is in requirements.txt
                raise ImportError("the real depth model needs `transformers` (pip install -r requirements.txt)") from e
            kw = dict(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
            processor = processor or AutoImageProcessor.from_pretrained(model_id, **kw)
            model = model or AutoModelForDepthEstimation.from_pretrained(model_id, **kw)
        self.model = model.to(self.device).eval()
        self.processor = processor
        self.name = model_id
        self.revision = revision
        self.licence = LICENCES.get(model_id, "unknown: see the model card on the Hugging Face Hub")
        cfg = self.model.config
        self.metric = getattr(cfg, "depth_estimation_type", "relative") == "metric"
        size = getattr(processor, "size", None)  # a dict, or transformers 5's SizeDict
        height = size.get("height") if isinstance(size, dict) else getattr(size, "height", None)
        self.view_size = int(height or 518)
        # views per forward pass: 4 on a CPU (no gain from more, less memory), all 14 on a GPU
        self.batch_size = max(1, int(batch_size or (4 if self.device.type == "cpu" else 16)))

    @torch.inference_mode()
    def predict_views(self, images: np.ndarray, views: ViewSet) -> np.ndarray:
        """``(N, s, s, 3)`` uint8 views -> ``(N, s, s)`` float32 z-depth (metres if ``metric``)."""
        import torch.nn.functional as F

        imgs = np.asarray(images)
        if imgs.ndim != 4 or imgs.shape[-1] != 3:
            raise InputError(f"expected (N, s, s, 3) views, got shape {imgs.shape}")
        n, s = imgs.shape[0], imgs.shape[1]
        dtype = next(self.model.parameters()).dtype
        out = []
        for i in range(0, n, self.batch_size):
            chunk = [imgs[k] for k in range(i, min(n, i + self.batch_size))]
            inputs = self.processor(images=chunk, return_tensors="pt")
            pred = self.model(pixel_values=inputs["pixel_values"].to(self.device, dtype)).predicted_depth
            pred = F.interpolate(pred[:, None].float(), size=(s, imgs.shape[2]), mode="bilinear",
                                 align_corners=False)[:, 0]
            out.append(pred.cpu().numpy())
        z = np.concatenate(out).astype(np.float32)
        if not self.metric:  # relative inverse depth -> relative depth
            z = np.where(z > 1e-6, 1.0 / np.maximum(z, 1e-6), 0.0).astype(np.float32)
        return z
