"""SAM's prompt encoder and mask decoder of a loaded PanoSAMic model as an ONNX file.

A page can then decode prompts itself (onnxruntime-web) on the view embeddings the server
sent once per Run, as Meta's SAM demo does: a mask follows the cursor without a request
per move. The graph is `segment_anything.utils.onnx.SamOnnxModel` (its point and mask
embedding, SAM's `predict_masks`) with two changes made by a subclass here:

- the candidate is chosen inside the graph exactly as `Predictor.predict` and the studio
  choose: with `multimask` = 1 the best of SAM's three multimask outputs (1..3) by predicted
  IoU, with 0 the single-mask output (0), so only one mask leaves the graph;
- that mask is upsampled by `PanoSAMic.postprocess` to the model's ERP (S/2 x S, the top half
  of the padded square), in the decoded view's frame (view 1 is rolled back by the caller).

Inputs (all float32 unless said): `image_embeddings` (1, P, g, g); `point_coords` (1, N, 2)
x, y in model-ERP pixels of the decoded view (a box is two more points with labels 2 and 3;
without a box the caller appends the padding point (0, 0) with label -1, as SAM's prompt
encoder does); `point_labels` (1, N); `multimask` int64 (1,).
Outputs: `mask` (1, 1, S/2, S) logits (> 0 is the mask), `iou` (1, 4) SAM's predicted IoU of
all four outputs, `index` int64 (1,) the output chosen.

The file is cached by content (`cached_decoder`): the digest of the decoder's weights, the
model size and this module's graph version, written atomically, so two checkpoints that share
SAM's decoder share one file and a restart re-exports nothing.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np
import torch

from . import _sam  # noqa: F401  (segment_anything importable without torchvision)
from .model import PanoSAMic

#: Changes whenever the graph's inputs, outputs or arithmetic change (part of the file's digest).
GRAPH_VERSION = "panosamic-prompt-decoder-1"
OPSET = 17
#: Where the app keeps exported decoders unless told otherwise (beside the embedding cache).
DEFAULT_CACHE_DIR = "~/.cache/panosamic/decoders"

_SamOnnxModel = importlib.import_module("segment_anything.utils.onnx").SamOnnxModel
_export_lock = threading.Lock()


class PromptDecoderGraph(_SamOnnxModel):
    """SamOnnxModel with the studio's candidate choice and PanoSAMic's ERP postprocess (see the
    module docstring for inputs and outputs)."""

    def __init__(self, model: PanoSAMic) -> None:
        super().__init__(model, return_single_mask=False)

    @torch.no_grad()
    def forward(self, image_embeddings: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor,
                multimask: torch.Tensor):
        sparse = self._embed_points(point_coords, point_labels)
        # no mask prompt: SAM's "no mask" embedding over the grid, as its prompt encoder does
        g = self.model.prompt_encoder.image_embedding_size
        dense = self.model.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, *g)
        low, iou = self.model.mask_decoder.predict_masks(
            image_embeddings=image_embeddings,
            image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
        )
        # the studio's choice: best multimask candidate (1..3) by IoU, else the single mask (0)
        index = (torch.argmax(iou[:, 1:], dim=1) + 1) * multimask
        chosen = torch.index_select(low, 1, index)
        mask = self.model.postprocess(chosen, self.model.erp_size, view=0)
        return mask, iou, index


def decoder_digest(model: PanoSAMic) -> str:
    """sha256 (hex) of what the exported graph depends on: the prompt encoder's and mask
    decoder's tensors (names, shapes, bytes), the model's image size and `GRAPH_VERSION`."""
    h = hashlib.sha256(f"{GRAPH_VERSION}|opset{OPSET}|S{model.image_size}|".encode())
    for prefix, module in (("prompt_encoder", model.prompt_encoder), ("mask_decoder", model.mask_decoder)):
        for name, t in sorted(module.state_dict().items()):
            a = t.detach().cpu().contiguous()
            h.update(f"{prefix}.{name}:{tuple(a.shape)}:{a.dtype}|".encode())
            h.update(a.numpy().tobytes() if a.dtype != torch.bfloat16 else a.float().numpy().tobytes())
    return h.hexdigest()


def export_decoder(model: PanoSAMic) -> bytes:
    """The ONNX file (bytes) of `model`'s prompt decoder graph; the model is not changed
    (its decoder is traced on a float32 CPU copy)."""
    import copy

    cpu = copy.deepcopy(model).float().cpu().eval() if model.device.type != "cpu" else model.eval()
    graph = PromptDecoderGraph(cpu).eval()
    P, g = cpu.config["prompt_embed_dim"], cpu.image_size // cpu.config["patch_size"]
    args = (torch.zeros(1, P, g, g), torch.zeros(1, 2, 2), torch.tensor([[1.0, -1.0]]),
            torch.ones(1, dtype=torch.int64))
    buf = io.BytesIO()
    torch.onnx.export(graph, args, buf, dynamo=False, opset_version=OPSET, do_constant_folding=True,
                      input_names=["image_embeddings", "point_coords", "point_labels", "multimask"],
                      output_names=["mask", "iou", "index"],
                      dynamic_axes={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}})
    return buf.getvalue()


def cached_decoder(model: PanoSAMic, cache_dir: Union[str, Path, None] = None) -> Path:
    """The exported decoder of `model` as `<cache_dir>/<digest>.onnx`, exported on first use
    (to a temporary file in the same folder, renamed into place: a reader never sees half a
    file, and two processes exporting at once both end with the same whole file)."""
    folder = Path(os.path.expanduser(str(cache_dir or DEFAULT_CACHE_DIR)))
    digest = decoder_digest(model)
    path = folder / f"{digest}.onnx"
    if path.is_file():
        return path
    with _export_lock:
        if path.is_file():
            return path
        data = export_decoder(model)
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{digest[:12]}-", suffix=".partial")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return path


def decode_frame(model: PanoSAMic, input_size) -> Dict[str, Any]:
    """What a page needs to put an input-pixel prompt into the graph's frame, as
    `Predictor.predict` does: scale x by erp_width / W and y by erp_height / H; on a dual-view
    model decode on the view whose seam is further from the prompts (view 1: x' = (x +
    erp_width // 2) mod erp_width, its mask rolled back by erp_width // 2).

    Returns {"input_size": [H, W], "erp_size": [h, w], "num_views": 1 or 2, "image_size": S,
    "embedding_shape": [P, g, g]} (pixels)."""
    H, W = (int(v) for v in input_size)
    g = model.image_size // model.config["patch_size"]
    return {"input_size": [H, W], "erp_size": list(model.erp_size), "num_views": int(model.num_views),
            "image_size": int(model.image_size), "embedding_shape": [int(model.config["prompt_embed_dim"]), g, g]}


def view_embeddings(embeddings: torch.Tensor, num_views: int, num_modalities: int) -> np.ndarray:
    """The image modality's embedding of each view, the one `Predictor.predict` decodes on, as
    float16 (V, P, g, g): from a `PanoramaState.embeddings` (V*M, P, g, g), [view][modality]."""
    picked = embeddings[[v * num_modalities for v in range(num_views)]]
    return picked.detach().float().cpu().numpy().astype(np.float16)


def onnx_session(path: Union[str, Path], threads: Optional[int] = 1):
    """An onnxruntime InferenceSession for a decoder file (server-side decoding and checks;
    onnxruntime is optional: ImportError when it is missing)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
