"""SAM's ViT image encoder, also returning the token maps after its global-attention blocks."""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch

from .._sam import ImageEncoderViT
from .attention import check_attention_mode, use_attention

BlockCallback = Callable[[int, int], None]


class TappedImageEncoderViT(ImageEncoderViT):
    """`segment_anything.modeling.ImageEncoderViT`, unchanged, plus taps.

    The state dict is exactly SAM's (`image_encoder.*` in Meta's files). `forward`
    returns the neck output (SAM's image embedding) and, for each block index in
    `tap_indexes` (the global-attention blocks), that block's output token map.

    `attention` picks the attention kernel of every block ("auto", "sam", "lean", "sdpa": see
    `panosamic.model.attention`); it changes no parameter.
    """

    def __init__(self, *args, tap_indexes: Sequence[int] = (), attention: str = "auto", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.tap_indexes = tuple(int(i) for i in tap_indexes)
        self.set_attention(attention)

    def set_attention(self, mode: str) -> None:
        """Selects the attention kernel ("auto", "sam", "lean" or "sdpa") of every block."""
        use_attention(self, check_attention_mode(mode))
        self.attention = mode

    def compile_blocks(self, **kwargs) -> None:
        """`torch.compile` each ViT block in place (the loop between blocks stays eager, so
        per-block progress callbacks still run). kwargs go to `nn.Module.compile`."""
        for block in self.blocks:
            block.compile(**kwargs)

    def forward(self, x: torch.Tensor, on_block: Optional[BlockCallback] = None
                ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """
        Args:
            x: (B, 3, S, S) normalised, padded input, S = img_size.
            on_block: called as on_block(done, total) after each ViT block (done = 1..depth).
        Returns:
            embedding: (B, out_chans, g, g) neck output, g = S / patch_size.
            taps: one (B, embed_dim, g, g) NCHW token map per tapped block, in index order.
        """
        x = self.patch_embed(x)  # (B, g, g, C): SAM keeps tokens channels-last
        if self.pos_embed is not None:
            x = x + self.pos_embed
        taps = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.tap_indexes:
                taps.append(x.permute(0, 3, 1, 2))
            if on_block is not None:
                on_block(i + 1, len(self.blocks))
        embedding = self.neck(x.permute(0, 3, 1, 2))
        return embedding, taps
