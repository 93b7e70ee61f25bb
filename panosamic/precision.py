"""Which numeric precision the ViT encoder runs in, and the CPU default chosen from this CPU.

Precisions (`Predictor(precision=...)`, `--dtype` in the CLI, the app and the benchmark):

- "float32": everything in float32 (the reference numbers are float32's).
- "bfloat16" / "float16": the ViT encoder under `torch.autocast` (float16 on CUDA only).
- "int8": the ViT blocks' `nn.Linear` layers dynamically quantised to int8 (weights per
  tensor, activations per call; `torch.ao.quantization.quantize_dynamic`, fbgemm/x86 kernels),
  attention products, patch embedding and neck in float32. CPU only.
- "auto" (or None): `default_precision` for the device and the model.

Fusion, the semantic decoder and SAM's prompt decoder always run in float32: they cost a few
per cent of a Run, and rounding there moves labels directly.

Why int8 is the CPU default (`default_precision`): on the project's 2-core AMD EPYC (AVX2, no
native bfloat16) one vit_h image through the encoder took 0.53x float32's time in int8 (52.7 s
vs 98.7 s), vit_b 0.56x, while bfloat16 autocast, emulated without AVX512-BF16, took 4.6-5.6x
(`python -m devtools.encoder_variants`, a shared machine); on an earlier AVX512 machine int8 was
ahead of bfloat16 too (vit_b 9.3 s vs 10.6 s, vit_h 38.9 s vs 50.4 s, float32 14.8 s / 87.4 s).
int8 keeps >= 99.5 % of float32's labels on the demos' held-out examples
(`tests/test_precision.py`). Where no int8 kernels exist (no fbgemm/x86 engine,
e.g. ARM builds) the default is bfloat16 when the CPU has native bfloat16 and float32 otherwise.
Encoders narrower than `MIN_INT8_DIM` (the tiny demo and reference models) stay float32: their
matrices are too small for quantising each call's activations to pay off.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional

from .errors import InputError

if TYPE_CHECKING:  # torch is imported where it is used: the CLI and the app read PRECISIONS at start
    import torch
    from torch import nn

#: every precision name accepted (lower case), and its short aliases.
PRECISIONS = ("auto", "float32", "bfloat16", "float16", "int8")
_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "qint8": "int8"}
_AUTOCAST = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16", "int8": "float32"}

#: encoders at least this wide (SAM's vit_b: 768) get int8 by default on a CPU with int8 kernels.
MIN_INT8_DIM = 768


@lru_cache(maxsize=1)
def int8_engine() -> Optional[str]:
    """The quantised engine torch offers for int8 linear layers here ("x86" or "fbgemm"), or
    None (no x86 int8 kernels: e.g. ARM's qnnpack, which is slower than float32 there)."""
    import torch

    engines = set(torch.backends.quantized.supported_engines)
    for name in ("x86", "fbgemm"):
        if name in engines:
            return name
    return None


@lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16, AMX, ARM BF16), as oneDNN
    sees it; without it bfloat16 is emulated and slower than float32."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_features() -> Dict[str, Any]:
    """What the CPU default is chosen from: torch's vector capability (e.g. "AVX2", "AVX512"),
    native bfloat16, the int8 engine."""
    import torch

    return {"capability": torch.backends.cpu.get_cpu_capability(), "native_bf16": native_bf16(),
            "int8_engine": int8_engine()}


def _name(precision: Any) -> str:
    if precision is None:
        return "auto"
    text = str(precision).replace("torch.", "").strip().lower()
    text = _ALIASES.get(text, text)
    if text not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    return text


def default_precision(device: Any, config: Optional[Mapping[str, Any]] = None) -> str:
    """The precision "auto" means for a model of `config` (any with "encoder_embed_dim"; None:
    a real-size one) on `device`: float32 off the CPU and for encoders narrower than
    `MIN_INT8_DIM`; on a CPU int8 where int8 kernels exist, else bfloat16 where the CPU has
    native bfloat16, else float32 (see the module docstring for the measurements)."""
    import torch

    if torch.device(device).type != "cpu":
        return "float32"
    if config is not None and int(config.get("encoder_embed_dim", MIN_INT8_DIM)) < MIN_INT8_DIM:
        return "float32"
    if int8_engine() is not None:
        return "int8"
    return "bfloat16" if native_bf16() else "float32"


def resolve_precision(precision: Any, device: Any, config: Optional[Mapping[str, Any]] = None,
                      dtype: Any = None) -> str:
    """A concrete precision name ("float32", "bfloat16", "float16" or "int8") for `device`.

    `precision` (or the older `dtype` keyword: give one of them, or the same in both) may be any
    name of `PRECISIONS`, an alias (fp32, bf16, fp16) or a torch dtype; None/"auto" is
    `default_precision(device, config)`. An InputError says what to use instead of a name that
    is unknown or cannot run on `device` (float16 off CUDA, int8 off the CPU or without int8
    kernels)."""
    name, other = _name(precision), _name(dtype)
    if name != "auto" and other != "auto" and name != other:
        raise InputError(f"precision {name!r} and dtype {other!r} disagree: give one of them")
    import torch

    name = name if name != "auto" else other
    dev = torch.device(device)
    if name == "auto":
        return default_precision(dev, config)
    if name == "float16" and dev.type != "cuda":
        raise InputError("float16 runs on CUDA only; use float32, bfloat16 or int8 on this device")
    if name == "int8" and dev.type != "cpu":
        raise InputError("int8 runs on the CPU only; use float32 or bfloat16 on this device")
    if name == "int8" and int8_engine() is None:
        raise InputError("this torch build has no int8 kernels for this CPU; use float32 or bfloat16")
    return name


def autocast_dtype(precision: str) -> "torch.dtype":
    """The dtype the encoder's autocast runs in (float32: none) for a resolved precision."""
    import torch

    return getattr(torch, _AUTOCAST[precision])


def encoder_precision(encoder: "nn.Module") -> str:
    """"int8" when `quantize_encoder` quantised this encoder, else "float32" (its weights)."""
    return getattr(encoder, "panosamic_precision", "float32")


def quantize_encoder(encoder: "nn.Module") -> "nn.Module":
    """Quantises the `nn.Linear` layers of the encoder's ViT blocks to int8, in place (their
    float32 weights are freed: vit_h's encoder shrinks from 2.5 GB to about 0.7 GB), and returns
    it. Idempotent. The patch embedding, the neck and the attention products stay float32."""
    import torch
    from torch import nn

    if encoder_precision(encoder) == "int8":
        return encoder
    engine = int8_engine()
    if engine is None:
        raise InputError("this torch build has no int8 kernels for this CPU; use float32 or bfloat16")
    if torch.backends.quantized.engine != engine:
        torch.backends.quantized.engine = engine
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice (torch 2.13)
        torch.ao.quantization.quantize_dynamic(encoder.blocks, {nn.Linear}, dtype=torch.qint8, inplace=True)
    encoder.panosamic_precision = "int8"
    return encoder


def apply_precision(model: "nn.Module", precision: str) -> None:
    """Prepares `model` (a PanoSAMic network, on the CPU for int8) for a resolved `precision`:
    int8 quantises its image encoder in place; a model whose encoder is int8 already cannot run
    in another precision (an InputError says to load it again)."""
    current = encoder_precision(model.image_encoder)
    if precision == "int8":
        quantize_encoder(model.image_encoder)
    elif current == "int8":
        raise InputError(f"this model's encoder was quantised to int8; load the checkpoint again for {precision}")
