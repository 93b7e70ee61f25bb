"""Builders: a PanoSAMic network from a config, a config.json or a preset name."""

from __future__ import annotations

from functools import partial
from typing import Optional, Sequence

from .config import ConfigLike, resolve_config
from .model import PanoSAMic


def build_model(config: ConfigLike = "vit_h", modalities: Optional[Sequence[str]] = None,
                num_classes: Optional[int] = None, dual_view: Optional[bool] = None) -> PanoSAMic:
    """A randomly initialised PanoSAMic network in eval mode.

    Args:
        config: a dict with the keys of the authors' config.json, a path to one (or to a
            folder holding one), or a preset: "vit_b", "vit_l", "vit_h".
        modalities: override, any of ("image", "depth", "normals"); always used in that order.
        num_classes: override (13 Stanford2D3DS, 20 Matterport3D, 40 Structured3D).
        dual_view: override; True fuses a second, 180-degree-yawed view.

    Load weights with `panosamic.load_weights(model, sam=..., panosamic=...)`.
    """
    cfg = resolve_config(config, modalities, num_classes, dual_view)
    return PanoSAMic(cfg).eval()


# Like segment_anything's `sam_model_registry`: builders of the released sizes.
model_registry = {name: partial(build_model, name) for name in ("vit_b", "vit_l", "vit_h")}
model_registry["default"] = model_registry["vit_h"]
