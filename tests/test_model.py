"""Model building blocks against direct formulations, and builders/presets."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import panosamic
from panosamic.config import VIT_PRESETS, preset, resolve_config
from panosamic.errors import ConfigError
from panosamic.model.decoder import SphericalConv2d, longitude_encoding
from panosamic.model.fusion import ChannelAttention, SpatialAttention


def _aggregate(summed, count, how):
    return {"max": lambda: torch.sigmoid(15 * (summed - 0.5)), "mean": lambda: summed / count.clamp(min=1),
            "none": lambda: summed}[how]()


def _channel_attention_by_unfold(module, x, k, s, how):
    """Per window: avg and max over its k*k pixels -> MLP -> sigmoid, spread with F.fold."""
    B, C, g, _ = x.shape
    cols = F.unfold(x, k, stride=s).view(B, C, k * k, -1)  # (B, C, k*k, L)
    att = module.att_layer(cols.mean(2).transpose(1, 2), cols.amax(2).transpose(1, 2))  # (B, L, C)
    spread = att.transpose(1, 2)[:, :, None, :].expand(B, C, k * k, att.shape[1]).reshape(B, C * k * k, -1)
    summed = F.fold(spread, (g, g), k, stride=s)
    count = F.fold(torch.ones(1, k * k, att.shape[1]), (g, g), k, stride=s)
    return _aggregate(summed, count, how)


def _spatial_attention_by_unfold(module, x, k, s, how):
    B, C, g, _ = x.shape
    windows = F.unfold(x, k, stride=s).view(B, C, k, k, -1).permute(0, 4, 1, 2, 3)  # (B, L, C, k, k)
    L = windows.shape[1]
    stats = torch.cat([windows.mean(2, keepdim=True), windows.amax(2, keepdim=True)], 2).reshape(B * L, 2, k, k)
    out = module.att_layer(stats).view(B, L, k * k).transpose(1, 2)
    summed = F.fold(out, (g, g), k, stride=s)
    count = F.fold(torch.ones(1, k * k, L), (g, g), k, stride=s)
    return torch.sigmoid(_aggregate(summed, count, how))


@pytest.mark.parametrize("grid", [8, 10, 16, 19])
@pytest.mark.parametrize("how", ["max", "mean", "none"])
def test_moving_attention_equals_unfold_fold(grid, how):
    """The pooling / transposed-conv implementation equals the literal window formulation,
    also for grids the windows do not tile exactly."""
    torch.manual_seed(grid)
    x = torch.randn(2, 12, grid, grid)
    ca = ChannelAttention(12, window_size=8, stride=4, aggregation=how)
    sa = SpatialAttention(window_size=8, stride=4, aggregation=how)
    torch.testing.assert_close(ca(x), _channel_attention_by_unfold(ca, x, 8, 4, how), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sa(x), _spatial_attention_by_unfold(sa, x, 8, 4, how), rtol=1e-5, atol=1e-6)


def test_attention_window_larger_than_the_map_is_a_clear_error():
    with pytest.raises(ValueError, match="smaller than the 8x8"):
        ChannelAttention(4, window_size=8, stride=4)(torch.zeros(1, 4, 6, 6))


def test_spherical_conv_wraps_longitude_only():
    conv = SphericalConv2d(1, 1, 3)
    with torch.no_grad():
        conv.conv.weight.fill_(1.0)
        conv.conv.bias.zero_()
    x = torch.zeros(1, 1, 4, 6)
    x[0, 0, 1, 0] = 1.0  # left edge
    x[0, 0, 0, 2] = 1.0  # top edge
    y = conv(x)[0, 0]
    assert y[1, 5] == 1.0  # seen across the left/right seam
    assert y[3, 2] == 0.0 and y[1, 2] == 1.0 and y[0, 2] == 1.0  # no wrap top/bottom


def test_longitude_encoding_is_the_transformer_formula():
    pe = longitude_encoding(8, 16)
    assert pe.shape == (1, 8, 1, 16) and pe.dtype == torch.float32
    pos = torch.arange(16, dtype=torch.float64)
    torch.testing.assert_close(pe[0, 2, 0].double(), torch.sin(pos / 10000 ** (2 / 8)), atol=1e-6, rtol=0)
    torch.testing.assert_close(pe[0, 3, 0].double(), torch.cos(pos / 10000 ** (2 / 8)), atol=1e-6, rtol=0)


def test_presets_have_released_sizes():
    for name, sizes in VIT_PRESETS.items():
        cfg = preset(name)
        assert cfg["image_size"] == 1024 and cfg["encoder_window_size"] == 14 and cfg["prompt_embed_dim"] == 256
        assert cfg["encoder_embed_dim"] == sizes["encoder_embed_dim"]
    cfg = preset("vit_b", modalities=["normals", "image"], num_classes=20, dual_view=False)
    assert cfg["modalities"] == ["image", "normals"] and cfg["num_classes"] == 20 and not cfg["dual_view_fusion"]


@pytest.mark.parametrize("bad, pattern", [
    ("vit_x", "preset"), ({"modalities": ["depth"]}, "image"), ({"modalities": ["rgb", "thermal"]}, "modalities"),
    ({"encoder_global_attn_indexes": [40]}, "below encoder_depth"),
])
def test_bad_configs_are_clear_errors(bad, pattern):
    with pytest.raises(ConfigError, match=pattern):
        panosamic.build_model(bad)


@pytest.mark.parametrize("key, value, expected", [
    ("encoder_depth", "four", "a whole number"), ("modalities", 5, "a list of names"),
    ("modalities", "image", "a list of names"), ("num_classes", 13.5, "a whole number"),
    ("patch_size", 0, "a whole number of at least 1"), ("dual_view_fusion", "false", "true or false"),
    ("encoder_global_attn_indexes", [1, "3"], "a list of whole numbers"), ("mask_decoder", 5, "an object"),
    ("channel_attention", {"stride": None}, "a whole number"), ("vit_model", ["vit_h"], "a preset name"),
    ("image_size", True, "a whole number"),
])
def test_wrongly_typed_config_values_name_the_key(tmp_path, key, value, expected):
    """A config.json with a value of the wrong type is a ConfigError that names the key and
    the type it needs (it was a TypeError or AttributeError from deep inside), and so is a file
    that holds no JSON object."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({key: value}))
    with pytest.raises(ConfigError) as err:
        resolve_config(path)
    message = str(err.value)
    assert key.split(".")[-1] in message and expected in message and "config.json" in message, message
    for top in ([1, 2], "vit_h", 5, None):
        path.write_text(json.dumps(top))
        with pytest.raises(ConfigError, match="config.json must hold a JSON object"):
            resolve_config(path)


def test_state_dict_names_match_the_released_layout(reference_root):
    """The vit_b RGB-D-N PanoSAMic keys and shapes of the released layout, from our modules."""
    import json

    layouts = json.loads((reference_root / "checkpoint_layouts.json").read_text())
    for name, layout in layouts.items():
        cfg = dict(layout["config"])
        if cfg.get("vit_model") != "vit_b":
            continue  # building vit_h on a 2-core CI machine is slow; vit_b has the same layout rules
        model = panosamic.build_model(cfg)
        ours = {k: tuple(v.shape) for k, v in model.state_dict().items()
                if k.startswith(("feature_fuser.", "semantic_decoder."))}
        assert ours == {k: tuple(v) for k, v in layout["panosamic_checkpoint_keys"].items()}, name
