"""The PanoSAMic network: SAM's encoder and prompt decoder plus fusion and a semantic decoder."""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .._sam import MaskDecoder, PromptEncoder, TwoWayTransformer
from ..config import erp_size, num_views
from ..geometry import roll_half, unroll_half
from .decoder import SemanticDecoder
from .encoder import TappedImageEncoderViT
from .fusion import FeatureFuser

# SAM's normalisation, applied to every modality (depth and normals too).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


class PanoSAMic(nn.Module):
    """Panoramic semantic segmentation on SAM features, with SAM's prompt decoder alongside.

    Submodules and state-dict prefixes: `image_encoder`, `prompt_encoder`, `mask_decoder`
    (exactly SAM's, from Meta's checkpoints) and `feature_fuser`, `semantic_decoder`
    (the PanoSAMic checkpoint). Stateless: `panosamic.Predictor` keeps the per-panorama cache.

    Sizes: S = image_size (the square SAM input), the ERP is S/2 x S (top half of the
    padded square), g = S / patch_size the token grid, 4g the fused/logit map size.
    """

    def __init__(self, config: Dict[str, Any]) -> None:
        super().__init__()
        self.config = config
        S, P, C = config["image_size"], config["prompt_embed_dim"], config["encoder_embed_dim"]
        g = S // config["patch_size"]
        taps = config["encoder_global_attn_indexes"]
        self.image_encoder = TappedImageEncoderViT(
            depth=config["encoder_depth"],
            embed_dim=C,
            img_size=S,
            mlp_ratio=4,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            num_heads=config["encoder_num_heads"],
            patch_size=config["patch_size"],
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=taps,
            window_size=config["encoder_window_size"],
            out_chans=P,
            tap_indexes=taps,
        )
        self.prompt_encoder = PromptEncoder(
            embed_dim=P,
            image_embedding_size=(g, g),
            input_image_size=(S, S),
            mask_in_chans=16,
        )
        dec = config["mask_decoder"]
        self.mask_decoder = MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=dec["transformer_depth"], embedding_dim=P, mlp_dim=dec["mlp_dim"], num_heads=dec["num_heads"],
            ),
            transformer_dim=P,
            iou_head_depth=3,
            iou_head_hidden_dim=dec["iou_head_hidden_dim"],
        )
        self.feature_fuser = FeatureFuser(
            num_taps=len(taps),
            embed_dim=C,
            grid=g,
            num_modalities=len(config["modalities"]),
            prompt_embed_dim=P,
            channel_attention=config["channel_attention"],
            spatial_attention=config["spatial_attention"],
        )
        self.semantic_decoder = SemanticDecoder(
            in_channels=len(taps) * P, hidden_dim=P, num_classes=config["num_classes"],
            size=4 * g, dual_view=config["dual_view_fusion"],
        )
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1), persistent=False)

    # --- sizes -------------------------------------------------------------------------------
    @property
    def image_size(self) -> int:
        return self.config["image_size"]

    @property
    def erp_size(self) -> Tuple[int, int]:
        """(height, width) of the ERP the network sees."""
        return erp_size(self.config)

    @property
    def modalities(self) -> Tuple[str, ...]:
        return tuple(self.config["modalities"])

    @property
    def num_views(self) -> int:
        return num_views(self.config)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # --- stages ------------------------------------------------------------------------------
    def preprocess(self, modalities: torch.Tensor) -> torch.Tensor:
        """(M, 3, S/2, S) model-size ERPs in 0..255, in (image, depth, normals) order ->
        (V*M, 3, S, S) normalised, zero-padded batch in [view][modality] order."""
        M, _, h, w = modalities.shape
        if (h, w) != self.erp_size or M != len(self.modalities):
            raise ValueError(f"expected ({len(self.modalities)}, 3, {self.erp_size[0]}, {self.erp_size[1]}), "
                             f"got {tuple(modalities.shape)}")
        views = [modalities]
        if self.num_views == 2:
            views.append(roll_half(modalities))  # a 180 degree yaw
        x = torch.cat(views, dim=0)
        x = (x - self.pixel_mean) / self.pixel_std
        S = self.image_size
        return F.pad(x, (0, S - w, 0, S - h))

    def encode(self, batch: torch.Tensor, chunk_size: Optional[int] = None,
               on_block: Optional[Callable[[int, int], None]] = None) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """SAM encoder over (B, 3, S, S): neck embeddings (B, P, g, g) and tapped maps, each (B, C, g, g).

        `chunk_size` bounds how many images go through the ViT at once (peak memory).
        `on_block(done, total)` is called after every ViT block of every chunk, with
        total = number of chunks x depth."""
        chunks = [batch] if not chunk_size or chunk_size >= batch.shape[0] else list(batch.split(chunk_size))
        depth = len(self.image_encoder.blocks)

        def chunk_callback(index: int):
            if on_block is None:
                return None
            return lambda done, _depth: on_block(index * depth + done, len(chunks) * depth)

        if len(chunks) == 1:
            return self.image_encoder(batch, on_block=chunk_callback(0))
        parts = [self.image_encoder(c, on_block=chunk_callback(i)) for i, c in enumerate(chunks)]
        embeddings = torch.cat([p[0] for p in parts])
        taps = [torch.cat([p[1][i] for p in parts]) for i in range(len(parts[0][1]))]
        return embeddings, taps

    def fuse(self, taps: List[torch.Tensor]) -> torch.Tensor:
        """Tapped maps -> fused features (V, n_taps*P, 4g, 4g)."""
        return self.feature_fuser(taps)

    def decode_semantics(self, fused: torch.Tensor) -> torch.Tensor:
        """Fused features -> class logits (1, K, 4g, 4g) over the padded square."""
        return self.semantic_decoder(fused)

    def postprocess(self, low_res: torch.Tensor, output_size: Tuple[int, int], view: int = 0) -> torch.Tensor:
        """(N, C, s, s) square maps -> (N, C, H, W) at the ERP output size.

        Up to S x S, crop the ERP (top S/2 rows; cropping before this upsample would change
        the last rows), undo view 1's yaw, then resize to `output_size`.
        """
        S = self.image_size
        x = F.interpolate(low_res, (S, S), mode="bilinear", align_corners=False)
        x = x[..., : S // 2, :]
        if view == 1:
            x = unroll_half(x)
        if tuple(output_size) != (S // 2, S):
            x = F.interpolate(x, tuple(output_size), mode="bilinear", align_corners=False)
        return x

    def decode_prompts(self, embedding: torch.Tensor, points: Optional[Tuple[torch.Tensor, torch.Tensor]],
                       boxes: Optional[torch.Tensor], mask_input: Optional[torch.Tensor],
                       multimask_output: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        """SAM's prompt encoder + mask decoder on one (1, P, g, g) embedding.

        points: ((1, N, 2) xy in model-ERP pixels, (1, N) labels); boxes (1, 4) XYXY;
        mask_input (1, 1, 4g, 4g). Returns low-res mask logits (1, C, 4g, 4g) and IoU (1, C).
        """
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
        return self.mask_decoder(
            image_embeddings=embedding,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
        )

    def forward(self, modalities: torch.Tensor) -> Dict[str, torch.Tensor]:
        """One panorama end to end: (M, 3, S/2, S) 0..255 -> embeddings and ERP logits (1, K, S/2, S)."""
        embeddings, taps = self.encode(self.preprocess(modalities))
        logits = self.decode_semantics(self.fuse(taps))
        return {"embeddings": embeddings, "logits": self.postprocess(logits, self.erp_size)}
