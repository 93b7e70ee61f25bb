"""The checks of the studio's event arguments (numbers typed or sent by API clients, the maps a
checkpoint reads): each turns a bad value into an `InputError` that says what to send instead."""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from ..errors import InputError
from .checkpoints import MODALITY_NAMES


def check_maps(modalities: Optional[Tuple[str, ...]], has_depth: bool, has_normals: bool) -> None:
    """InputError when the checkpoint reads a map that was not given (normals follow from depth)."""
    if modalities is None:
        return
    missing = [MODALITY_NAMES[m] for m in modalities
               if m == "depth" and not has_depth or m == "normals" and not (has_normals or has_depth)]
    if missing:
        raise InputError(f"This checkpoint needs the {' and '.join(missing)} map too: upload it, "
                         "or pick Automatic, which takes the checkpoint for the maps you have.")


def positive_number(value: Any, what: str, default: float, allow_zero: bool = False) -> float:
    """A finite number in (0, 1000] (or 0 with allow_zero, e.g. "auto"), else InputError."""
    if value is None or value == "":
        return default
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number.") from None
    if not (np.isfinite(v) and (0 < v or allow_zero and v == 0) and v <= 1000):
        raise InputError(f"{what} must be a positive number up to 1000, got {str(value)[:20]}.")
    return v


def finite_degrees(value: Any, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"The {what} must be a number (degrees).") from None
    if not np.isfinite(v):
        raise InputError(f"The {what} must be a finite number (degrees).")
    return v


def whole_number(value: Any, what: str, lo: int, hi: int, default: Optional[int] = None) -> int:
    if (value is None or value == "") and default is not None:
        return default
    if isinstance(value, bool):
        raise InputError(f"The {what} must be a whole number from {lo} to {hi}.")
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise InputError(f"The {what} must be a whole number from {lo} to {hi}.") from None
    if not (np.isfinite(f) and f == int(f) and lo <= f <= hi):
        raise InputError(f"The {what} must be a whole number from {lo} to {hi}, got {value!r}.")
    return int(f)
