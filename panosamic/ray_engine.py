"""Batch inference across GPUs and machines with Ray Data (``--engine ray``).

The inputs become a Ray dataset (``ray.data.from_items``, one row per panorama); a pool of
actors, each holding one loaded model, maps over it (``map_batches`` with a callable
class, ``concurrency`` = the number of actors, ``num_gpus`` per actor on GPU machines, CPU
actors otherwise). `RayRunner` is a `panosamic.runner` runner like `LocalRunner`: every actor
runs the task it is handed (``panosamic.batch.SegmentTask`` for ``predict``,
``panosamic.evaluation.scoring.ScoreTask`` for ``evaluate``), so it writes the same files,
byte for byte, into the output folder, and returns the row the driver puts into
``summary.csv`` / ``per_sample.csv``. This module knows neither the CLI nor the evaluation.

Inputs and the output folder must be reachable under the same path from every node (a
shared file system) and ``panosamic`` importable on every node. Ray is optional:
``pip install 'ray[data]'`` (or ``pip install .[ray]``, ``-r requirements-ray.txt``).
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np

from .errors import InputError
from .runner import Item, Log, Task
from .spec import ModelSpec

__all__ = ["RayUnavailableError", "require_ray", "start_local", "ray_session", "plan_actors", "RayRunner",
           "TaskWorker"]

INSTALL_HINT = ("pip install 'ray[data]' (or pip install -r requirements-ray.txt, or pip install .[ray]); "
                "or run without --engine ray")


class RayUnavailableError(InputError):
    """Ray (with Ray Data) is not installed, or the cluster cannot run the requested actors."""


def require_ray():
    """The ``ray`` module with ``ray.data`` imported, or a :class:`RayUnavailableError`."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RayUnavailableError(f"--engine ray needs Ray Data, which is not installed here: {INSTALL_HINT}") from None
    return ray


def _package_path() -> str:
    return str(Path(__file__).resolve().parent.parent)


def start_local(num_cpus: Optional[int] = None, num_gpus: Optional[int] = None, **kwargs):
    """Start a Ray runtime on this machine whose workers can import this checkout of panosamic."""
    ray = require_ray()
    path = os.pathsep.join(p for p in (_package_path(), os.environ.get("PYTHONPATH", "")) if p)
    kwargs.setdefault("include_dashboard", False)
    kwargs.setdefault("log_to_driver", False)
    kwargs.setdefault("object_store_memory", 256 * 1024 ** 2)  # rows are small: paths and statistics
    ray.init(num_cpus=num_cpus, num_gpus=num_gpus, runtime_env={"env_vars": {"PYTHONPATH": path}}, **kwargs)
    return ray


@contextmanager
def ray_session(address: Optional[str] = None, num_cpus: Optional[int] = None):
    """Yields ``ray``: the running runtime if there is one, else a cluster at ``address``
    (``auto`` or ``ray://host:10001``), else a local runtime started here (and stopped after)."""
    ray = require_ray()
    started = False
    if not ray.is_initialized():
        if address:
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise RayUnavailableError(f"cannot connect to the Ray cluster at {address}: {e}; start it with "
                                          "`ray start --head` or check --ray-address") from None
        else:
            start_local(num_cpus=num_cpus)
        started = True
    # Ray Data logs its plan and progress at INFO/WARNING; the CLI shows its own progress bar.
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def plan_actors(ray, n_items: int, num_actors: Optional[int] = None, num_gpus_per_actor: Optional[float] = None,
                num_cpus_per_actor: float = 1) -> Tuple[int, float, float]:
    """``(actors, gpus per actor, cpus per actor)``: by default one actor per GPU of the cluster,
    or, without GPUs, one per ``num_cpus_per_actor`` CPUs; never more actors than inputs."""
    res = ray.cluster_resources()
    gpus, cpus = float(res.get("GPU", 0)), float(res.get("CPU", 1))
    if num_gpus_per_actor is None:
        num_gpus_per_actor = 1.0 if gpus >= 1 else 0.0
    if num_gpus_per_actor < 0 or num_cpus_per_actor <= 0:
        raise InputError("--num-gpus-per-actor must be >= 0 and --num-cpus-per-actor > 0")
    if num_gpus_per_actor > 0 and gpus < num_gpus_per_actor:
        raise RayUnavailableError(f"the Ray cluster has {gpus:g} GPU(s), fewer than the {num_gpus_per_actor:g} "
                                  "one actor asks for; pass --num-gpus-per-actor 0 to run on CPUs")
    if num_actors is None:
        num_actors = int(gpus // num_gpus_per_actor) if num_gpus_per_actor > 0 else int(cpus // num_cpus_per_actor)
    if num_actors < 1:
        raise InputError("--ray-actors must be at least 1")
    return max(1, min(int(num_actors), n_items)), float(num_gpus_per_actor), float(num_cpus_per_actor)


class TaskWorker:
    """A Ray actor: loads the model once, then runs the task on each item it is given."""

    def __init__(self, spec: ModelSpec, task: Task, num_threads: Optional[int] = None) -> None:
        import torch

        if num_threads:
            torch.set_num_threads(int(num_threads))
        self.predictor = spec.load()
        self.task = task

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        results = [json.dumps(self.task(self.predictor, json.loads(str(item)))) for item in batch["item"]]
        return {"result": np.array(results, dtype=object)}


@dataclass(frozen=True)
class RayRunner:
    """Items spread over Ray actors (see the module docstring); the same rows as `LocalRunner`,
    in completion order.

    address: an existing cluster (``auto``, ``ray://head:10001``); None starts Ray here.
    num_actors: None = one per GPU, else one per ``num_cpus_per_actor`` CPUs (never more than
        items). num_gpus_per_actor: None = 1 on a cluster with GPUs, else 0.
    """

    address: Optional[str] = None
    num_actors: Optional[int] = None
    num_gpus_per_actor: Optional[float] = None
    num_cpus_per_actor: float = 1
    name = "ray"

    def map(self, spec: ModelSpec, task: Task, items: Sequence[Item], log: Optional[Log] = None
            ) -> Iterator[Dict[str, Any]]:
        if not items:
            return
        with ray_session(self.address, None) as ray:
            actors, gpus, cpus = plan_actors(ray, len(items), self.num_actors, self.num_gpus_per_actor,
                                             self.num_cpus_per_actor)
            if log:
                log(f"panosamic: Ray: {actors} actor(s), {gpus:g} GPU and {cpus:g} CPU each")
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = False
            # One block per input so that every actor gets work as soon as it is free.
            ds = ray.data.from_items([{"item": json.dumps(item)} for item in items], override_num_blocks=len(items))
            kwargs = {"spec": spec.for_workers(gpus), "task": task,
                      "num_threads": None if gpus > 0 else max(1, int(cpus))}
            ds = ds.map_batches(TaskWorker, fn_constructor_kwargs=kwargs, batch_size=1, concurrency=actors,
                                num_gpus=gpus, num_cpus=cpus)
            for row in ds.iter_rows():
                yield json.loads(row["result"])
