"""Model configuration: the keys of the authors' `config.json`, presets and inference from tensors.

A config is a plain dict with the keys of `shared/reference/*/config.json`::

    image_size, patch_size, encoder_embed_dim, encoder_depth, encoder_num_heads,
    encoder_global_attn_indexes, encoder_window_size, prompt_embed_dim,
    mask_decoder {transformer_depth, mlp_dim, num_heads, iou_head_hidden_dim},
    modalities, num_classes, dual_view_fusion,
    channel_attention {moving_attention, window_size, stride, aggregation},
    spatial_attention {same keys}

`resolve_config` accepts such a dict (missing keys take the vit_h defaults), a
path to a config.json, or a preset name, and returns a complete, validated dict.
"""

from __future__ import annotations

import copy
import json
import os
import re
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

#: The most points one SAM prompt may carry (the Predictor and the app's /prompt both refuse
#: more). SAM is trained with a handful of clicks; every point is a token of the prompt
#: decoder, and 100,000 of them would try to allocate about 160 GB.
MAX_PROMPT_POINTS = 64

MODALITIES: Tuple[str, ...] = ("image", "depth", "normals")

# Released Hub subfolders of dfki-av/PanoSAMic (all ViT-H, Stanford2D3DS, 13 classes) and the
# modalities each fuses. Matterport3D checkpoints exist too, under names not known here: any
# subfolder can be passed, and `weights.list_subfolders` shows what the Hub has.
_MODALITY_CODES = {"rgbdn": ("image", "depth", "normals"), "rgbd": ("image", "depth"), "rgb": ("image",)}
RELEASED_SUBFOLDERS: Dict[str, Tuple[str, ...]] = {
    f"stanford2d3ds-vith-{code}-fold{fold}": mods
    for code, mods in reversed(_MODALITY_CODES.items())
    for fold in (1, 2, 3)
}


def modalities_from_subfolder(name: str) -> Optional[Tuple[str, ...]]:
    """Modalities a checkpoint folder name announces ('...-rgbd-...' -> image, depth), or None."""
    tokens = name.lower().replace("_", "-").replace("/", "-").split("-")
    return next((mods for code, mods in _MODALITY_CODES.items() if code in tokens), None)


_SAM_DECODER = {"transformer_depth": 2, "mlp_dim": 2048, "num_heads": 8, "iou_head_hidden_dim": 256}
_ATTENTION = {"moving_attention": True, "window_size": 8, "stride": 4}

# Released sizes: SAM's ViT-B/L/H at 1024 px, patch 16, window 14, 256-d prompts.
VIT_PRESETS: Dict[str, Dict[str, Any]] = {
    "vit_b": {"encoder_embed_dim": 768, "encoder_depth": 12, "encoder_num_heads": 12,
              "encoder_global_attn_indexes": [2, 5, 8, 11]},
    "vit_l": {"encoder_embed_dim": 1024, "encoder_depth": 24, "encoder_num_heads": 16,
              "encoder_global_attn_indexes": [5, 11, 17, 23]},
    "vit_h": {"encoder_embed_dim": 1280, "encoder_depth": 32, "encoder_num_heads": 16,
              "encoder_global_attn_indexes": [7, 15, 23, 31]},
}

_BASE: Dict[str, Any] = {
    "image_size": 1024,
    "patch_size": 16,
    **VIT_PRESETS["vit_h"],
    "encoder_window_size": 14,
    "prompt_embed_dim": 256,
    "mask_decoder": dict(_SAM_DECODER),
    "modalities": list(MODALITIES),
    "num_classes": 13,
    "dual_view_fusion": True,
    "channel_attention": {**_ATTENTION, "aggregation": "max"},
    "spatial_attention": {**_ATTENTION, "aggregation": "none"},
}

ConfigLike = Union[str, os.PathLike, Mapping[str, Any]]


from .errors import ConfigError


def config_from_subfolder(name: str) -> Optional[Dict[str, Any]]:
    """The architecture a checkpoint folder name announces ('...-vith-rgbd-...' -> the vit_h
    preset with image and depth), or None when the name does not say."""
    tokens = name.lower().replace("_", "-").replace("/", "-").split("-")
    size = next((f"vit_{t[3]}" for t in tokens if t in ("vitb", "vitl", "vith")), None)
    mods = modalities_from_subfolder(name)
    return preset(size, mods) if size is not None and mods is not None else None


def preset(name: str, modalities: Optional[Sequence[str]] = None, num_classes: Optional[int] = None,
           dual_view: Optional[bool] = None) -> Dict[str, Any]:
    """Config of a released size (`vit_b`, `vit_l`, `vit_h`), optionally with other modalities,
    class count or single view."""
    if name not in VIT_PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(VIT_PRESETS)}")
    cfg = copy.deepcopy(_BASE)
    cfg.update(copy.deepcopy(VIT_PRESETS[name]))
    cfg["vit_model"] = name
    return validate(_override(cfg, modalities, num_classes, dual_view))


def _override(cfg: Dict[str, Any], modalities, num_classes, dual_view) -> Dict[str, Any]:
    if modalities is not None:
        cfg["modalities"] = list(modalities)
    if num_classes is not None:
        cfg["num_classes"] = int(num_classes)
    if dual_view is not None:
        cfg["dual_view_fusion"] = bool(dual_view)
    return cfg


def resolve_config(config: ConfigLike, modalities: Optional[Sequence[str]] = None,
                   num_classes: Optional[int] = None, dual_view: Optional[bool] = None) -> Dict[str, Any]:
    """A complete, validated config from a dict, a config.json path or a preset name.

    A config.json's errors name the file (a value of the wrong type: the key and the type it needs)."""
    if isinstance(config, (str, os.PathLike)) and str(config) in VIT_PRESETS:
        return validate(preset(str(config), modalities, num_classes, dual_view))
    if isinstance(config, (str, os.PathLike)):
        path = os.fspath(config)
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
        if not os.path.isfile(path):
            raise ConfigError(
                f"config {config!r} is neither a preset ({', '.join(VIT_PRESETS)}) nor a config.json file"
            )
        try:
            with open(path, encoding="utf-8") as f:
                config = json.load(f)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON ({e}); fix or remove the file") from None
        if not isinstance(config, Mapping):
            raise ConfigError(f"{path} must hold a JSON object of settings ({{\"modalities\": [...], ...}}), "
                              f"not {_json_kind(config)}; fix or remove the file")
        try:
            return _resolve(config, modalities, num_classes, dual_view)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}; fix the file") from None
    if not isinstance(config, Mapping):
        raise ConfigError(f"config must be a dict, a config.json path or a preset name, got {type(config).__name__}")
    return _resolve(config, modalities, num_classes, dual_view)


def _resolve(config: Mapping[str, Any], modalities, num_classes, dual_view) -> Dict[str, Any]:
    """`config` over the vit_h defaults, validated (see resolve_config)."""
    cfg = copy.deepcopy(_BASE)
    vit = config.get("vit_model")
    if isinstance(vit, str) and vit in VIT_PRESETS:  # the authors' configs name the size instead of listing it
        cfg.update(copy.deepcopy(VIT_PRESETS[vit]))
    for key, value in config.items():
        if key.startswith("//"):
            continue
        if isinstance(value, Mapping) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **{k: v for k, v in value.items() if not k.startswith("//")}}
        else:
            cfg[key] = copy.deepcopy(value)
    return validate(_override(cfg, modalities, num_classes, dual_view))


# The keys that hold sizes and counts (nested keys as "parent.key"). The type of every key a
# model reads is checked once, in `validate`, before any value is used: a config.json written by
# hand gets a message that names the key, not a TypeError from deep inside. Other keys are left alone.
_WHOLE = ("image_size", "patch_size", "encoder_embed_dim", "encoder_depth", "encoder_num_heads",
          "prompt_embed_dim", "num_classes", "mask_decoder.transformer_depth", "mask_decoder.mlp_dim",
          "mask_decoder.num_heads", "mask_decoder.iou_head_hidden_dim")
_OBJECTS = ("mask_decoder", "channel_attention", "spatial_attention")


def _json_kind(value: Any) -> str:
    """What a JSON value is, in words: 'the text "four"', 'the number 5', 'a list', ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the text {json.dumps(value[:40])}"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return type(value).__name__


def _is_whole(value: Any, least: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _check_types(cfg: Mapping[str, Any]) -> None:
    """ConfigError naming the first key whose value is not of the type the model needs."""
    def wrong(key: str, expected: str, value: Any) -> ConfigError:
        return ConfigError(f'"{key}" must be {expected}, not {_json_kind(value)}')

    for key in _OBJECTS:
        if not isinstance(cfg[key], Mapping):
            raise wrong(key, 'an object ({"key": value, ...})', cfg[key])
    for name in ("channel_attention", "spatial_attention"):
        att = cfg[name]
        for key in ("window_size", "stride"):
            if key in att and not _is_whole(att[key]):
                raise wrong(f"{name}.{key}", "a whole number of at least 1", att[key])
        if "moving_attention" in att and not isinstance(att["moving_attention"], bool):
            raise wrong(f"{name}.moving_attention", "true or false", att["moving_attention"])
        if not isinstance(att.get("aggregation", "none"), str):
            raise wrong(f"{name}.aggregation", 'a name ("none", "mean" or "max")', att["aggregation"])
    for key in _WHOLE:
        parent, _, child = key.rpartition(".")
        value = cfg[parent][child] if parent else cfg[key]
        if not _is_whole(value):
            raise wrong(key, "a whole number of at least 1", value)
    if not _is_whole(cfg["encoder_window_size"], least=0):
        raise wrong("encoder_window_size", "a whole number of at least 0 (0: no windows)", cfg["encoder_window_size"])
    taps = cfg["encoder_global_attn_indexes"]
    if not isinstance(taps, (list, tuple)) or not all(_is_whole(i, least=0) for i in taps):
        raise wrong("encoder_global_attn_indexes", "a list of whole numbers (block indexes)", taps)
    mods = cfg["modalities"]
    if not isinstance(mods, (list, tuple)) or not all(isinstance(m, str) for m in mods):
        raise wrong("modalities", f"a list of names from {', '.join(MODALITIES)}", mods)
    if not isinstance(cfg["dual_view_fusion"], bool):
        raise wrong("dual_view_fusion", "true or false", cfg["dual_view_fusion"])
    if "vit_model" in cfg and cfg["vit_model"] is not None and not isinstance(cfg["vit_model"], str):
        raise wrong("vit_model", f"a preset name ({', '.join(VIT_PRESETS)})", cfg["vit_model"])


def validate(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Checks a config (the type of every key first) and normalises the modality order to
    (image, depth, normals)."""
    _check_types(cfg)
    mods = [str(m).lower() for m in cfg["modalities"]]
    unknown = [m for m in mods if m not in MODALITIES]
    if unknown or not mods or len(set(mods)) != len(mods):
        raise ConfigError(f"modalities must be distinct names from {MODALITIES}, got {cfg['modalities']}")
    if "image" not in mods:
        raise ConfigError("modalities must include 'image': prompts are decoded on the image embedding")
    cfg["modalities"] = [m for m in MODALITIES if m in mods]
    if cfg["image_size"] % cfg["patch_size"] or cfg["image_size"] % 2:
        raise ConfigError("image_size must be even and a multiple of patch_size")
    if cfg["encoder_embed_dim"] % cfg["encoder_num_heads"]:
        raise ConfigError("encoder_embed_dim must be divisible by encoder_num_heads")
    taps = list(cfg["encoder_global_attn_indexes"])
    if not taps or any(not 0 <= i < cfg["encoder_depth"] for i in taps):
        raise ConfigError("encoder_global_attn_indexes must be block indexes below encoder_depth")
    if int(cfg["num_classes"]) < 1:
        raise ConfigError("num_classes must be positive")
    for key in ("channel_attention", "spatial_attention"):
        att = cfg[key]
        if att.get("aggregation", "none") not in ("none", "mean", "max"):
            raise ConfigError(f"{key}.aggregation must be none, mean or max")
    cfg["encoder_global_attn_indexes"] = [int(i) for i in taps]
    cfg["num_classes"] = int(cfg["num_classes"])
    cfg["dual_view_fusion"] = bool(cfg["dual_view_fusion"])
    return cfg


def erp_size(cfg: Mapping[str, Any]) -> Tuple[int, int]:
    """(height, width) of the ERP the network sees: image_size/2 x image_size."""
    return cfg["image_size"] // 2, cfg["image_size"]


def num_views(cfg: Mapping[str, Any]) -> int:
    return 2 if cfg["dual_view_fusion"] else 1


# --- architecture from tensors -------------------------------------------------------------

_EMBED_TO_VIT = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}


def infer_config(panosamic_shapes: Mapping[str, Sequence[int]],
                 sam_shapes: Optional[Mapping[str, Sequence[int]]] = None) -> Dict[str, Any]:
    """The architecture a pair of checkpoints describes, from their tensor shapes alone.

    `panosamic_shapes` maps the `feature_fuser.*`/`semantic_decoder.*` keys to shapes;
    `sam_shapes` (optional) the SAM keys. Without SAM shapes the encoder is the released
    preset of the fused width (768 vit_b, 1024 vit_l, 1280 vit_h). The mask decoder's head
    count is not visible in the tensors: SAM's 8 for 256-d prompts, else one head per 32
    channels (at least one), unless a config.json says otherwise.
    """
    def shape(key: str, table: Optional[Mapping[str, Sequence[int]]] = None) -> Tuple[int, ...]:
        table = panosamic_shapes if table is None else table
        if key not in table:
            raise ConfigError(f"cannot read the architecture: tensor {key!r} is missing from the checkpoint")
        return tuple(int(s) for s in table[key])

    num_classes = shape("semantic_decoder.decoder_head.3.weight")[0]
    fused_out, fused_in = shape("feature_fuser.fusion_blocks.0.neck.0.weight")[:2]
    if fused_in % fused_out:
        raise ConfigError("feature_fuser.fusion_blocks.0.neck.0.weight is not [C, n*C, 1, 1]")
    n_mod = fused_in // fused_out
    if not 1 <= n_mod <= 3:
        raise ConfigError(f"the checkpoint fuses {n_mod} modalities; PanoSAMic knows 1 to 3")
    dual = any(k.startswith("semantic_decoder.decoder_attention.") for k in panosamic_shapes)
    g = shape("feature_fuser.fusion_blocks.0.norm.weight")[-1]
    n_blocks = len({int(m.group(1)) for k in panosamic_shapes
                    if (m := re.match(r"feature_fuser\.fusion_blocks\.(\d+)\.", k))})

    if sam_shapes:
        embed = shape("image_encoder.patch_embed.proj.weight", sam_shapes)
        C, patch = embed[0], embed[-1]
        grid = shape("image_encoder.pos_embed", sam_shapes)[1]
        depth = len({int(m.group(1)) for k in sam_shapes
                     if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))})
        global_idx, window, head_dim = [], 0, None
        for i in range(depth):
            rel = sam_shapes.get(f"image_encoder.blocks.{i}.attn.rel_pos_h")
            if rel is None:
                raise ConfigError("SAM checkpoint without relative positions is not supported")
            size = (int(rel[0]) + 1) // 2
            head_dim = int(rel[1])
            if size == grid:
                global_idx.append(i)
            else:
                window = size
        prompt_dim = shape("image_encoder.neck.0.weight", sam_shapes)[0]
        dec_depth = len({int(m.group(1)) for k in sam_shapes
                         if (m := re.match(r"mask_decoder\.transformer\.layers\.(\d+)\.", k))})
        mlp_dim = shape("mask_decoder.transformer.layers.0.mlp.lin1.weight", sam_shapes)[0]
        iou_hidden = shape("mask_decoder.iou_prediction_head.layers.0.weight", sam_shapes)[0]
        cfg = copy.deepcopy(_BASE)
        cfg.update({
            "image_size": grid * patch, "patch_size": patch, "encoder_embed_dim": C,
            "encoder_depth": depth, "encoder_num_heads": C // head_dim,
            "encoder_global_attn_indexes": global_idx, "encoder_window_size": window or grid,
            "prompt_embed_dim": prompt_dim,
            "mask_decoder": {"transformer_depth": dec_depth, "mlp_dim": mlp_dim,
                             "num_heads": 8 if prompt_dim == 256 else max(1, prompt_dim // 32),
                             "iou_head_hidden_dim": iou_hidden},
        })
        if C != fused_out or len(global_idx) != n_blocks:
            raise ConfigError(
                f"the SAM checkpoint (width {C}, {len(global_idx)} global blocks) does not match the "
                f"PanoSAMic checkpoint (width {fused_out}, {n_blocks} fusion blocks): use the SAM size "
                "the PanoSAMic checkpoint was trained with"
            )
    else:
        if fused_out not in _EMBED_TO_VIT:
            raise ConfigError(
                f"fused width {fused_out} is not a released SAM size (768, 1024, 1280): "
                "give the SAM checkpoint or a config.json"
            )
        cfg = preset(_EMBED_TO_VIT[fused_out])
        if g != cfg["image_size"] // cfg["patch_size"]:
            raise ConfigError(
                f"fusion maps are {g}x{g}, not the released {cfg['image_size'] // cfg['patch_size']}: "
                "give the SAM checkpoint or a config.json"
            )
    if cfg["image_size"] == 1024 and cfg["encoder_embed_dim"] in _EMBED_TO_VIT:
        cfg["vit_model"] = _EMBED_TO_VIT[cfg["encoder_embed_dim"]]
    cfg["modalities"] = list(MODALITIES[:n_mod])
    cfg["num_classes"] = num_classes
    cfg["dual_view_fusion"] = dual
    return validate(cfg)


def describe(cfg: Mapping[str, Any]) -> str:
    """One line, e.g. 'vit_h, image+depth+normals, 13 classes, dual view, 1024x512 ERP'."""
    h, w = erp_size(cfg)
    size = cfg.get("vit_model") or f"ViT {cfg['encoder_embed_dim']}x{cfg['encoder_depth']}"
    views = "dual view" if cfg["dual_view_fusion"] else "single view"
    return f"{size}, {'+'.join(cfg['modalities'])}, {cfg['num_classes']} classes, {views}, {w}x{h} ERP"


def modalities_from_names(names: Iterable[str]) -> Tuple[str, ...]:
    """Normalised, ordered modality tuple from user-given names (`rgb`/`d`/`n` aliases allowed)."""
    alias = {"rgb": "image", "img": "image", "d": "depth", "n": "normals", "normal": "normals"}
    mods = {alias.get(n.strip().lower(), n.strip().lower()) for n in names if n.strip()}
    unknown = mods - set(MODALITIES)
    if unknown:
        raise ConfigError(f"unknown modality {sorted(unknown)}; use image, depth, normals")
    return tuple(m for m in MODALITIES if m in mods)
