"""Runners: where a batch's per-item work runs, handed to `evaluate_dataset` and the CLI.

A runner maps a task over items with one loaded model per worker:

    for row in runner.map(spec, task, items, log):
        ...

`spec` is a `panosamic.spec.ModelSpec`; `task(predictor, item) -> row` a picklable callable
(`panosamic.batch.SegmentTask`, `panosamic.evaluation.scoring.ScoreTask`); items and rows are
JSON-able dicts. Rows come in completion order. `LocalRunner` runs here, in order;
`panosamic.ray_engine.RayRunner` on Ray actors.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Iterator, Protocol, Sequence

from .spec import ModelSpec

Item = Dict[str, Any]
Task = Callable[[Any, Item], Dict[str, Any]]
Log = Callable[[str], None]


class Runner(Protocol):
    """Maps a task over items, each worker holding one model loaded from the spec."""

    name: str

    def map(self, spec: ModelSpec, task: Task, items: Sequence[Item], log: Log) -> Iterator[Dict[str, Any]]:
        ...  # pragma: no cover


class LocalRunner:
    """One model in this process; items in order. The model is loaded only when there is work."""

    name = "local"

    def map(self, spec: ModelSpec, task: Task, items: Sequence[Item], log: Log) -> Iterator[Dict[str, Any]]:
        if not items:
            return
        t_load = time.perf_counter()
        predictor = spec.load()
        log(f"panosamic: model on {predictor.device} (loaded in {time.perf_counter() - t_load:.1f} s); "
            f"{len(items)} item(s) to run")
        for item in items:
            yield task(predictor, item)
