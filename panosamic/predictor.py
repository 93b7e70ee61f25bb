"""`Predictor`: encode a panorama once, then segment it and answer prompts from the cache.

Like `segment_anything.SamPredictor`: `set_panorama` runs the heavy encoder and fusion
once; `predict` decodes point/box prompts on the cached SAM embeddings in milliseconds,
on either of the two views so that prompts near the left/right seam get seamless masks.
"""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from .datasets import Dataset, dataset_for_num_classes
from .device import resolve_device, resolve_dtype
from .encoding import bilinear_taps, channels_to_model_size, encode_depth_channel
from .errors import InputError
from .geometry import normals_for_model, roll_half, unroll_half, x_to_view
from .hub import HUB_REPO_ID
from .inputs import as_array, check_panorama
from .prompt_frame import box_in_view1, check_box, check_points, choose_view
from .eta import (Progress, ProgressTracker, block_seconds, encoder_flops, encoder_passes, record_rate,
                  record_tail)
from .model import PanoSAMic
from .model.attention import ATTENTION_MODES
from .precision import apply_precision, autocast_dtype, resolve_precision

ArrayLike = Union[np.ndarray, "torch.Tensor", Any]
ProgressFn = Callable[[str], None]
ProgressEventFn = Callable[["Progress"], None]

MASK_THRESHOLD = 0.0  # SAM's: mask logits above it are foreground


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

    def to(self, device: Union[str, torch.device]) -> "PanoramaState":
        """The same state with its embeddings on `device` (itself when they are there already).
        Apps keep states on the CPU between events (a GPU may be lent per call)."""
        if self.embeddings.device == torch.device(device):
            return self
        return PanoramaState(self.embeddings.to(device), self.semantic_logits, self.input_size, self.timings)


class Predictor:
    """Stateful facade over a `PanoSAMic` network for one panorama at a time.

    Args:
        model: a built network with weights loaded (see `build_model`, `load_weights`).
        device: "cuda", "cuda:N", "mps", "cpu", or None/"auto" for the best available
            (cuda > mps > cpu); one this machine lacks is a clear InputError.
        max_depth: T in metres, the depth that maps to 0 in the depth image. The released
            models were trained with the 99.5 % inlier depth of their training split, which
            the checkpoints do not ship; 10 m suits indoor rooms.
        precision: the ViT encoder's precision (`panosamic.precision`): "auto" (default, None
            too: int8 for real-size encoders on a CPU with int8 kernels, else float32),
            "float32", "bfloat16" / "float16" (autocast; float16 on CUDA only) or "int8"
            (quantises this model's encoder in place, CPU only). Fusion and the decoders run
            in float32. `dtype` is the older name of the same keyword.
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
                 compile: bool = False, precision: Optional[Union[str, torch.dtype]] = None) -> None:
        if not isinstance(model, PanoSAMic):
            raise TypeError(f"Predictor needs a PanoSAMic model (panosamic.build_model), got {type(model).__name__}")
        max_depth = _metres(max_depth)
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device, model.config, dtype=dtype)
        self.dtype = autocast_dtype(self.precision)  # what the encoder's autocast runs in
        if attention not in ATTENTION_MODES:
            raise InputError(f"attention must be one of {', '.join(ATTENTION_MODES)}, got {attention!r}")
        self.model = model.to(self.device).eval()
        apply_precision(self.model, self.precision)
        self.attention = attention
        self.model.image_encoder.set_attention(attention)
        self.compiled = bool(compile)
        if compile:
            self.model.image_encoder.compile_blocks()
        self.max_depth = float(max_depth)
        self._chunk_choice = encoder_chunk_size
        self.encoder_chunk_size = _chunk_size(encoder_chunk_size, self.device)
        self.dataset: Dataset = dataset_for_num_classes(model.config["num_classes"])
        self.encoder_calls = 0  # how many times the ViT ran: prompts never add to it
        self.last_view: Optional[int] = None
        self.reset_panorama()

    @classmethod
    def from_pretrained(cls, checkpoint: Any = HUB_REPO_ID, subfolder: Optional[str] = None,
                        sam: Any = None, config: Any = None, device: Optional[Union[str, torch.device]] = None,
                        dtype: Optional[Union[str, torch.dtype]] = None, max_depth: float = 10.0,
                        revision: Optional[str] = None, token: Union[str, bool, None] = None,
                        precision: Optional[Union[str, torch.dtype]] = None, **kwargs: Any) -> "Predictor":
        """A Predictor for released or local weights, as `SamPredictor(sam_model_registry[...](...))`
        in one call: `panosamic.weights.load_model` (float32 weights, on the CPU) then `cls(model,
        device, max_depth, precision, **kwargs)`. `precision` is the encoder's (see the class:
        None/"auto" is int8 for vit_b/l/h on an x86 CPU, float32 elsewhere; `dtype` is its older
        name). See `panosamic.weights.load_model` for the checkpoint arguments.

        Example::

            predictor = Predictor.from_pretrained(subfolder="stanford2d3ds-vith-rgbd-fold1", device="cuda")
        """
        from .weights import load_model

        model = load_model(checkpoint, subfolder=subfolder, sam=sam, config=config, revision=revision, token=token)
        return cls(model, device=device, max_depth=max_depth, dtype=dtype, precision=precision, **kwargs)

    def to(self, device: Optional[Union[str, torch.device]]) -> "Predictor":
        """Moves the network to `device` (in place, like `nn.Module.to`) and returns self; a kept
        panorama's embeddings follow. For a GPU lent per call (a Hugging Face ZeroGPU Space):
        the network is loaded on the CPU and moved here inside the lent call."""
        dev = resolve_device(device)
        if dev == self.device:
            return self
        if self.precision == "int8" and dev.type != "cpu":
            raise InputError("this Predictor's encoder is int8, which runs on the CPU only: create it with "
                             "precision='float32' (or 'bfloat16') for another device")
        self.dtype = resolve_dtype(self.dtype, dev)
        self.model.to(dev)
        self.device = dev
        self.encoder_chunk_size = _chunk_size(self._chunk_choice, dev)
        if self._state is not None:
            self._state = self._state.to(dev)
        return self

    # --- configuration -------------------------------------------------------------------------
    def _autocast(self, encoder: bool = False):
        """The ViT encoder's autocast (`encoder=True`); a no-op elsewhere: fusion, the semantic
        decoder and SAM's prompt decoder stay float32 (a few per cent of a Run, and their
        rounding moves labels directly)."""
        if not encoder or self.dtype == torch.float32 or self.device.type not in ("cuda", "cpu"):
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
        self._state = state.to(self.device)

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
                in -1..1 (encoded here). Read by RGB-D-N models; without them, such a model
                gets normals derived from `depth` (`panosamic.geometry.normals_for_model`).
            progress: optional callable, called once per stage with its name: "preprocess",
                "encode", "fuse", "decode".
            on_progress: optional callable that gets `panosamic.eta.Progress` events: at each
                stage start, after every ViT block (done/total blocks, seconds elapsed and
                left), and once at the end with stage "done".

        Any 2:1 size works: inputs are resized to the model's ERP and results back.
        """
        state = self.encode(image, depth, normals, progress=progress, on_progress=on_progress)
        self.reset_panorama()
        self._state = state

    def encode(self, image: ArrayLike, depth: Optional[ArrayLike] = None, normals: Optional[ArrayLike] = None,
               progress: Optional[ProgressFn] = None, max_depth: Optional[float] = None,
               on_progress: Optional[ProgressEventFn] = None) -> PanoramaState:
        """Like `set_panorama`, but returns the `PanoramaState` instead of keeping it, so that
        one Predictor can serve many panoramas (e.g. one per user of an app). `max_depth`
        overrides the Predictor's T for this panorama. The embeddings stay on the device."""
        step = progress or (lambda stage: None)
        timings: Dict[str, float] = {}
        self.model.image_encoder.set_attention(self.attention)  # the model may be shared with another Predictor
        cfg = self.model.config
        per_image = encoder_flops(cfg)
        tracker = None
        if on_progress:
            # weigh blocks by their expected seconds here (global attention costs more per FLOP)
            # when this device's are known, else by FLOPs; the ETA corrects itself as blocks finish
            expected = block_seconds(cfg, self.device, self.precision, self.attention)
            tracker = ProgressTracker(expected or per_image["blocks"], encoder_passes(cfg), on_progress,
                                      seconds_per_unit=1.0 if expected else None)

        def on_block(done: int, total: int) -> None:
            self._sync()  # CUDA runs ahead of Python: report blocks that really finished
            tracker.block(done, total)

        @contextmanager
        def stage(name: str, autocast: bool = False):
            """Announces a stage, runs it (the encoder under autocast) and records its seconds."""
            step(name)
            if tracker is not None:
                tracker.stage(name)
            t = time.perf_counter()
            with self._autocast(encoder=autocast):
                yield
            self._sync()
            timings[name] = time.perf_counter() - t

        with stage("preprocess"):
            stack, input_size = self._prepare(image, depth, normals, max_depth)
            with torch.inference_mode():
                x = self.model.preprocess(stack.to(self.device))
        with torch.inference_mode():
            with stage("encode", autocast=True):
                embeddings, taps = self.model.encode(x, self.encoder_chunk_size,
                                                     on_block=on_block if tracker is not None else None)
            self.encoder_calls += 1
            record_rate(self.device, self.precision, per_image["total"] * x.shape[0], timings["encode"], self.attention,
                        config=cfg, images=x.shape[0])
            with stage("fuse"):
                fused = self.model.fuse(taps)
            del taps  # the large tapped maps are not needed once fused
            with stage("decode"):
                logits = self.model.decode_semantics(fused)
        record_tail(self.device, self.precision, cfg, timings["preprocess"] + timings["fuse"] + timings["decode"])
        if tracker is not None:
            tracker.finish()
        return PanoramaState(embeddings.float(), logits.float().cpu(), input_size, timings)

    def _prepare(self, image: ArrayLike, depth: Optional[ArrayLike], normals: Optional[ArrayLike],
                 max_depth: Optional[float] = None) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Validates inputs (`panosamic.inputs.check_panorama`) and returns the (M, 3, S/2, S)
        float32 stack in 0..255 and the input (H, W).

        Large panoramas are converted to float and resized one channel at a time, so an
        8192x4096 input never exists as a float32 stack (1.2 GB for RGB-D-N)."""
        pano = check_panorama(image, depth, normals, self.required_modalities, normals_from_depth=True)
        size = self.model.erp_size
        layers = {"image": channels_to_model_size(pano.image, size)}
        if "normals" in self.required_modalities and pano.normals is None:
            layers["normals"] = channels_to_model_size(normals_for_model(pano.depth, *size), size, unit_vectors=True)
        if pano.depth is not None:
            T = self.max_depth if max_depth is None else _metres(max_depth)
            encoded = encode_depth_channel(pano.depth, T)
            layers["depth"] = channels_to_model_size(encoded[..., None], size).expand(3, -1, -1)
        if pano.normals is not None:
            n = pano.normals
            unit_vectors = n.dtype.kind == "f" and n.min() < 0  # not an RGB-encoded image
            layers["normals"] = channels_to_model_size(n, size, unit_vectors=unit_vectors)
        stack = torch.stack([layers[m] for m in self.required_modalities])
        return stack.contiguous(), tuple(pano.size)

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
        """(K, H, W) float32 semantic logits at the input size (K*H*W*4 bytes: 1.7 GB for
        13 classes at 8192x4096; `labels` and `labels_at` do not need them)."""
        if self._logits is None:
            self._logits = self.logits_at(self.input_size)
        return self._logits

    def logits_at(self, size: Tuple[int, int]) -> np.ndarray:
        """(K, h, w) float32 semantic logits resized to `size` = (h, w)."""
        state = self._require_state()
        size = _size(size, "size")
        with torch.inference_mode():
            up = self.model.postprocess(state.semantic_logits.to(self.device), size)
        return up[0].float().cpu().numpy()

    @property
    def labels(self) -> np.ndarray:
        """(H, W) int64 class indices (argmax of the logits) at the input size."""
        if self._labels is None:
            self._labels = self.labels_at(self.input_size).astype(np.int64)
        return self._labels

    def labels_at(self, size: Optional[Tuple[int, int]] = None, state: Optional[PanoramaState] = None,
                  tile_rows: int = 512) -> np.ndarray:
        """(h, w) uint8 class indices (int64 beyond 255 classes) at `size` (default: the input size).

        Equal to `logits_at(size).argmax(0)` but for exact ties, without a (K, h, w) float array:
        the last bilinear step blends four model-size logit vectors per pixel, and where those
        four have the same argmax the blend has it too; only the other pixels (along class
        edges, a few percent) are interpolated, `tile_rows` output rows at a time.
        state: another panorama's `PanoramaState` (default: the current one).
        """
        state = self._require_state() if state is None else state
        size = tuple(state.input_size) if size is None else _size(size, "size")
        with torch.inference_mode():
            erp = self.model.postprocess(state.semantic_logits.to(self.device), self.model.erp_size)[0].float().cpu()
        coarse = erp.argmax(0)
        dtype = np.uint8 if erp.shape[0] <= 256 else np.int64
        if tuple(erp.shape[-2:]) == size:
            return coarse.numpy().astype(dtype)
        (y0, y1, wy), (x0, x1, wx) = (bilinear_taps(erp.shape[-2], size[0]), bilinear_taps(erp.shape[-1], size[1]))
        # the columns once (h x W), then whole rows per tile: row gathers are plain copies
        left, right = coarse[:, x0].to(torch.int16), coarse[:, x1].to(torch.int16)
        out = np.empty(size, dtype)
        for r0 in range(0, size[0], tile_rows):
            rows = slice(r0, min(r0 + tile_rows, size[0]))
            tile = left[y0[rows]]
            edge = (tile != right[y0[rows]]) | (tile != left[y1[rows]]) | (tile != right[y1[rows]])
            i, j = edge.nonzero(as_tuple=True)
            if len(i):
                v, u = wy[rows][i], wx[j]
                a, b = y0[rows][i], y1[rows][i]
                blend = ((erp[:, a, x0[j]] * (1 - u) + erp[:, a, x1[j]] * u) * (1 - v)
                         + (erp[:, b, x0[j]] * (1 - u) + erp[:, b, x1[j]] * u) * v)
                tile[i, j] = blend.argmax(0).to(tile.dtype)
            out[rows] = tile.numpy()
        return out

    # --- prompts -------------------------------------------------------------------------------
    def predict(self, point_coords: Optional[ArrayLike] = None, point_labels: Optional[ArrayLike] = None,
                box: Optional[ArrayLike] = None, mask_input: Optional[ArrayLike] = None,
                multimask_output: bool = True, return_logits: bool = False,
                view: Union[int, str] = "auto", output_size: Optional[Tuple[int, int]] = None,
                state: Optional[PanoramaState] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for point/box prompts, decoded by SAM on the cached image embedding.

        Args:
            point_coords: (N, 2) x, y in input-image pixels, N <= `panosamic.prompt_frame.MAX_POINTS` (64).
            point_labels: (N,) 1 foreground, 0 background.
            box: (4,) x1, y1, x2, y2 in input pixels; x1 > x2 is a box that wraps across
                the left/right seam (it goes from x1 to the right edge and on from x = 0 to x2).
            mask_input: (1, 4g, 4g) or (4g, 4g) low-res logits from a previous call.
            multimask_output: three candidate masks (best for a single click) or one.
            return_logits: mask logits instead of boolean masks.
            view: 0 (as given), 1 (yawed 180 degrees: decoded at x' = (x + W/2) mod W and
                rolled back) or "auto": the view that keeps the prompts furthest from its seam.
                Single-view checkpoints have only view 0.
            output_size: (h, w) of the returned masks (default: the input size); prompts
                stay in input pixels. An app shows masks at a working size without ever
                making input-size masks.
            state: decode on this `PanoramaState` instead of the current panorama (one
                Predictor can answer many users' prompts; nothing of the Predictor changes).

        Returns:
            masks (C, H, W) bool (or (C, h, w) with output_size) (float32 logits with return_logits), iou_predictions (C,),
            low_res_logits (C, 4g, 4g) float32, always in the panorama's own frame (view 0)
            so they can be passed back as `mask_input` whichever view decodes next.
            The encoder is never re-run.
        """
        state = self._require_state() if state is None else state
        H, W = state.input_size
        if not (isinstance(view, str) and view == "auto"
                or isinstance(view, (int, np.integer)) and not isinstance(view, bool) and view in (0, 1)):
            raise InputError(f"view must be 0, 1 or 'auto', got {str(view)[:40]}")
        if output_size is not None:
            output_size = _size(output_size, "output_size")
        pts_m, labels, box_m, v = self._prompt_in_model_frame(point_coords, point_labels, box, mask_input, view, W, H)
        masks, iou, low = self._decode(state, v, pts_m, labels, box_m, mask_input, multimask_output,
                                       tuple(output_size or (H, W)))
        self.last_view = v
        masks_np = masks.cpu().numpy()
        if not return_logits:
            masks_np = masks_np > MASK_THRESHOLD
        return masks_np, iou[0].float().cpu().numpy(), low[0].cpu().numpy()

    def _prompt_in_model_frame(self, point_coords, point_labels, box, mask_input, view, W: int, H: int):
        """The prompt checked and moved from input pixels (W x H) into the decoding view's
        model-ERP pixels: (points (N, 2) or None, labels (N,) or None, box (4,) or None, view)."""
        Hm, Wm = self.model.erp_size
        points, labels = check_points(point_coords, point_labels, W, H)
        box_xyxy = check_box(box, W, H)
        if points is None and box_xyxy is None and mask_input is None:
            raise InputError("give at least one prompt: a point, a box or a mask")
        # Into the model's ERP frame (the ERP is only padded, so these are SAM input coordinates).
        sx, sy = Wm / W, Hm / H
        pts_m = points * np.array([sx, sy], dtype=np.float32) if points is not None else None
        box_m = box_xyxy * np.array([sx, sy, sx, sy], dtype=np.float32) if box_xyxy is not None else None
        if self.model.num_views == 1 and view == 1:
            raise InputError("this checkpoint is single-view: decode on view 0 (or 'auto')")
        v = choose_view(view, pts_m, box_m, Wm) if self.model.num_views == 2 else 0
        if v == 1:
            if pts_m is not None:
                pts_m = pts_m.copy()
                pts_m[:, 0] = x_to_view(pts_m[:, 0], Wm, 1)
            if box_m is not None:
                box_m = box_in_view1(box_m, Wm)
        elif box_m is not None and box_m[0] > box_m[2]:
            raise InputError("a box that wraps across the seam (x1 > x2) needs view 1 or 'auto' on a dual-view "
                             "checkpoint; on a single-view one, draw it as two boxes")
        return pts_m, labels, box_m, v

    def _decode(self, state: PanoramaState, v: int, pts_m, labels, box_m, mask_input, multimask_output: bool,
                size: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """SAM's prompt decoder on view `v`'s image embedding: (mask logits (C, h, w) at `size`,
        IoU predictions (1, C), low-res logits (1, C, 4g, 4g) in view 0's frame)."""
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
                mk = torch.as_tensor(as_array(mask_input, "mask_input").astype(np.float32), device=dev)
                if mk.shape[-2:] != low_size or mk.numel() != low_size[0] * low_size[1]:
                    raise InputError(f"mask_input must be (1, {low_size[0]}, {low_size[1]}) low-res logits "
                                     "as returned by predict, got " + str(tuple(mk.shape)))
                mk = mk.reshape(1, 1, *low_size)
                if v == 1:
                    mk = roll_half(mk)
            embedding = state.embeddings[v * len(self.required_modalities)][None].to(dev)
            low, iou = self.model.decode_prompts(embedding, pt, bx, mk, multimask_output)
            low = low.float()
            masks = self.model.postprocess(low, size, view=v)[0]
            if v == 1:
                low = unroll_half(low)
        return masks, iou, low

    def predict_lonlat(self, points_lonlat: Optional[ArrayLike] = None, point_labels: Optional[ArrayLike] = None,
                       box_lonlat: Optional[ArrayLike] = None, state: Optional[PanoramaState] = None,
                       **kwargs: Any) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`predict` with prompts given as directions in degrees instead of pixels.

        Args:
            points_lonlat: (N, 2) lon, lat in degrees (lon -180..180, 0 at the image centre,
                growing to the right; lat -90..90, 90 straight up; `panosamic.geometry`'s
                conventions).
            point_labels: (N,) 1 foreground, 0 background.
            box_lonlat: (4,) lon1, lat1, lon2, lat2; lon1 > lon2 wraps across the seam
                (lon +-180), as x1 > x2 does for a pixel box.
            state, **kwargs: as for `predict` (mask_input, multimask_output, view, output_size...).

        Each direction becomes the input pixel x = (lon + 180) / 360 * W, y = (90 - lat) / 180 * H
        (`geometry.degrees_to_pixels`), so the result is exactly that of the pixel prompt.
        """
        from .geometry import degrees_to_pixels

        H, W = (self._require_state() if state is None else state).input_size
        coords = box = None
        if points_lonlat is not None:
            ll = np.asarray(points_lonlat, dtype=np.float64).reshape(-1, 2) if np.size(points_lonlat) \
                else np.zeros((0, 2))
            coords = np.stack(degrees_to_pixels(ll[:, 0], ll[:, 1], W, H), axis=-1)
        if box_lonlat is not None:
            b = np.asarray(box_lonlat, dtype=np.float64).reshape(-1)
            if b.shape != (4,):
                raise InputError("box_lonlat must be 4 numbers lon1, lat1, lon2, lat2 in degrees")
            x, y = degrees_to_pixels(b[[0, 2]], b[[1, 3]], W, H)
            box = np.array([x[0], y[0], x[1], y[1]])
        return self.predict(point_coords=coords, point_labels=point_labels, box=box, state=state, **kwargs)

    # --- SAM instances -------------------------------------------------------------------------
    def generate_instances(self, **kwargs: Any) -> List[Dict[str, Any]]:
        """SAM's automatic grid on the cached embeddings; see `panosamic.instances.generate_instances`."""
        from .instances import generate_instances

        return generate_instances(self, **kwargs)

    def refine_semantics(self, instances: List[Dict[str, Any]], labels: Optional[np.ndarray] = None) -> np.ndarray:
        """Majority class per instance; see `panosamic.instances.refine_semantics`."""
        from .instances import refine_semantics

        return refine_semantics(self.labels if labels is None else labels, instances)


def _chunk_size(choice: Optional[int], device: torch.device) -> Optional[int]:
    """Images per ViT call: the caller's choice, else all at once on CUDA and one at a time
    elsewhere (see the Predictor's `encoder_chunk_size`)."""
    if choice is not None:
        return choice
    return None if device.type == "cuda" else 1


def _metres(value: Any) -> float:
    """max_depth as a positive finite float, else InputError."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not (v > 0 and np.isfinite(v)):
        raise InputError(f"max_depth must be a positive number of metres, got {str(value)[:20]}")
    return v


def _size(value: Any, name: str) -> Tuple[int, int]:
    """(h, w) of positive whole numbers up to 16384, else InputError."""
    try:
        h, w = (int(v) for v in value)
        ok = all(float(v) == int(v) for v in value) and 0 < h <= 16384 and 0 < w <= 16384
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"{name} must be (height, width) in pixels, each 1..16384, got {str(value)[:40]}")
    return h, w
