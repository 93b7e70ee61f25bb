"""SAM's ViT image encoder, also returning the token maps after its global-attention blocks."""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch

from .._sam import ImageEncoderViT


class TappedImageEncoderViT(ImageEncoderViT):
    """`segment_anything.modeling.ImageEncoderViT`, unchanged, plus taps.

    The state dict is exactly SAM's (`image_encoder.*` in Meta's files). `forward`
    returns the neck output (SAM's image embedding) and, for each block index in
    `tap_indexes` (the global-attention blocks), that block's output token map.
    """

    def __init__(self, *args, tap_indexes: Sequence[int] = (), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.tap_indexes = tuple(int(i) for i in tap_indexes)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """
        Args:
            x: (B, 3, S, S) normalised, padded input, S = img_size.
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
        embedding = self.neck(x.permute(0, 3, 1, 2))
        return embedding, taps
