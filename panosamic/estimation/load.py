"""The one front door: :func:`load_estimator`.

``load_estimator("auto")`` tries the real model (:data:`~.hf.DEFAULT_MODEL`, Depth Anything V2
Metric Indoor Small): from the Hugging Face cache first, then from the Hub unless
``HF_HUB_OFFLINE=1``. If that cannot be done (offline without a cached copy, no network,
``transformers`` missing, a broken download) it falls back to the bundled demo and says so in
the estimator's ``note`` ("the demo estimator ran: the real model could not be fetched (...)")
and ``fallback`` (True); otherwise ``note`` is None and ``fallback`` False.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Union

from ..errors import InputError
from .demo import DEMO_CONFIG, DEMO_DIR, DemoDepthEstimator
from .hf import DEFAULT_MODEL, TransformersDepthEstimator

__all__ = ["load_estimator", "ESTIMATOR_CHOICES", "FALLBACK_NOTE"]

#: The names load_estimator understands besides a Hub id or a folder.
ESTIMATOR_CHOICES = ("auto", "demo")
FALLBACK_NOTE = "the demo estimator ran: the real model could not be fetched"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _is_demo_folder(path: Path) -> bool:
    cfg = path / "config.json"
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text(encoding="utf-8")).get("architecture") == DEMO_CONFIG["architecture"]
    except (OSError, ValueError):
        return False


def load_estimator(name_or_path: Union[str, os.PathLike] = "auto", device=None, *,
                   cache_dir: Optional[str] = None, revision: Optional[str] = None,
                   batch_size: Optional[int] = None, local_files_only: bool = False):
    """A depth estimator with ``.name``, ``.licence``, ``.metric``, ``.note`` and ``.fallback``.

    name_or_path:
        ``"auto"``: the real model if it can be had, else the demo (see the module docstring);
        ``"demo"``: the bundled toy (``assets/demo-depth``), never a download;
        a folder: a depth demo folder (config.json of ``panosamic-erp-unet``) or a saved
        ``transformers`` checkpoint;
        anything else: a Hugging Face Hub id (errors are raised, no fallback).
    device: ``"cpu"``, ``"cuda"``, ... or None / ``"auto"`` (cuda > mps > cpu).
    cache_dir, revision, batch_size: passed to :class:`~.hf.TransformersDepthEstimator`.
    local_files_only: "auto" tries only the Hugging Face cache (a caller that knows the Hub
        cannot be reached: no connection time-out before the demo takes over).
    """
    name = os.fspath(name_or_path)
    if name == "demo":
        est = DemoDepthEstimator(DEMO_DIR, device=device)
    elif name == "auto":
        est, reasons = None, []
        tries = [True] if _offline() or local_files_only else [True, False]  # the cache first, then the Hub
        for local_only in tries:
            try:
                est = TransformersDepthEstimator(DEFAULT_MODEL, revision=revision, device=device,
                                                 local_files_only=local_only, cache_dir=cache_dir,
                                                 batch_size=batch_size)
                break
            except Exception as e:  # noqa: BLE001 - whatever stops the download, the demo runs
                reasons.append(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".strip())
        if est is None:
            est = DemoDepthEstimator(DEMO_DIR, device=device)
            why = ("offline (HF_HUB_OFFLINE=1) and not in the cache" if _offline() else
                   "the Hub cannot be reached and it is not in the cache" if local_files_only else reasons[-1])
            est.note = f"{FALLBACK_NOTE} ({DEFAULT_MODEL}: {why})"
            est.fallback = True
            return est
    elif Path(name).is_dir() and _is_demo_folder(Path(name)):
        est = DemoDepthEstimator(Path(name), device=device)
    else:
        if not Path(name).is_dir() and name.count("/") != 1:
            raise InputError(f"unknown depth estimator {name!r}: use 'auto', 'demo', a folder or a Hugging Face "
                             f"id like {DEFAULT_MODEL}")
        est = TransformersDepthEstimator(name, revision=revision, device=device, cache_dir=cache_dir,
                                         local_files_only=_offline(), batch_size=batch_size)
    est.note = getattr(est, "note", None)
    est.fallback = False
    return est
