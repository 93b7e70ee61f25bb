"""Reading PanoSAMic and SAM weights and loading them into a model, strictly.

A PanoSAMic model is made from two files (see `shared/docs/panosamic-model.md`, "Weights"):
Meta's SAM checkpoint for `image_encoder.*`, `prompt_encoder.*` and `mask_decoder.*`
(found or downloaded by `panosamic.sam_weights`) and a PanoSAMic `model.safetensors` for
`feature_fuser.*` and `semantic_decoder.*` (found locally or on the Hub by `panosamic.hub`).

This module reads them (`read_*`), copies them into a model built by
`panosamic.build.build_model` checking that every key and shape matches exactly
(`load_weights`), resolves a checkpoint once (`resolve_checkpoint`: files and architecture,
headers only), describes it (`checkpoint_info`) and does the whole chain in one call
(`load_model`: resolve -> build -> load; `Predictor.from_pretrained` wraps it in a Predictor).
Every failure raises `WeightsError` with a message that says what went wrong and what to do.
Where checkpoints are is `panosamic.hub`'s job (PanoSAMic) and `panosamic.sam_weights`' (SAM).
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .config import MODALITIES, ConfigLike, describe, infer_config, resolve_config
from .errors import ConfigError, InputError, WeightsError
from .hub import HUB_REPO_ID, companion_config, find_companions, resolve_panosamic_checkpoint
from .sam_weights import SAM_CHECKPOINTS, local_sam_checkpoint, resolve_sam_checkpoint

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
StateDict = Mapping[str, torch.Tensor]
Shapes = Dict[str, Tuple[int, ...]]

SAM_PREFIXES: Tuple[str, ...] = ("image_encoder.", "prompt_encoder.", "mask_decoder.")
PANOSAMIC_PREFIXES: Tuple[str, ...] = ("feature_fuser.", "semantic_decoder.")


# --- reading files --------------------------------------------------------------------------


def _corrupt(path: Path, what: str, error: BaseException) -> WeightsError:
    detail = str(error).strip().split(". ")[0][:200]  # the first sentence: library errors run long
    return WeightsError(
        f"{path} is not a readable {what} ({type(error).__name__}: {detail}); the file is probably "
        "corrupt or incomplete (an interrupted download or copy): delete it and download it again"
    )


def _unwrap(obj: Any, path: Path) -> Dict[str, torch.Tensor]:
    # Training scripts often save {"model": sd} or {"state_dict": sd}; Meta's SAM files are the bare dict.
    for key in ("model", "state_dict"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state dict (a dict of tensors), but a {type(obj).__name__}")
    return dict(obj)


def _require_file(path: PathLike) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"checkpoint file {path} does not exist")
    return path


def read_sam_state_dict(path: PathLike) -> Dict[str, torch.Tensor]:
    """Tensors of a torch-pickled SAM checkpoint, on the CPU, in their stored dtype.

    Loaded with `weights_only=True` (no arbitrary code runs). A dict nested under `"model"` or
    `"state_dict"` is unwrapped.
    """
    path = _require_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (zip, pickle, EOF errors: all mean the same to the user)
        if "weights_only" in str(e) or "Weights only load failed" in str(e):
            raise WeightsError(
                f"{path} holds Python objects besides tensors, which are not loaded for safety: re-save it "
                "as a plain state dict (torch.save(model.state_dict(), path))"
            ) from None
        raise _corrupt(path, "PyTorch checkpoint", e) from None
    return _unwrap(obj, path)


def read_panosamic_state_dict(path: PathLike) -> Dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` file, on the CPU, in their stored dtype."""
    from safetensors.torch import load_file

    path = _require_file(path)
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # noqa: BLE001  (SafetensorError, truncated data)
        raise _corrupt(path, "safetensors file", e) from None


def read_safetensors_shapes(path: PathLike) -> Shapes:
    """`{key: shape}` of a `.safetensors` file, from its header only (no tensor data is read)."""
    from safetensors import safe_open

    path = _require_file(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: tuple(int(s) for s in f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # noqa: BLE001
        raise _corrupt(path, "safetensors file", e) from None


read_panosamic_shapes = read_safetensors_shapes


def read_sam_shapes(path: PathLike) -> Shapes:
    """`{key: shape}` of a torch checkpoint, without reading the tensors into memory.

    Zip-format files (every SAM release) are memory-mapped, so only the pickled index is read;
    the legacy format cannot be mapped and is loaded fully.
    """
    path = _require_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001  (legacy format, or corrupt: the full read says which)
        return {k: tuple(v.shape) for k, v in read_sam_state_dict(path).items()}
    return {k: tuple(v.shape) for k, v in _unwrap(obj, path).items()}


def read_shapes(path: PathLike) -> Shapes:
    """`{key: shape}` of a `.safetensors` or torch checkpoint, chosen by extension."""
    return read_safetensors_shapes(path) if str(path).endswith(".safetensors") else read_sam_shapes(path)


# --- loading into a model ----------------------------------------------------------------


def _list_keys(keys: Sequence[str], limit: int = 10) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return f"{len(keys)} ({shown}{', ...' if len(keys) > limit else ''})"


def _panosamic_summary(shapes: Mapping[str, Sequence[int]]) -> Dict[str, Any]:
    """What a feature_fuser/semantic_decoder layout encodes: modality count, classes, dual view, width."""
    out: Dict[str, Any] = {}
    neck = shapes.get("feature_fuser.fusion_blocks.0.neck.0.weight")
    if neck is not None and len(neck) >= 2 and neck[0]:
        out["width"], out["modalities"] = int(neck[0]), int(neck[1]) // int(neck[0])
    head = shapes.get("semantic_decoder.decoder_head.3.weight")
    if head is not None:
        out["classes"] = int(head[0])
    out["dual"] = any(k.startswith("semantic_decoder.decoder_attention.") for k in shapes)
    out["blocks"] = len({k.split(".")[2] for k in shapes if k.startswith("feature_fuser.fusion_blocks.")})
    return out


def _sam_summary(shapes: Mapping[str, Sequence[int]]) -> Dict[str, Any]:
    """What a SAM layout encodes: width, block count, input grid, prompt dimension."""
    out: Dict[str, Any] = {}
    patch = shapes.get("image_encoder.patch_embed.proj.weight")
    if patch is not None:
        out["width"] = int(patch[0])
    out["blocks"] = len({k.split(".")[2] for k in shapes if k.startswith("image_encoder.blocks.")})
    pos = shapes.get("image_encoder.pos_embed")
    if pos is not None and len(pos) >= 2:
        out["grid"] = int(pos[1])
    neck = shapes.get("image_encoder.neck.0.weight")
    if neck is not None:
        out["prompt_dim"] = int(neck[0])
    return out


def _sam_name(summary: Mapping[str, Any]) -> str:
    names = {(768, 12): "vit_b", (1024, 24): "vit_l", (1280, 32): "vit_h"}
    name = names.get((summary.get("width"), summary.get("blocks")))
    return name or f"a ViT of width {summary.get('width')} with {summary.get('blocks')} blocks"


def _mods(n: int) -> str:
    return "+".join(MODALITIES[:n]) if 1 <= n <= 3 else f"{n} modalities"


def _diagnose(part: str, given: Mapping[str, Sequence[int]], expected: Mapping[str, Sequence[int]]) -> str:
    """A guess, in words, of why a checkpoint's layout differs from the model's."""
    hints = []
    if part == "panosamic":
        f, m = _panosamic_summary(given), _panosamic_summary(expected)
        if f.get("width") and m.get("width") and f["width"] != m["width"]:
            hints.append(f"this checkpoint was trained on a SAM encoder of width {f['width']} but the model's "
                         f"encoder has width {m['width']}: build the model with the matching size")
        elif f.get("modalities") and m.get("modalities") and f["modalities"] != m["modalities"]:
            hints.append(f"this checkpoint fuses {f['modalities']} modalities ({_mods(f['modalities'])}) but the "
                         f"model was built for {m['modalities']} ({_mods(m['modalities'])}): build it with "
                         f"modalities={list(MODALITIES[:f['modalities']])}")
        if f.get("classes") and m.get("classes") and f["classes"] != m["classes"]:
            hints.append(f"this checkpoint predicts {f['classes']} classes but the model was built for "
                         f"{m['classes']}: build it with num_classes={f['classes']}")
        if f["dual"] != m["dual"] and f.get("blocks"):
            hints.append(f"this checkpoint is {'dual' if f['dual'] else 'single'}-view but the model was built "
                         f"{'dual' if m['dual'] else 'single'}-view: build it with dual_view={f['dual']}")
        if f.get("blocks") and m.get("blocks") and f["blocks"] != m["blocks"]:
            hints.append(f"this checkpoint has {f['blocks']} fusion blocks, the model {m['blocks']} (one per "
                         "global-attention block of the encoder): use the SAM size it was trained with")
    else:
        f, m = _sam_summary(given), _sam_summary(expected)
        if (f.get("width"), f.get("blocks")) != (m.get("width"), m.get("blocks")) and f.get("width"):
            hints.append(f"this SAM checkpoint is {_sam_name(f)} but the model was built for {_sam_name(m)}: "
                         "pass the SAM checkpoint of the model's size, or build the model for this one")
        elif f.get("grid") and m.get("grid") and f["grid"] != m["grid"]:
            hints.append(f"this SAM checkpoint has a {f['grid']}x{f['grid']} token grid, the model "
                         f"{m['grid']}x{m['grid']}: build it with the checkpoint's image_size")
        if f.get("prompt_dim") and m.get("prompt_dim") and f["prompt_dim"] != m["prompt_dim"]:
            hints.append(f"prompt_embed_dim is {f['prompt_dim']} in the checkpoint, {m['prompt_dim']} in the model")
    if hints:
        return "Probably: " + "; ".join(hints) + ". Or omit the config so it is read from the tensors."
    return ("The file does not match the model's architecture or is from another model; omit the config so it "
            "is read from the tensors, or check the file.")


def _check_part(part: str, state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                source: str, strict: bool) -> Dict[str, torch.Tensor]:
    """The entries of `state` to copy into the model's `part`, after checking keys and shapes."""
    own, other = (SAM_PREFIXES, PANOSAMIC_PREFIXES) if part == "sam" else (PANOSAMIC_PREFIXES, SAM_PREFIXES)
    label = "SAM" if part == "sam" else "PanoSAMic"
    foreign = [k for k in state if k.startswith(other)]
    if foreign:
        if not any(k.startswith(own) for k in state):
            wrong = "PanoSAMic (feature_fuser/semantic_decoder)" if part == "sam" else "SAM (image_encoder/...)"
            arg = "panosamic=" if part == "sam" else "sam="
            raise WeightsError(
                f"{source} was given as the {label} checkpoint but holds {wrong} weights: the files are swapped; "
                f"pass it as {arg}"
            )
        raise WeightsError(
            f"{source} was given as the {label} checkpoint but also holds {len(foreign)} keys of the other part "
            f"({_list_keys(foreign)}): a {label} checkpoint holds only {', '.join(p + '*' for p in own)}"
        )
    expected = {k: tuple(v.shape) for k, v in target.items() if k.startswith(own)}
    given = {k: tuple(v.shape) for k, v in state.items()}
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    mismatched = [k for k in expected if k in given and given[k] != expected[k]]
    if mismatched or (strict and (missing or unexpected)):
        lines = [f"{source} does not fit the model's {label} part ({', '.join(p + '*' for p in own)}):"]
        if missing:
            lines.append(f"  missing from the file: {_list_keys(missing)}")
        if unexpected:
            lines.append(f"  not in the model: {_list_keys(unexpected)}")
        if mismatched:
            shown = "; ".join(f"{k} {list(given[k])} in the file vs {list(expected[k])} in the model"
                              for k in sorted(mismatched)[:10])
            lines.append(f"  different shapes: {len(mismatched)} ({shown}{'; ...' if len(mismatched) > 10 else ''})")
        lines.append("  " + _diagnose(part, given, expected))
        lines.append("  Nothing was loaded into this part.")
        raise WeightsError("\n".join(lines))
    if missing or unexpected:  # strict=False: load what matches, but say what did not
        warnings.warn(f"loading {source} with strict=False: {len(missing)} model keys not in the file "
                      f"({_list_keys(missing)}) keep their values; {len(unexpected)} file keys ignored "
                      f"({_list_keys(unexpected)})", stacklevel=3)
    # Cast to each target's dtype (the released files may be bf16; the model is usually fp32).
    return {k: state[k].to(dtype=target[k].dtype) for k in expected if k in given}


def _as_state_dict(value: Any, part: str) -> Tuple[Mapping[str, torch.Tensor], str]:
    """The tensors `value` names (a state dict is used as is) and a description of where they come from."""
    if isinstance(value, Mapping):
        return value, f"the given {'SAM' if part == 'sam' else 'PanoSAMic'} state dict"
    if part == "sam":
        path = resolve_sam_checkpoint(value)
        state = read_panosamic_state_dict(path) if str(path).endswith(".safetensors") else read_sam_state_dict(path)
    else:
        path = resolve_panosamic_checkpoint(value)
        state = read_panosamic_state_dict(path) if str(path).endswith(".safetensors") else read_sam_state_dict(path)
    return state, str(path)


def load_weights(model: torch.nn.Module, sam: Union[PathLike, StateDict, None] = None,
                 panosamic: Union[PathLike, StateDict, None] = None, strict: bool = True) -> torch.nn.Module:
    """Copies SAM and/or PanoSAMic weights into `model` (in place) and returns it.

    `sam`: a path, URL or preset name (see `resolve_sam_checkpoint`) or a state dict with the
    `image_encoder.*`, `prompt_encoder.*`, `mask_decoder.*` keys. `panosamic`: a path, folder or
    Hub repo id (see `resolve_panosamic_checkpoint`) or a state dict with `feature_fuser.*`,
    `semantic_decoder.*`. Either may be None: that part keeps its current values.

    Both parts are checked before anything is copied: with `strict=True` (default) every key
    of the part must be present with the model's shape and no other key may be there; with
    `strict=False` missing and extra keys are allowed (and warned about), wrong shapes are not.
    Tensors are cast to the dtype of the model's tensor they replace and copied to its device.
    """
    if sam is None and panosamic is None:
        raise WeightsError("load_weights needs sam=..., panosamic=... or both")
    target = model.state_dict()
    updates: Dict[str, torch.Tensor] = {}
    # Check everything first so an error leaves the model untouched.
    for part, value in (("sam", sam), ("panosamic", panosamic)):
        if value is None:
            continue
        state, source = _as_state_dict(value, part)
        updates.update(_check_part(part, state, target, source, strict))
    with torch.no_grad():
        for key, value in updates.items():
            target[key].copy_(value)  # state_dict() tensors share storage with the parameters/buffers
    return model


# --- one call: resolve, configure, build, load -------------------------------------------------


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """A PanoSAMic checkpoint resolved once, before any model is built.

    checkpoint: the local `model.safetensors` (downloaded from the Hub if needed).
    sam: what names the SAM weights: a local file, a state dict, a preset name or URL still to
        download, or None (then the config's `vit_model` is downloaded).
    sam_path: the local SAM file when it is on disk already (else None).
    config: the validated architecture; config_source: where it came from (a file, the
        given value or "tensor shapes").
    panosamic_shapes: {key: shape} of the checkpoint when they were read (None otherwise).
    """

    checkpoint: Path
    sam: Any
    sam_path: Optional[Path]
    config: Dict[str, Any]
    config_source: str
    panosamic_shapes: Optional[Shapes] = None


def resolve_checkpoint(checkpoint: PathLike = HUB_REPO_ID, subfolder: Optional[str] = None,
                       sam: Union[PathLike, StateDict, None] = None, config: Optional[ConfigLike] = None,
                       revision: Optional[str] = None, token: Union[str, bool, None] = None) -> ResolvedCheckpoint:
    """Where a checkpoint's files are and which architecture they hold (see `load_model` for the
    arguments); the one resolution behind `load_model` and `checkpoint_info`, so both describe
    the same model. Reads only headers: no tensor data, no model built."""
    ckpt = resolve_panosamic_checkpoint(checkpoint, subfolder=subfolder, revision=revision, token=token)
    sam_spec: Any = sam if sam is not None else find_companions(ckpt)["sam"]
    sam_path = local_sam_checkpoint(sam_spec)
    shapes = None
    if config is not None:
        cfg, source = resolve_config(config), "the given config" if isinstance(config, Mapping) else str(config)
    else:
        config_path = companion_config(ckpt, checkpoint, subfolder, revision, token)
        if config_path is not None:
            cfg, source = resolve_config(config_path), str(config_path)
        else:
            sam_shapes = None
            if isinstance(sam_spec, Mapping):
                sam_shapes = {k: tuple(v.shape) for k, v in sam_spec.items()}
            elif sam_path is not None:
                sam_shapes = read_shapes(sam_path)
            shapes = read_panosamic_shapes(ckpt)
            try:
                cfg, source = infer_config(shapes, sam_shapes), "tensor shapes"
            except ConfigError as e:
                raise WeightsError(f"cannot read the architecture from {ckpt}: {e}") from None
    return ResolvedCheckpoint(ckpt, sam_spec, sam_path, cfg, source, shapes)


def load_model(checkpoint: PathLike = HUB_REPO_ID, subfolder: Optional[str] = None,
               sam: Union[PathLike, StateDict, None] = None, config: Optional[ConfigLike] = None,
               device: Union[str, torch.device, None] = None, dtype: Union[str, torch.dtype, None] = None,
               revision: Optional[str] = None, token: Union[str, bool, None] = None) -> torch.nn.Module:
    """A PanoSAMic model with its weights loaded, in eval mode.

    - `checkpoint` + `subfolder`: the PanoSAMic weights (file, folder or Hub repo id; see
      `resolve_panosamic_checkpoint`). The released ones are in `RELEASED_SUBFOLDERS`.
    - `config`: the architecture (dict, config.json path or preset name). Default: a
      config.json beside the checkpoint, else read from the tensor shapes (with the SAM
      file's shapes when it is already on disk).
    - `sam`: the SAM weights (path, URL, preset name or state dict). Default: `sam.pth` or
      `sam_vit_*.pth` beside the checkpoint, else the config's SAM size, downloaded once.
    - `device`, `dtype`: where the model goes and the dtype its weights are cast to (a torch
      dtype or "float32"/"bfloat16"/"float16"; default: CPU, float32).
      `Predictor.from_pretrained` instead keeps float32 weights and lets the Predictor autocast.
    """
    from .build import build_model
    from .device import resolve_dtype

    if dtype is not None:  # the app and CLI pass names
        try:
            dtype = resolve_dtype(dtype)
        except InputError as e:
            raise WeightsError(str(e)) from None
    found = resolve_checkpoint(checkpoint, subfolder, sam, config, revision, token)
    cfg = found.config
    logger.info("PanoSAMic %s from %s", describe(cfg), found.checkpoint)

    sam_spec, sam_path = found.sam, found.sam_path
    if sam_spec is None:
        sam_spec = cfg.get("vit_model")
        if sam_spec not in SAM_CHECKPOINTS:
            raise WeightsError(
                f"the model ({describe(cfg)}) is not a released SAM size, so its SAM weights cannot be "
                "downloaded: pass sam=<path to the SAM checkpoint>"
            )
    if sam_path is None and not isinstance(sam_spec, Mapping):
        sam_path = resolve_sam_checkpoint(sam_spec)  # download (if needed) before the slow build
    model = build_model(cfg)
    load_weights(model, sam=sam_path if sam_path is not None else sam_spec, panosamic=found.checkpoint)
    model.eval()
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    return model


def checkpoint_info(checkpoint: PathLike = HUB_REPO_ID, subfolder: Optional[str] = None,
                    sam: Optional[PathLike] = None, config: Optional[ConfigLike] = None,
                    revision: Optional[str] = None, token: Union[str, bool, None] = None) -> Dict[str, Any]:
    """What a checkpoint is, without building the model (`python -m panosamic info`): the
    resolved paths, architecture, inputs, classes and parameter counts (millions), from the
    same resolution as `load_model`."""
    from .datasets import dataset_for_num_classes

    found = resolve_checkpoint(checkpoint, subfolder, sam, config, revision, token)
    cfg = found.config
    shapes = found.panosamic_shapes if found.panosamic_shapes is not None else read_panosamic_shapes(found.checkpoint)
    ds = dataset_for_num_classes(cfg["num_classes"])
    sam_params = None
    if found.sam_path is not None:
        sam_params = sum(int(np.prod(s)) for s in read_shapes(found.sam_path).values())
    return {
        "checkpoint": str(found.checkpoint),
        "sam": str(found.sam_path) if found.sam_path else (sam or cfg.get("vit_model")),
        "config_source": found.config_source, "architecture": describe(cfg), "modalities": cfg["modalities"],
        "num_classes": cfg["num_classes"], "dual_view": cfg["dual_view_fusion"],
        "erp_size": [cfg["image_size"], cfg["image_size"] // 2], "dataset": ds.name, "classes": list(ds.classes),
        "panosamic_params_M": round(sum(int(np.prod(s)) for s in shapes.values()) / 1e6, 3),
        "sam_params_M": round(sam_params / 1e6, 3) if sam_params is not None else None,
        "config": cfg,
    }
