"""The model's input encoding: metric depth as the depth image, and any (H, W, C) map resized to
the model's ERP one channel at a time; `bilinear_taps` for label maps resized without logits.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F


def encode_depth(depth_m: np.ndarray, max_depth: float) -> np.ndarray:
    """Metric depth (H, W) -> the model's depth image (H, W, 3) float32 in 0..255.

    `255 * (1 - clip(d, 0, T) / T)`, 0 where the depth is invalid (0 or not finite), so
    near is bright and far or unknown is black. T = `max_depth` in metres.
    """
    return np.repeat(encode_depth_channel(depth_m, max_depth)[..., None], 3, axis=-1)


def encode_depth_channel(depth_m: np.ndarray, max_depth: float) -> np.ndarray:
    """`encode_depth` as one (H, W) float32 channel, computed in place (one 8K temporary, not five)."""
    d = np.asarray(depth_m, dtype=np.float32)
    valid = np.isfinite(d) & (d > 0)
    enc = np.clip(d, np.float32(0.0), np.float32(max_depth))
    enc /= np.float32(max_depth)
    np.subtract(np.float32(1.0), enc, out=enc)
    enc *= np.float32(255.0)
    enc[~valid] = 0.0
    return enc


def channels_to_model_size(arr: np.ndarray, size: Tuple[int, int], unit_vectors: bool = False) -> torch.Tensor:
    """(H, W, C) numeric array -> (C, h, w) float32 tensor at `size`, one channel at a time.

    unit_vectors: values in -1..1, encoded as 127.5 * (n + 1) first (normals)."""
    out = []
    for c in range(arr.shape[-1]):
        ch = np.ascontiguousarray(arr[..., c], dtype=np.float32)
        if unit_vectors:
            ch = np.float32(127.5) * (np.clip(ch, -1.0, 1.0) + np.float32(1.0))
        out.append(resize(torch.from_numpy(ch)[None, None], size)[0, 0])
    return torch.stack(out)


def resize(stack: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """(M, 3, H, W) -> (M, 3, h, w): area averaging when shrinking, bilinear when enlarging."""
    if tuple(stack.shape[-2:]) == tuple(size):
        return stack
    if stack.shape[-1] > size[1]:
        return F.interpolate(stack, size, mode="area")
    return F.interpolate(stack, size, mode="bilinear", align_corners=False)


def bilinear_taps(src: int, dst: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each of `dst` output pixels of a bilinear resize from `src` (align_corners=False,
    as `F.interpolate`): the two source indices and the weight of the second."""
    pos = ((torch.arange(dst, dtype=torch.float32) + 0.5) * (src / dst) - 0.5).clamp(min=0)
    lo = pos.floor().long().clamp(max=src - 1)
    hi = (lo + 1).clamp(max=src - 1)
    return lo, hi, pos - lo.float()
