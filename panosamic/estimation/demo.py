"""The DEMO depth estimator: a tiny U-Net that reads the ERP panorama directly (offline toy).

It was trained by ``scripts/train_depth_demo.py`` on the procedural rooms of
``devtools.scenes`` only (the weights are in ``assets/demo-depth``): it gives the app, the CLI
and the tests a depth estimate without any download, and is useless on real photographs.

Network (:class:`ErpUNet`)
    Input ``(B, 3, h, w)`` RGB in 0..1 (``h, w`` = the config's ``erp_size``, 128 x 256) plus
    one coordinate channel ``sin(latitude)`` added inside, so the network knows where the
    floor and the ceiling are. Every 3x3 convolution pads *spherically*
    (:func:`sphere_pad`): columns wrap around the left/right seam, and the row above the
    zenith (below the nadir) is the first (last) row seen half a turn away, so the output has
    no seam and no pole artefact. A stride-2 stem (the network thinks at ``h/2 x w/2``: 4x
    cheaper on a CPU than full resolution), four more 2x down-samplings (stride-2
    convolutions), a global average of the bottleneck broadcast back (room-scale context),
    bilinear up-sampling across the seam (:func:`sphere_upsample2`) with skip connections,
    GroupNorm + GELU; the ``h/2 x w/2`` output is up-sampled the same way to ``h x w``
    (``h`` and ``w`` must be multiples of 32). The output is ``log(depth / 1 m)``.

:class:`DemoDepthEstimator` wraps it as an :class:`~panosamic.estimation.base.ErpDepthEstimator`:
``predict_erp(erp_rgb (H, W, 3) uint8) -> (h, w) float32`` metres (Euclidean distance along
each pixel's ray, the convention of :mod:`panosamic.geometry`), at the network's ERP size;
:func:`panosamic.estimation.estimate_depth` resizes it to what is needed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import geometry
from ..errors import InputError

__all__ = ["DEMO_DIR", "DEMO_CONFIG", "ErpUNet", "sphere_pad", "sphere_upsample2", "DemoDepthEstimator"]

#: Where the trained demo lives in a repository checkout.
DEMO_DIR = Path(__file__).resolve().parents[2] / "assets" / "demo-depth"

#: The architecture of the shipped demo (written to its config.json).
DEMO_CONFIG: Dict = {
    "architecture": "panosamic-erp-unet",
    "erp_size": [128, 256],
    "channels": [24, 32, 48, 64, 96],
    "groups": 4,
    "output": "log depth (metres), Euclidean distance along the ray",
}


def sphere_pad(x: torch.Tensor, p: int = 1) -> torch.Tensor:
    """Pad an ERP feature map ``(B, C, h, w)`` by ``p`` pixels as the sphere continues it.

    Columns wrap around (column ``-1`` is column ``w - 1``); the ``p`` rows above row 0 are rows
    ``p-1 .. 0`` rolled by half the width (crossing the zenith lands half a turn away), and the
    same below the last row. Returns ``(B, C, h + 2p, w + 2p)``. ``w`` must be even.
    """
    if p == 0:
        return x
    w = x.shape[-1]
    top = torch.roll(torch.flip(x[..., :p, :], dims=[-2]), w // 2, dims=-1)
    bottom = torch.roll(torch.flip(x[..., -p:, :], dims=[-2]), w // 2, dims=-1)
    x = torch.cat([top, x, bottom], dim=-2)
    return torch.cat([x[..., -p:], x, x[..., :p]], dim=-1)


def sphere_upsample2(x: torch.Tensor) -> torch.Tensor:
    """Bilinear 2x up-sampling ``(B, C, h, w) -> (B, C, 2h, 2w)`` that interpolates across the seam
    and over the poles (pads with :func:`sphere_pad` first, then crops), pixel-centre aligned."""
    y = F.interpolate(sphere_pad(x, 1), scale_factor=2, mode="bilinear", align_corners=False)
    return y[..., 2:-2, 2:-2]


class _Conv(nn.Module):
    """3x3 convolution with spherical padding, GroupNorm and GELU."""

    def __init__(self, cin: int, cout: int, stride: int = 1, groups: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=0, bias=False)
        self.norm = nn.GroupNorm(min(groups, cout), cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.norm(self.conv(sphere_pad(x, 1))))


class ErpUNet(nn.Module):
    """``(B, 3, h, w)`` RGB in 0..1 -> ``(B, 1, h, w)`` log depth (metres); see the module docstring."""

    def __init__(self, channels: Sequence[int] = (24, 32, 48, 64, 96), groups: int = 4):
        super().__init__()
        ch = list(channels)
        self.stem = nn.Sequential(_Conv(4, ch[0], stride=2, groups=groups), _Conv(ch[0], ch[0], groups=groups))
        self.down = nn.ModuleList(
            nn.Sequential(_Conv(ch[i], ch[i + 1], stride=2, groups=groups), _Conv(ch[i + 1], ch[i + 1], groups=groups))
            for i in range(len(ch) - 1))
        self.context = nn.Linear(ch[-1], ch[-1])
        self.up = nn.ModuleList(
            nn.Sequential(_Conv(ch[i + 1] + ch[i], ch[i], groups=groups), _Conv(ch[i], ch[i], groups=groups))
            for i in reversed(range(len(ch) - 1)))
        self.head = nn.Conv2d(ch[0], 1, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.constant_(self.head.bias, math.log(3.0))  # a room is a few metres across

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        b, _, h, w = rgb.shape
        lat = (0.5 - (torch.arange(h, dtype=rgb.dtype, device=rgb.device) + 0.5) / h) * math.pi
        coord = torch.sin(lat)[None, None, :, None].expand(b, 1, h, w)
        x = self.stem(torch.cat([rgb * 2.0 - 1.0, coord], dim=1))
        skips = [x]
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = x + self.context(x.mean(dim=(-2, -1)))[:, :, None, None]
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = block(torch.cat([sphere_upsample2(x), skip], dim=1))
        return sphere_upsample2(self.head(x))


class DemoDepthEstimator:
    """The trained :class:`ErpUNet` of ``folder`` (default ``assets/demo-depth``) as a depth estimator.

    Attributes: ``name``, ``licence``, ``metric`` (True: it predicts metres), ``erp_size``
    ``(h, w)`` it works at, ``note`` (None), ``device``, ``toy`` (True: a toy for rendered rooms).
    """

    metric = True
    note: Optional[str] = None
    fallback = False  # load_estimator("auto") sets True on the demo it fell back to
    toy = True  # trained on the procedural rooms only: rough on real photos (the app's status says so)

    def __init__(self, folder: Union[str, Path, None] = None, device: Union[str, torch.device] = "cpu"):
        from safetensors.torch import load_file

        from ..device import resolve_device

        folder = Path(folder) if folder is not None else DEMO_DIR
        cfg_path, weights = folder / "config.json", folder / "model.safetensors"
        if not cfg_path.is_file() or not weights.is_file():
            raise InputError(f"{folder} is not a depth demo folder (it needs config.json and model.safetensors; "
                             "make one with scripts/train_depth_demo.py)")
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
        if config.get("architecture") != DEMO_CONFIG["architecture"]:
            raise InputError(f"{cfg_path} does not describe a {DEMO_CONFIG['architecture']} depth network")
        self.folder = folder
        self.config = config
        self.device = resolve_device(device)
        self.erp_size = tuple(int(v) for v in config["erp_size"])
        self.name = config.get("name", "demo-depth")
        self.licence = config.get("licence", "Apache-2.0 (PanoSAMic Studio; trained on its procedural rooms)")
        net = ErpUNet(config["channels"], config.get("groups", 4))
        state = {k: v.float() for k, v in load_file(str(weights)).items()}
        net.load_state_dict(state)
        self.net = net.to(self.device).eval()

    @torch.inference_mode()
    def predict_erp(self, erp_rgb: np.ndarray) -> np.ndarray:
        """``(H, W, 3)`` uint8 ERP RGB (any 2:1 size) -> ``(h, w)`` float32 depth in metres at ``erp_size``."""
        a = np.asarray(erp_rgb)
        if a.ndim != 3 or a.shape[2] != 3:
            raise InputError(f"expected an (H, W, 3) RGB panorama, got shape {a.shape}")
        h, w = self.erp_size
        small = geometry.resize_erp(a, h, w) if a.shape[:2] != (h, w) else a
        x = torch.from_numpy(np.ascontiguousarray(small)).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        return torch.exp(self.net(x))[0, 0].float().cpu().numpy()
