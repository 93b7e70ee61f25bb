"""`Predictor`: encode a panorama once, then segment it and answer prompts from the cache.

Like `segment_anything.SamPredictor`: `set_panorama` runs the heavy encoder and fusion
once; `predict` decodes point/box prompts on the cached SAM embeddings in milliseconds,
on either of the two views so that prompts near the left/right seam get seamless masks.
"""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from .datasets import Dataset, dataset_for_num_classes
from .errors import InputError
from .eta import Progress, ProgressTracker, encoder_flops, encoder_passes, record_rate
from .model import PanoSAMic
from .model.attention import ATTENTION_MODES

ArrayLike = Union[np.ndarray, "torch.Tensor", Any]
ProgressFn = Callable[[str], None]
ProgressEventFn = Callable[["Progress"], None]

MASK_THRESHOLD = 0.0  # SAM's: mask logits above it are foreground

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def default_device() -> torch.device:
    """cuda > mps > cpu."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(device: Optional[Union[str, torch.device]] = None) -> torch.device:
    """A torch device that exists here: None or "auto" picks cuda > mps > cpu; a named one
    that this machine or torch build lacks is an InputError that says what to use instead."""
    if device is None or str(device) == "auto":
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"device {device!r} is not a device name: use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device}: CUDA is not available on this machine/torch build; use cpu or auto")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(f"device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError(f"device {device}: MPS is not available here; use cpu or auto")
    return dev


def encode_depth(depth_m: np.ndarray, max_depth: float) -> np.ndarray:
    """Metric depth (H, W) -> the model's depth image (H, W, 3) float32 in 0..255.

    `255 * (1 - clip(d, 0, T) / T)`, 0 where the depth is invalid (0 or not finite), so
    near is bright and far or unknown is black. T = `max_depth` in metres.
    """
    d = np.asarray(depth_m, dtype=np.float32)
    valid = np.isfinite(d) & (d > 0)
    d = np.where(valid, d, 0.0).astype(np.float32)
    enc = np.float32(255.0) * (np.float32(1.0) - np.clip(d, 0.0, max_depth) / np.float32(max_depth))
    enc = (enc * valid).astype(np.float32)
    return np.repeat(enc[..., None], 3, axis=-1)


@dataclass
class PanoramaState:
    """What `set_panorama` caches: enough to segment and prompt without re-encoding.

    embeddings: (V*M, P, g, g) SAM neck embeddings, [view][modality] order, on the model's device.
    semantic_logits: (1, K, 4g, 4g) float32 logits over the padded square (small; the
        input-size logits are derived from them on demand).
    input_size: (H, W) of the panorama as given.
    """

    embeddings: torch.Tensor
    semantic_logits: torch.Tensor
    input_size: Tuple[int, int]
    timings: Dict[str, float] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in (self.embeddings, self.semantic_logits))


class Predictor:
    """Stateful facade over a `PanoSAMic` network for one panorama at a time.

    Args:
        model: a built network with weights loaded (see `build_model`, `load_weights`).
        device: "cuda", "cuda:N", "mps", "cpu", or None/"auto" for the best available
            (cuda > mps > cpu); one this machine lacks is a clear InputError.
        max_depth: T in metres, the depth that maps to 0 in the depth image. The released
            models were trained with the 99.5 % inlier depth of their training split, which
            the checkpoints do not ship; 10 m suits indoor rooms.
        dtype: "float32" (default), "bfloat16" or "float16": autocast precision on CUDA
            (and bfloat16 on CPU); weights stay float32.
        encoder_chunk_size: how many of the V*M images go through the ViT at once. None
            picks all at once on CUDA and one at a time elsewhere: on a CPU batching gains
            nothing and one at a time lowers peak memory (vit_b, two images: 3.8 GB instead
            of 6.3 GB). 1 also helps small GPUs.
        attention: the ViT's attention kernel (`panosamic.model.attention`): "auto" (default:
            SAM's arithmetic in one buffer, bit-identical, for float32 off CUDA; PyTorch's
            fused scaled_dot_product_attention on CUDA and for bfloat16/float16), "sam"
            (segment_anything's own code), "lean" or "sdpa". Sets it on `model`.
        compile: `torch.compile` the ViT blocks (the first panorama then takes longer).
    """

    def __init__(self, model: PanoSAMic, device: Optional[Union[str, torch.device]] = None,
                 max_depth: float = 10.0, dtype: Optional[Union[str, torch.dtype]] = None,
                 encoder_chunk_size: Optional[int] = None, attention: str = "auto",
                 compile: bool = False) -> None:
        if not isinstance(model, PanoSAMic):
            raise TypeError(f"Predictor needs a PanoSAMic model (panosamic.build_model), got {type(model).__name__}")
        if not (max_depth > 0 and np.isfinite(max_depth)):
            raise InputError(f"max_depth must be a positive number of metres, got {max_depth}")
        self.device = resolve_device(device)
        self.dtype = self._resolve_dtype(dtype)
        if attention not in ATTENTION_MODES:
            raise InputError(f"attention must be one of {', '.join(ATTENTION_MODES)}, got {attention!r}")
        self.model = model.to(self.device).eval()
        self.attention = attention
        self.model.image_encoder.set_attention(attention)
        self.compiled = bool(compile)
        if compile:
            self.model.image_encoder.compile_blocks()
        self.max_depth = float(max_depth)
        self.encoder_chunk_size = encoder_chunk_size if encoder_chunk_size is not None else (
            None if self.device.type == "cuda" else 1)
        self.dataset: Dataset = dataset_for_num_classes(model.config["num_classes"])
        self.encoder_calls = 0  # how many times the ViT ran: prompts never add to it
        self.last_view: Optional[int] = None
        self.reset_panorama()

    # --- configuration -------------------------------------------------------------------------
    def _resolve_dtype(self, dtype: Optional[Union[str, torch.dtype]]) -> torch.dtype:
        if dtype is None:
            return torch.float32
        if isinstance(dtype, torch.dtype):
            resolved = dtype
        elif str(dtype).lower() in DTYPES:
            resolved = DTYPES[str(dtype).lower()]
        else:
            raise InputError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
        if resolved == torch.float16 and self.device.type != "cuda":
            raise InputError("float16 runs on CUDA only; use float32 or bfloat16 on this device")
        return resolved

    def _autocast(self):
        if self.dtype == torch.float32 or self.device.type not in ("cuda", "cpu"):
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @property
    def required_modalities(self) -> Tuple[str, ...]:
        """The inputs this checkpoint needs, in order, e.g. ("image", "depth", "normals")."""
        return self.model.modalities

    # --- state ---------------------------------------------------------------------------------
    def reset_panorama(self) -> None:
        """Forgets the current panorama."""
        self._state: Optional[PanoramaState] = None
        self._logits: Optional[np.ndarray] = None
        self._labels: Optional[np.ndarray] = None

    @property
    def is_panorama_set(self) -> bool:
        return self._state is not None

    @property
    def state(self) -> PanoramaState:
        """The cached embeddings and logits of the current panorama (to keep or share)."""
        return self._require_state()

    def set_state(self, state: PanoramaState) -> None:
        """Restores a cached panorama (from `state`) without re-encoding."""
        expected = (self.model.num_views * len(self.required_modalities), self.model.config["prompt_embed_dim"])
        if tuple(state.embeddings.shape[:2]) != expected:
            raise InputError("this cached panorama was encoded by a different checkpoint; run it again")
        self.reset_panorama()
        self._state = PanoramaState(state.embeddings.to(self.device), state.semantic_logits,
                                    tuple(state.input_size), dict(state.timings))

    def _require_state(self) -> PanoramaState:
        if self._state is None:
            raise InputError("no panorama yet: call set_panorama(image, ...) first")
        return self._state

    @property
    def timings(self) -> Dict[str, float]:
        """Seconds per stage of the last `set_panorama`: preprocess, encode, fuse, decode."""
        return dict(self._state.timings) if self._state else {}

    @property
    def input_size(self) -> Tuple[int, int]:
        """(H, W) of the current panorama."""
        return self._require_state().input_size

    # --- encoding ------------------------------------------------------------------------------
    def set_panorama(self, image: ArrayLike, depth: Optional[ArrayLike] = None,
                     normals: Optional[ArrayLike] = None, progress: Optional[ProgressFn] = None,
                     on_progress: Optional[ProgressEventFn] = None) -> None:
        """Encodes a panorama and computes its semantic segmentation.

        Args:
            image: (H, W, 3) RGB, uint8 or float in 0..255, equirectangular (W = 2H).
            depth: (H, W) metres; 0 or non-finite marks invalid pixels. Needed by RGB-D models.
            normals: (H, W, 3) RGB-encoded normals in 0..255 (centre 127.5), or unit vectors
                in -1..1 (encoded here). Needed by RGB-D-N models.
            progress: optional callable, called once per stage with its name: "preprocess",
                "encode", "fuse", "decode".
            on_progress: optional callable that gets `panosamic.eta.Progress` events: at each
                stage start, after every ViT block (done/total blocks, seconds elapsed and
                left), and once at the end with stage "done".

        Any 2:1 size works: inputs are resized to the model's ERP and results back.
        """
        step = progress or (lambda stage: None)
        timings: Dict[str, float] = {}
        self.model.image_encoder.set_attention(self.attention)  # the model may be shared with another Predictor
        cfg = self.model.config
        per_image = encoder_flops(cfg)
        tracker = ProgressTracker(per_image["blocks"], encoder_passes(cfg), on_progress) if on_progress else None

        def on_block(done: int, total: int) -> None:
            self._sync()  # CUDA runs ahead of Python: report blocks that really finished
            tracker.block(done, total)

        @contextmanager
        def stage(name: str, autocast: bool = True):
            """Announces a stage, runs it (under autocast) and records its seconds."""
            step(name)
            if tracker is not None:
                tracker.stage(name)
            t = time.perf_counter()
            with self._autocast() if autocast else nullcontext():
                yield
            self._sync()
            timings[name] = time.perf_counter() - t

        with stage("preprocess", autocast=False):
            stack, input_size = self._prepare(image, depth, normals)
            with torch.inference_mode():
                x = self.model.preprocess(stack.to(self.device))
        with torch.inference_mode():
            with stage("encode"):
                embeddings, taps = self.model.encode(x, self.encoder_chunk_size,
                                                     on_block=on_block if tracker is not None else None)
            self.encoder_calls += 1
            record_rate(self.device, self.dtype, per_image["total"] * x.shape[0], timings["encode"], self.attention)
            with stage("fuse"):
                fused = self.model.fuse(taps)
            del taps  # the large tapped maps are not needed once fused
            with stage("decode"):
                logits = self.model.decode_semantics(fused)
        self.reset_panorama()
        self._state = PanoramaState(embeddings.float(), logits.float().cpu(), input_size, timings)
        if tracker is not None:
            tracker.finish()

    def _prepare(self, image: ArrayLike, depth: Optional[ArrayLike],
                 normals: Optional[ArrayLike]) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Validates inputs and returns the (M, 3, S/2, S) float32 stack in 0..255."""
        img = _as_array(image, "image")
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=-1)
        if img.ndim != 3 or img.shape[-1] not in (3, 4):
            raise InputError(f"image must be (H, W, 3) RGB, got shape {img.shape}")
        img = img[..., :3]
        H, W = img.shape[:2]
        if W != 2 * H:
            raise InputError(
                f"the panorama is {W}x{H}; an equirectangular panorama is twice as wide as high "
                f"(e.g. {2 * H}x{H}). Crop or resize it to 2:1."
            )
        if H < 8:
            raise InputError(f"the panorama is only {W}x{H} pixels; give at least 16x8")
        _check_finite(img, "image")
        given = {"depth": depth is not None, "normals": normals is not None}
        missing = [m for m in self.required_modalities if m != "image" and not given[m]]
        if missing:
            hint = {"depth": "depth=(H, W) array in metres", "normals": "normals=(H, W, 3) RGB-encoded normals"}
            raise InputError(
                f"this checkpoint needs {' and '.join(missing)} as well as the RGB image: pass "
                + " and ".join(hint[m] for m in missing)
                + (" (no normals? panosamic.geometry.normals_from_depth estimates them from depth)"
                   if "normals" in missing and given["depth"] else "")
                + ", or use a checkpoint trained on fewer modalities"
            )
        layers = {"image": img.astype(np.float32)}
        if "depth" in self.required_modalities:
            d = _as_array(depth, "depth")
            if d.ndim == 3 and d.shape[-1] in (1, 3):
                d = d[..., 0]
            if d.shape != (H, W):
                raise InputError(f"depth is {d.shape[1] if d.ndim > 1 else '?'}x{d.shape[0]} but the image is "
                                 f"{W}x{H}: give a depth map of the same size (metres)")
            layers["depth"] = encode_depth(d, self.max_depth)
        if "normals" in self.required_modalities:
            n = _as_array(normals, "normals").astype(np.float32)
            if n.shape != (H, W, 3):
                raise InputError(f"normals must be (H, W, 3) = ({H}, {W}, 3) like the image, got {n.shape}")
            _check_finite(n, "normals")
            if n.min() < 0:  # unit vectors, not an RGB-encoded image
                n = 127.5 * (np.clip(n, -1.0, 1.0) + 1.0)
            layers["normals"] = n
        stack = torch.from_numpy(np.stack([layers[m] for m in self.required_modalities])).permute(0, 3, 1, 2)
        stack = _resize(stack.float(), self.model.erp_size)
        return stack.contiguous(), (H, W)

    # --- semantic outputs ----------------------------------------------------------------------
    def get_image_embedding(self, view: int = 0, modality: str = "image") -> torch.Tensor:
        """(1, P, g, g) SAM embedding of one view and modality, on the device."""
        state = self._require_state()
        m = self.required_modalities.index(modality)
        return state.embeddings[view * len(self.required_modalities) + m][None]

    @property
    def embeddings(self) -> np.ndarray:
        """(V*M, P, g, g) float32 neck embeddings in [view][modality] order."""
        return self._require_state().embeddings.detach().float().cpu().numpy()

    @property
    def logits(self) -> np.ndarray:
        """(K, H, W) float32 semantic logits at the input size."""
        if self._logits is None:
            state = self._require_state()
            with torch.inference_mode():
                up = self.model.postprocess(state.semantic_logits.to(self.device), state.input_size)
            self._logits = up[0].float().cpu().numpy()
        return self._logits

    @property
    def labels(self) -> np.ndarray:
        """(H, W) int64 class indices (argmax of the logits)."""
        if self._labels is None:
            self._labels = self.logits.argmax(axis=0)
        return self._labels

    # --- prompts -------------------------------------------------------------------------------
    def predict(self, point_coords: Optional[ArrayLike] = None, point_labels: Optional[ArrayLike] = None,
                box: Optional[ArrayLike] = None, mask_input: Optional[ArrayLike] = None,
                multimask_output: bool = True, return_logits: bool = False,
                view: Union[int, str] = "auto") -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for point/box prompts, decoded by SAM on the cached image embedding.

        Args:
            point_coords: (N, 2) x, y in input-image pixels.
            point_labels: (N,) 1 foreground, 0 background.
            box: (4,) x1, y1, x2, y2 in input pixels; x1 > x2 is a box that wraps across
                the left/right seam (it goes from x1 to the right edge and on from x = 0 to x2).
            mask_input: (1, 4g, 4g) or (4g, 4g) low-res logits from a previous call.
            multimask_output: three candidate masks (best for a single click) or one.
            return_logits: mask logits instead of boolean masks.
            view: 0 (as given), 1 (yawed 180 degrees: decoded at x' = (x + W/2) mod W and
                rolled back) or "auto": the view that keeps the prompts furthest from its seam.
                Single-view checkpoints have only view 0.

        Returns:
            masks (C, H, W) bool (float32 logits with return_logits), iou_predictions (C,),
            low_res_logits (C, 4g, 4g) float32, always in the panorama's own frame (view 0)
            so they can be passed back as `mask_input` whichever view decodes next.
            The encoder is never re-run.
        """
        state = self._require_state()
        H, W = state.input_size
        Hm, Wm = self.model.erp_size
        points, labels = self._check_points(point_coords, point_labels, W, H)
        box_xyxy = self._check_box(box, W, H)
        if points is None and box_xyxy is None and mask_input is None:
            raise InputError("give at least one prompt: a point, a box or a mask")
        # Into the model's ERP frame (the ERP is only padded, so these are SAM input coordinates).
        sx, sy = Wm / W, Hm / H
        pts_m = points * np.array([sx, sy], dtype=np.float32) if points is not None else None
        box_m = box_xyxy * np.array([sx, sy, sx, sy], dtype=np.float32) if box_xyxy is not None else None
        if self.model.num_views == 1 and view == 1:
            raise InputError("this checkpoint is single-view: decode on view 0 (or 'auto')")
        v = self._choose_view(view, pts_m, box_m, Wm) if self.model.num_views == 2 else 0
        if v == 1:
            if pts_m is not None:
                pts_m = pts_m.copy()
                pts_m[:, 0] = (pts_m[:, 0] + Wm / 2) % Wm
            if box_m is not None:
                box_m = _box_in_view1(box_m, Wm)
        elif box_m is not None and box_m[0] > box_m[2]:
            raise InputError("a box that wraps across the seam (x1 > x2) needs view 1 or 'auto' on a dual-view "
                             "checkpoint; on a single-view one, draw it as two boxes")

        dev = self.device
        low_size = self.model.prompt_encoder.mask_input_size
        with torch.inference_mode(), self._autocast():
            pt = None
            if pts_m is not None:
                pt = (torch.as_tensor(pts_m, dtype=torch.float32, device=dev)[None],
                      torch.as_tensor(labels, dtype=torch.int64, device=dev)[None])
            bx = torch.as_tensor(box_m, dtype=torch.float32, device=dev)[None] if box_m is not None else None
            mk = None
            if mask_input is not None:
                mk = torch.as_tensor(np.asarray(mask_input, dtype=np.float32), device=dev)
                if mk.shape[-2:] != low_size or mk.numel() != low_size[0] * low_size[1]:
                    raise InputError(f"mask_input must be (1, {low_size[0]}, {low_size[1]}) low-res logits "
                                     "as returned by predict, got " + str(tuple(mk.shape)))
                mk = mk.reshape(1, 1, *low_size)
                if v == 1:
                    mk = torch.roll(mk, low_size[1] // 2, dims=-1)
            low, iou = self.model.decode_prompts(self.get_image_embedding(v), pt, bx, mk, multimask_output)
            low = low.float()
            masks = self.model.postprocess(low, (H, W), view=v)[0]
            if v == 1:
                low = torch.roll(low, -(low_size[1] // 2), dims=-1)
        self.last_view = v
        masks_np = masks.cpu().numpy()
        if not return_logits:
            masks_np = masks_np > MASK_THRESHOLD
        return masks_np, iou[0].float().cpu().numpy(), low[0].cpu().numpy()

    @staticmethod
    def _check_points(coords, labels, W: int, H: int):
        if coords is None:
            if labels is not None:
                raise InputError("point_labels given without point_coords")
            return None, None
        pts = np.asarray(coords, dtype=np.float32).reshape(-1, 2) if np.size(coords) else np.zeros((0, 2), np.float32)
        if labels is None:
            raise InputError("point_coords need point_labels: 1 for foreground, 0 for background")
        lab = np.asarray(labels).reshape(-1)
        if len(lab) != len(pts) or len(pts) == 0:
            raise InputError(f"got {len(pts)} points and {len(lab)} labels: give one label (1 or 0) per point")
        if not np.isin(lab, (0, 1)).all():
            raise InputError("point labels must be 1 (foreground) or 0 (background)")
        if not np.isfinite(pts).all():
            raise InputError("point coordinates must be finite numbers")
        outside = (pts[:, 0] < 0) | (pts[:, 0] > W) | (pts[:, 1] < 0) | (pts[:, 1] > H)
        if outside.any():
            x, y = pts[outside][0]
            raise InputError(f"point ({x:g}, {y:g}) is outside the {W}x{H} panorama: "
                             f"x must be in 0..{W} and y in 0..{H} (input-image pixels)")
        return pts, lab.astype(np.int64)

    @staticmethod
    def _check_box(box, W: int, H: int):
        if box is None:
            return None
        b = np.asarray(box, dtype=np.float32).reshape(-1)
        if b.shape != (4,) or not np.isfinite(b).all():
            raise InputError("box must be 4 numbers x1, y1, x2, y2 in input-image pixels")
        x1, y1, x2, y2 = b
        if min(x1, x2, y1, y2) < 0 or max(x1, x2) > W or max(y1, y2) > H:
            raise InputError(f"box {b.tolist()} is outside the {W}x{H} panorama")
        if y1 > y2:
            raise InputError("box needs y1 <= y2 (top, then bottom); x1 > x2 is allowed and wraps across the seam")
        return b

    @staticmethod
    def _choose_view(view, pts: Optional[np.ndarray], box: Optional[np.ndarray], W: float) -> int:
        if view in (0, 1):
            return int(view)
        if view != "auto":
            raise InputError(f"view must be 0, 1 or 'auto', got {view!r}")
        if box is not None and box[0] > box[2]:
            return 1  # a wrapping box is contiguous only in the yawed view
        xs: List[float] = []
        if pts is not None:
            xs += list(pts[:, 0])
        if box is not None:
            xs += [box[0], box[2]]
        if not xs:
            return 0

        def margin(xs_view: Sequence[float]) -> float:
            return float(min(min(x, W - x) for x in xs_view))

        m0 = margin(xs)
        m1 = margin([(x + W / 2) % W for x in xs])
        # In view 1 a box must stay a plain box (not wrap) to be usable.
        if box is not None and (box[0] + W / 2) % W > (box[2] + W / 2) % W:
            return 0
        return 1 if m1 > m0 else 0

    # --- SAM instances -------------------------------------------------------------------------
    def generate_instances(self, **kwargs: Any) -> List[Dict[str, Any]]:
        """SAM's automatic grid on the cached embeddings; see `panosamic.instances.generate_instances`."""
        from .instances import generate_instances

        return generate_instances(self, **kwargs)

    def refine_semantics(self, instances: List[Dict[str, Any]], labels: Optional[np.ndarray] = None) -> np.ndarray:
        """Majority class per instance; see `panosamic.instances.refine_semantics`."""
        from .instances import refine_semantics

        return refine_semantics(self.labels if labels is None else labels, instances)


def _as_array(x: ArrayLike, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    try:
        arr = np.asarray(x)
    except Exception as e:  # e.g. a file object or a string path
        raise InputError(f"{name} must be an array, got {type(x).__name__} ({e})") from None
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise InputError(f"{name} must be a numeric array (load files with panosamic.io first), got {arr.dtype}")
    return arr


def _check_finite(arr: np.ndarray, name: str) -> None:
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InputError(f"{name} contains NaN or infinite values")


def _resize(stack: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """(M, 3, H, W) -> (M, 3, h, w): area averaging when shrinking, bilinear when enlarging."""
    if tuple(stack.shape[-2:]) == tuple(size):
        return stack
    if stack.shape[-1] > size[1]:
        return F.interpolate(stack, size, mode="area")
    return F.interpolate(stack, size, mode="bilinear", align_corners=False)


def _box_in_view1(box: np.ndarray, W: float) -> np.ndarray:
    """A box in view 0 coordinates -> view 1 (x' = (x + W/2) mod W), keeping it contiguous."""
    x1 = (box[0] + W / 2) % W
    x2 = (box[2] + W / 2) % W
    if x2 == 0 and box[2] > 0:
        x2 = W  # the right edge, not the left one
    if x1 > x2:
        raise InputError("this box spans more than half the panorama across the seam; draw a smaller box")
    return np.array([x1, box[1], x2, box[3]], dtype=np.float32)
