"""The one place that turns device and dtype arguments into torch objects.

`resolve_device` and `resolve_dtype` are used by the Predictor, `weights.load_model`, the CLI
and the benchmark, so every entry point accepts the same names and fails with the same
message (an `InputError` that says what to use instead).
"""

from __future__ import annotations

from typing import Optional, Union

import torch

from .errors import InputError

DeviceLike = Union[str, torch.device, None]
DtypeLike = Union[str, torch.dtype, None]

#: dtype names accepted everywhere (lower case).
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def default_device() -> torch.device:
    """cuda > mps > cpu."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(device: DeviceLike = None) -> torch.device:
    """A torch device that exists here: None or "auto" picks cuda > mps > cpu; a named one
    that this machine or torch build lacks is an InputError that says what to use instead."""
    if device is None or str(device) == "auto":
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"device {device!r} is not a device name: use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device}: CUDA is not available on this machine/torch build; use cpu or auto")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(f"device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError(f"device {device}: MPS is not available here; use cpu or auto")
    return dev


def resolve_dtype(dtype: DtypeLike = None, device: Optional[torch.device] = None) -> torch.dtype:
    """A torch dtype from None (float32), a torch dtype or a name in `DTYPES` (any case).

    With `device`, float16 is refused off CUDA (autocast runs it on CUDA only).
    Raises InputError for an unknown name.
    """
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        resolved = dtype
    elif str(dtype).lower() in DTYPES:
        resolved = DTYPES[str(dtype).lower()]
    else:
        raise InputError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    if device is not None and resolved == torch.float16 and torch.device(device).type != "cuda":
        raise InputError("float16 runs on CUDA only; use float32 or bfloat16 on this device")
    return resolved
