"""Attention kernels for SAM's ViT blocks, selectable per encoder, same parameters.

`segment_anything`'s `Attention.forward` builds the full attention matrix per head in the
compute dtype, then a second one with the relative-position bias added, then a third one
after softmax: for one vit_b global block at 1024x1024 that is 3 x 805 MB per image. Two
replacements, both on exactly the same weights (the state dict does not change):

- "sam": segment_anything's forward, untouched (the reference numerics).
- "lean": the same arithmetic in the same order, but in one buffer (the bias is added and the
  softmax taken in place), so fp32 results are bit-identical to "sam" while a third of the
  large allocations remain. This is the default for fp32 off CUDA.
- "sdpa": `torch.nn.functional.scaled_dot_product_attention` with the decomposed
  relative-position bias passed as an additive float mask (the mask is (B, heads, N, N) in the
  compute dtype, but the softmax matrix is never materialised; on CUDA this selects the
  memory-efficient kernel). Not bit-identical to "sam" (a different reduction order): on the
  reference model the embeddings differ by about 1e-6 in fp32. The default on CUDA and under
  bf16/fp16.
- "auto": "sdpa" on CUDA or when the activations are not fp32, else "lean".
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .._sam import modeling

_image_encoder = modeling.image_encoder
SamAttention = _image_encoder.Attention
get_rel_pos = _image_encoder.get_rel_pos

ATTENTION_MODES = ("auto", "sam", "lean", "sdpa")


def check_attention_mode(mode: str) -> str:
    """Returns `mode` if it names an attention kernel, else raises ValueError saying which exist."""
    if mode not in ATTENTION_MODES:
        raise ValueError(f"attention must be one of {', '.join(ATTENTION_MODES)}, got {mode!r}")
    return mode


def resolve_attention_mode(mode: str, x: torch.Tensor) -> str:
    """The concrete kernel ("sam", "lean" or "sdpa") that `mode` means for activations `x`."""
    if mode != "auto":
        return mode
    low_precision = x.dtype != torch.float32 or (
        torch.is_autocast_enabled(x.device.type) if x.device.type in ("cpu", "cuda") else False)
    return "sdpa" if (x.is_cuda or low_precision) else "lean"


class Attention(SamAttention):
    """segment_anything's `Attention` (same parameters and state dict) with a choice of kernel.

    `mode` is one of `ATTENTION_MODES` (see the module docstring); the encoder sets it.
    """

    mode: str = "auto"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, H, W, C) tokens -> (B, H, W, C)."""
        kernel = resolve_attention_mode(self.mode, x)
        if kernel == "sam":
            return super().forward(x)
        B, H, W, _ = x.shape
        N = H * W
        # (3, B, heads, N, head_dim), as segment_anything lays it out
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        if kernel == "lean":
            out = self._lean(qkv, H, W)
        else:
            out = self._sdpa(qkv, H, W)
        out = out.view(B, self.num_heads, H, W, -1).permute(0, 2, 3, 1, 4).reshape(B, H, W, -1)
        return self.proj(out)

    def _rel_pos_terms(self, q: torch.Tensor, H: int, W: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """q (B*heads, N, d) unscaled -> the decomposed bias terms (B*heads, H, W, H) and (B*heads, H, W, W)."""
        Rh = get_rel_pos(H, H, self.rel_pos_h)
        Rw = get_rel_pos(W, W, self.rel_pos_w)
        r_q = q.reshape(q.shape[0], H, W, -1)
        rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, Rh)
        rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, Rw)
        return rel_h, rel_w

    def _lean(self, qkv: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """segment_anything's arithmetic, in one (B*heads, N, N) buffer. Returns (B*heads, N, d)."""
        BH = qkv.shape[1] * qkv.shape[2]
        q, k, v = qkv.reshape(3, BH, H * W, -1).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if self.use_rel_pos:
            rel_h, rel_w = self._rel_pos_terms(q, H, W)
            view = attn.view(BH, H, W, H, W)
            # (attn + rel_h) + rel_w, element by element: the same sums as the reference
            view.add_(rel_h[:, :, :, :, None]).add_(rel_w[:, :, :, None, :])
        # softmax(out=) has no derivative: training (scripts/train_demo.py) takes the plain call
        in_place = _SOFTMAX_OUT and not attn.requires_grad
        attn = torch.softmax(attn, dim=-1, out=attn) if in_place else attn.softmax(dim=-1)
        return attn @ v

    def _sdpa(self, qkv: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """Fused attention with the relative-position bias as an additive mask. Returns (B*heads, N, d)."""
        B, heads = qkv.shape[1], qkv.shape[2]
        q, k, v = qkv.unbind(0)  # (B, heads, N, d)
        mask: Optional[torch.Tensor] = None
        if self.use_rel_pos:
            rel_h, rel_w = self._rel_pos_terms(q.reshape(B * heads, H * W, -1), H, W)
            mask = (rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]).reshape(B, heads, H * W, H * W)
            mask = mask.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        return out.reshape(B * heads, H * W, -1)


def _softmax_out_works() -> bool:
    """Whether this torch build accepts `torch.softmax(..., out=)` (in place, no new buffer)."""
    try:
        t = torch.zeros(2, 3)
        torch.softmax(t, dim=-1, out=t)
        return bool(torch.allclose(t, torch.full((2, 3), 1 / 3)))
    except (TypeError, RuntimeError):
        return False


_SOFTMAX_OUT = _softmax_out_works()


def use_attention(module: torch.nn.Module, mode: str) -> None:
    """Sets the attention kernel of every SAM attention layer in `module` (no weights change).

    Layers built by segment_anything become our `Attention` subclass in place: the same
    parameters, buffers and state-dict keys.
    """
    check_attention_mode(mode)
    for m in module.modules():
        if isinstance(m, SamAttention):
            if not isinstance(m, Attention):
                m.__class__ = Attention
            m.mode = mode
