"""Semantic decoder: per-view class logits, longitude encoding and dual-view blending."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..geometry import roll_half, unroll_half


def longitude_encoding(channels: int, width: int, dtype: torch.dtype = torch.float32,
                       device: Optional[torch.device] = None) -> torch.Tensor:
    """Sinusoidal encoding of the column index, (1, channels, 1, width).

    The transformer formula with base 10000 (sine on even channels, cosine on odd),
    computed in float64 and then cast, as the released weights expect.
    """
    position = torch.arange(width, dtype=torch.float64)[:, None]
    div = torch.exp(torch.arange(0, channels, 2, dtype=torch.float64) * (-math.log(10000.0) / channels))
    pe = torch.zeros(width, channels, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(position * div)
    pe[:, 1::2] = torch.cos(position * div[: channels // 2])
    return pe.t()[None, :, None, :].to(dtype=dtype, device=device)


class SphericalConv2d(nn.Module):
    """A convolution on an ERP map: circular padding left/right (longitude wraps), zeros top/bottom."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.pad = kernel_size // 2
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=0, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pad
        x = F.pad(x, (p, p, 0, 0), mode="circular")
        x = F.pad(x, (0, 0, p, p), mode="constant", value=0.0)
        return self.conv(x)


class SemanticDecoder(nn.Module):
    """Fused features (V, in_channels, S, S) -> class logits (1, K, S, S), S = `size` = image_size / 4.

    With dual view, view 1 (yawed 180 degrees) is rolled back and blended with view 0 by a
    per-pixel weight alpha predicted with spherical convolutions, so the seam of one
    view is covered by the middle of the other.
    """

    def __init__(self, in_channels: int, hidden_dim: int, num_classes: int, size: int, dual_view: bool) -> None:
        super().__init__()
        self.dual_view = dual_view
        self.in_channels = in_channels
        self.decoder_head = nn.Sequential(
            nn.Conv2d(in_channels, hidden_dim, kernel_size=1),
            nn.LayerNorm((hidden_dim, size, size), eps=1e-5),
            nn.GELU(),
            nn.Conv2d(hidden_dim, num_classes, kernel_size=1),
        )
        if dual_view:
            self.decoder_attention = nn.Sequential(
                SphericalConv2d(2 * num_classes, num_classes, 7),
                nn.GELU(),
                SphericalConv2d(num_classes, 1, 3),
            )

    def forward(self, fused: torch.Tensor) -> torch.Tensor:
        width = fused.shape[-1]
        if self.dual_view:
            pe = longitude_encoding(self.in_channels, width, fused.dtype, fused.device)
            # Both views carry the original longitude: view 1's encoding is rolled like its pixels.
            pe = torch.cat([pe, roll_half(pe)], dim=0)
            fused = fused + pe
        logits = self.decoder_head(fused)
        if not self.dual_view:
            return logits[:1]
        x1 = logits[0:1]
        x2 = unroll_half(logits[1:2])
        alpha = torch.sigmoid(self.decoder_attention(torch.cat([x1, x2], dim=1)))
        return alpha * x1 + (1.0 - alpha) * x2

