"""What the demo trainers share (scripts/train_demo.py, scripts/train_depth_demo.py): the
learning-rate schedule and the loss curve they log and save in metrics.json."""

from __future__ import annotations

import json
import math
import time
from typing import Callable, Dict, List, Optional

import numpy as np


def warmup_cosine(lr: float, warmup: int, steps: int, floor: float = 0.02) -> Callable[[int], float]:
    """The learning rate at each step (0-based) of `steps`: linear warm-up over `warmup` steps
    up to `lr`, then a cosine down to `floor` x `lr` at the last step."""

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        t = (step - warmup) / max(1, steps - warmup)
        return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))

    return lr_at


def set_lr(optimizer, lr: float) -> None:
    """`lr` for every parameter group of a torch optimizer."""
    for group in optimizer.param_groups:
        group["lr"] = lr


class LossCurve:
    """The training curve: `add(step, loss=..., ...)` each step; every `every` steps and at the
    last of `steps` one row (step, seconds since the start, the learning rate, the mean of each
    value over those steps, NaN ignored) is kept in `rows` and printed as JSON with the speed."""

    def __init__(self, lr_at: Callable[[int], float], steps: int, every: int):
        self.lr_at, self.steps, self.every = lr_at, steps, every
        self.rows: List[Dict[str, float]] = []
        self._window: Dict[str, List[float]] = {}
        self._t0 = time.perf_counter()

    def add(self, step: int, **values: float) -> Optional[Dict[str, float]]:
        for k, v in values.items():
            self._window.setdefault(k, []).append(float(v))
        if (step + 1) % self.every and step + 1 != self.steps:
            return None
        el = time.perf_counter() - self._t0
        row = {"step": step + 1, "seconds": round(el, 1), "lr": round(self.lr_at(step), 6),
               **{k: round(float(np.nanmean(v)), 4) for k, v in self._window.items()}}
        self.rows.append(row)
        self._window = {}
        print(json.dumps(row), f"({(step + 1) / el:.2f} steps/s)", flush=True)
        return row


__all__ = ["warmup_cosine", "set_lr", "LossCurve"]
