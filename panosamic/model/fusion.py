"""Spatio-modal fusion: per tapped encoder layer, attend over modalities and space, then upsample.

Attention is "moving": computed in sliding windows (8x8, stride 4 in the released
models) so each region of the panorama can prefer other modalities and places; the
windows' outputs are summed where they overlap and then aggregated.
"""

from __future__ import annotations

from typing import Any, List, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _aggregate(summed: torch.Tensor, count: torch.Tensor, aggregation: str) -> torch.Tensor:
    """Combines the overlap-summed window outputs.

    "none" keeps the sum, "mean" divides by the number of windows covering each
    pixel, "max" is a steep sigmoid around 0.5 (a soft "any window says yes").
    """
    if aggregation == "max":
        return torch.sigmoid(15.0 * (summed - 0.5))
    if aggregation == "mean":
        return summed / count.clamp(min=1)
    return summed


class _Windows:
    """Sliding-window geometry over a (g, g) map: kernel k, stride s, no padding.

    As with `F.unfold`, windows start at 0, s, 2s, ... while they fit; when (g - k) is not a
    multiple of s the last rows/columns are covered by no window (the released g = 64 tiles).
    """

    def __init__(self, size: int, kernel: int, stride: int) -> None:
        if size < kernel:
            raise ValueError(
                f"a {size}x{size} feature map is smaller than the {kernel}x{kernel} attention window; "
                "use a larger image_size or a smaller window_size"
            )
        self.size, self.kernel, self.stride = size, kernel, stride

    def overlap_count(self, like: torch.Tensor) -> torch.Tensor:
        """(1, 1, g, g) number of windows covering each pixel."""
        ones = torch.ones(1, self.kernel * self.kernel, self.num_windows, dtype=like.dtype, device=like.device)
        return self.fold(ones)

    @property
    def num_windows(self) -> int:
        n = (self.size - self.kernel) // self.stride + 1
        return n * n

    def unfold(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, g, g) -> (B * L, C, k, k) windows, L = number of windows."""
        B, C = x.shape[:2]
        cols = F.unfold(x, self.kernel, stride=self.stride)  # (B, C*k*k, L)
        L = cols.shape[-1]
        return cols.view(B, C, self.kernel, self.kernel, L).permute(0, 4, 1, 2, 3).reshape(B * L, C, self.kernel, self.kernel)

    def fold(self, windows: torch.Tensor) -> torch.Tensor:
        """(B, C*k*k, L) window values -> (B, C, g, g), summed where windows overlap."""
        return F.fold(windows, (self.size, self.size), self.kernel, stride=self.stride)


class _ChannelMLP(nn.Module):
    """avg+max pooled descriptor (2nC) -> Linear -> GELU -> Linear -> sigmoid, per window."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(2 * channels, channels, bias=False),
            nn.GELU(),
            nn.Linear(channels, channels, bias=False),
        )

    def forward(self, avg: torch.Tensor, mx: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(torch.cat([avg, mx], dim=-1)))


class ChannelAttention(nn.Module):
    """Which modality/feature channels matter, decided per window ("moving") or globally.

    Input and output (B, nC, g, g); returns the attention map A_c, not x * A_c.
    """

    def __init__(self, channels: int, moving_attention: bool = True, window_size: int = 8,
                 stride: int = 4, aggregation: str = "max", **_: Any) -> None:
        super().__init__()
        self.att_layer = _ChannelMLP(channels)
        self.moving = moving_attention
        self.kernel, self.stride, self.aggregation = window_size, stride, aggregation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.moving:
            avg, mx = x.mean(dim=(2, 3)), x.amax(dim=(2, 3))
            return self.att_layer(avg, mx)[:, :, None, None]
        win = _Windows(x.shape[-1], self.kernel, self.stride)
        # Window pooling with pooling ops (not unfold): the vit_h map is 3840 channels deep.
        avg = F.avg_pool2d(x, self.kernel, self.stride)
        mx = F.max_pool2d(x, self.kernel, self.stride)
        n = avg.shape[-1]
        att = self.att_layer(avg.flatten(2).transpose(1, 2), mx.flatten(2).transpose(1, 2))  # (B, L, nC)
        att = att.transpose(1, 2).reshape(x.shape[0], x.shape[1], n, n)
        # Each window's value is constant over its k x k pixels; a transposed convolution
        # with a ones kernel spreads and sums them exactly as F.fold would.
        ones = torch.ones(x.shape[1], 1, self.kernel, self.kernel, dtype=att.dtype, device=att.device)
        summed = F.conv_transpose2d(att, ones, stride=self.stride, groups=x.shape[1])
        uncovered = win.size - summed.shape[-1]
        if uncovered:
            summed = F.pad(summed, (0, uncovered, 0, uncovered))
        return _aggregate(summed, win.overlap_count(x), self.aggregation)


class _SpatialConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size=5, padding=2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class SpatialAttention(nn.Module):
    """Where to look: channel mean and max -> 5x5 conv, per window ("moving") or globally.

    Input (B, nC, g, g); returns the attention map A_s (B, 1, g, g).
    """

    def __init__(self, moving_attention: bool = True, window_size: int = 8, stride: int = 4,
                 aggregation: str = "none", **_: Any) -> None:
        super().__init__()
        self.att_layer = _SpatialConv()
        self.moving = moving_attention
        self.kernel, self.stride, self.aggregation = window_size, stride, aggregation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Channel statistics do not depend on the window, so they are computed once.
        stats = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        if not self.moving:
            return torch.sigmoid(self.att_layer(stats))
        win = _Windows(x.shape[-1], self.kernel, self.stride)
        windows = win.unfold(stats)  # (B*L, 2, k, k); the conv zero-pads inside each window
        out = self.att_layer(windows)  # (B*L, 1, k, k)
        B, L = x.shape[0], win.num_windows
        out = out.view(B, L, self.kernel * self.kernel).transpose(1, 2)
        summed = win.fold(out)
        return torch.sigmoid(_aggregate(summed, win.overlap_count(x), self.aggregation))


class FusionBlock(nn.Module):
    """Fuses one tapped layer of all modalities of a view and upsamples it x4.

    Input: (V*M, C, g, g) tapped maps in [view][modality] order.
    Output: (V, prompt_embed_dim, 4g, 4g).
    """

    def __init__(self, embed_dim: int, grid: int, num_modalities: int, prompt_embed_dim: int,
                 channel_attention: Mapping[str, Any], spatial_attention: Mapping[str, Any]) -> None:
        super().__init__()
        C, M, P = embed_dim, num_modalities, prompt_embed_dim
        self.num_modalities = M
        self.norm = nn.LayerNorm((C, grid, grid), eps=1e-5)
        self.channel_attention = ChannelAttention(M * C, **channel_attention)
        self.spatial_attention = SpatialAttention(**spatial_attention)
        self.neck = nn.Sequential(
            nn.Conv2d(M * C, C, kernel_size=1, bias=False),
            nn.LayerNorm((C, grid, grid), eps=1e-5),
            nn.GELU(),
            nn.Conv2d(C, 2 * P, kernel_size=1, bias=False),
            nn.LayerNorm((2 * P, grid, grid), eps=1e-5),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(2 * P, P, kernel_size=1, bias=False),
            nn.LayerNorm((P, 2 * grid, 2 * grid), eps=1e-5),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        )

    def forward(self, tapped: torch.Tensor) -> torch.Tensor:
        B, C, g, _ = tapped.shape
        x = self.norm(tapped).reshape(B // self.num_modalities, self.num_modalities * C, g, g)
        x1 = x * self.channel_attention(x)
        x2 = x1 * self.spatial_attention(x1)
        return self.neck(x + x2)


class FeatureFuser(nn.Module):
    """One FusionBlock per tapped layer; outputs concatenated on channels: (V, n_taps*P, 4g, 4g)."""

    def __init__(self, num_taps: int, **block_kwargs: Any) -> None:
        super().__init__()
        self.fusion_blocks = nn.ModuleList(FusionBlock(**block_kwargs) for _ in range(num_taps))

    def forward(self, taps: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(taps) != len(self.fusion_blocks):
            raise ValueError(f"expected {len(self.fusion_blocks)} tapped maps, got {len(taps)}")
        outs: List[torch.Tensor] = [block(t) for block, t in zip(self.fusion_blocks, taps)]
        return torch.cat(outs, dim=1)
