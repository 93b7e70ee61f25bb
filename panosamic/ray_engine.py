"""Batch inference across GPUs and machines with Ray Data (``--engine ray``).

The inputs become a Ray dataset (``ray.data.from_items``, one row per panorama); a pool of
actors, each holding one loaded model, maps over it (``map_batches`` with a callable
class, ``concurrency`` = the number of actors, ``num_gpus`` per actor on GPU machines, CPU
actors otherwise). Every actor runs the local engine's own per-panorama function
(``cli._predict_row`` for ``predict``, :func:`panosamic.evaluation.evaluate.score_one_safely`
for ``evaluate``), so it writes the same files, byte for byte, into the output folder,
and returns the row the driver puts into ``summary.csv`` / ``per_sample.csv``.

Inputs and the output folder must be reachable under the same path from every node (a
shared file system) and ``panosamic`` importable on every node. Ray is optional:
``pip install 'ray[data]'`` (or ``pip install .[ray]``, ``-r requirements-ray.txt``).
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .errors import InputError

__all__ = ["RayUnavailableError", "require_ray", "start_local", "ray_session", "plan_actors",
           "predict_on_ray", "evaluate_on_ray", "PredictWorker", "EvaluateWorker"]

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


def _map(ray, items: List[Dict[str, Any]], worker, kwargs: Dict[str, Any], actors: int, gpus: float,
         cpus: float) -> Iterator[Dict[str, Any]]:
    """Rows returned by ``worker`` actors for ``items``, in completion order."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    # One block per input so that every actor gets work as soon as it is free.
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(worker, fn_constructor_kwargs=kwargs, batch_size=1, concurrency=actors,
                        num_gpus=gpus, num_cpus=cpus)
    for row in ds.iter_rows():
        yield json.loads(row["result"])


def _model_for_actor(model: Dict[str, Any], gpus: float) -> Dict[str, Any]:
    m = dict(model)
    for key in ("checkpoint", "sam", "config"):  # actors may run in another working directory
        value = m.get(key)
        if isinstance(value, str) and Path(value).expanduser().exists():
            m[key] = str(Path(value).expanduser().resolve())
    if m.get("device") in (None, "auto"):
        m["device"] = "cuda" if gpus > 0 else "cpu"  # Ray sets CUDA_VISIBLE_DEVICES per actor
    return m


class _ModelWorker:
    """Loads the model once per actor."""

    def __init__(self, model: Dict[str, Any], max_depth: float, num_threads: Optional[int] = None) -> None:
        import torch

        from .weights import from_pretrained

        if num_threads:
            torch.set_num_threads(int(num_threads))
        self.predictor = from_pretrained(max_depth=max_depth, **model)


class PredictWorker(_ModelWorker):
    """``predict`` in an actor: the local engine's per-panorama function, files written to ``out``."""

    def __init__(self, model: Dict[str, Any], max_depth: float, options: Dict[str, Any], out: str,
                 num_threads: Optional[int] = None) -> None:
        super().__init__(model, max_depth, num_threads)
        self.args = SimpleNamespace(**options)
        self.out = Path(out)

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        from .cli import _predict_row

        results = []
        for i in range(len(batch["index"])):
            opt = lambda key: (str(batch[key][i]) or None)  # noqa: E731  "" = not given
            row, message = _predict_row(self.predictor, Path(str(batch["path"][i])), str(batch["stem"][i]),
                                        Path(opt("depth")) if opt("depth") else None,
                                        Path(opt("normals")) if opt("normals") else None, self.args, self.out)
            results.append(json.dumps({"index": int(batch["index"][i]), "row": row, "message": message}))
        return {"result": np.array(results, dtype=object)}


class EvaluateWorker(_ModelWorker):
    """``evaluate`` in an actor: :func:`score_one_safely` on each sample."""

    def __init__(self, dataset: str, root: str, model: Dict[str, Any], max_depth: float,
                 labels_dir: Optional[str], mask_black: bool, num_threads: Optional[int] = None) -> None:
        from .evaluation.layouts import get_layout

        super().__init__(model, max_depth, num_threads)
        self.layout = get_layout(dataset, root)
        self.labels_dir = Path(labels_dir) if labels_dir else None
        self.mask_black = mask_black

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        from .evaluation.evaluate import score_one_safely
        from .evaluation.layouts import Sample

        results = []
        for area, name, path in zip(batch["area"], batch["name"], batch["path"]):
            sample = Sample(str(area), str(name), Path(str(path)))
            row = score_one_safely(self.predictor, self.layout, sample, self.labels_dir, self.mask_black)
            results.append(json.dumps(row))
        return {"result": np.array(results, dtype=object)}


def predict_on_ray(jobs: Sequence[Dict[str, Any]], model: Dict[str, Any], max_depth: float,
                   options: Dict[str, Any], out: Path, address: Optional[str] = None,
                   num_actors: Optional[int] = None, num_gpus_per_actor: Optional[float] = None,
                   num_cpus_per_actor: float = 1, log=None) -> Iterator[Tuple[int, Dict[str, Any], Optional[str]]]:
    """``(index, summary row, message or None)`` per job (``path``, ``stem``, ``depth``, ``normals``)."""
    items = [{"index": i, "path": str(j["path"]), "stem": j["stem"], "depth": str(j["depth"] or ""),
              "normals": str(j["normals"] or "")} for i, j in enumerate(jobs)]
    with ray_session(address, None) as ray:
        actors, gpus, cpus = plan_actors(ray, len(items), num_actors, num_gpus_per_actor, num_cpus_per_actor)
        if log:
            log(f"panosamic: Ray: {actors} actor(s), {gpus:g} GPU and {cpus:g} CPU each")
        kwargs = {"model": _model_for_actor(model, gpus), "max_depth": max_depth, "options": options,
                  "out": str(Path(out).resolve()), "num_threads": None if gpus > 0 else max(1, int(cpus))}
        for res in _map(ray, items, PredictWorker, kwargs, actors, gpus, cpus):
            yield res["index"], res["row"], res["message"]


def evaluate_on_ray(layout, samples, model: Dict[str, Any], max_depth: float, labels_dir: Optional[Path],
                    mask_black: bool, address: Optional[str] = None, num_actors: Optional[int] = None,
                    num_gpus_per_actor: Optional[float] = None, num_cpus_per_actor: float = 1,
                    log=None) -> Iterator[Dict[str, Any]]:
    """Per-sample rows of :func:`panosamic.evaluation.evaluate.score_sample`, computed by actors."""
    items = [{"area": s.area, "name": s.name, "path": str(s.path.resolve())} for s in samples]
    with ray_session(address, None) as ray:
        actors, gpus, cpus = plan_actors(ray, len(items), num_actors, num_gpus_per_actor, num_cpus_per_actor)
        if log:
            log(f"panosamic: Ray: {actors} actor(s), {gpus:g} GPU and {cpus:g} CPU each")
        kwargs = {"dataset": layout.name, "root": str(layout.root.resolve()), "model": _model_for_actor(model, gpus),
                  "max_depth": max_depth, "labels_dir": str(labels_dir.resolve()) if labels_dir else None,
                  "mask_black": mask_black, "num_threads": None if gpus > 0 else max(1, int(cpus))}
        yield from _map(ray, items, EvaluateWorker, kwargs, actors, gpus, cpus)
