"""Pre-encoding the examples in the background at start-up, so that clicking an example and
pressing Run finds its embeddings cached; a user's heavy event always goes first."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..errors import InputError
from .messages import given_maps
from .uploads import load_inputs
from .validation import check_maps

log = logging.getLogger(__name__)

#: The settings an example is pre-encoded with: the page's defaults (Max depth T 10 m, depth
#: scale 0 = auto), so that clicking an example and pressing Run finds the same cache key.
DEFAULT_MAX_DEPTH = 10.0
#: Seconds the pre-encoder waits before it looks again while a user's heavy job runs or waits.
PREENCODE_IDLE_S = 1.0


class _Yield(Exception):
    """The pre-encoder gives way: a user's heavy job is waiting, or the app stops. Raised
    from its progress callback, which the encoder calls between ViT blocks (a ViT-H block is
    about a second on a CPU), so a user waits that long at most, not a whole panorama."""


class ExamplePreencoding:
    """`preencode_examples` for `StudioBackend` (backend.py), which it is mixed into and whose
    caches, locks and model registry it uses: `examples`, `checkpoints`, `registry`, `store`,
    `gpu_device`, `device`, `dtype`, `_users` (heavy events reading, waiting or computing),
    `_decoding` and `_computing` (its locks), `_concrete` and `_embeddings` (Run's own path)."""

    def preencode_examples(self, stop: Optional[threading.Event] = None,
                           idle_s: float = PREENCODE_IDLE_S) -> int:
        """Encodes the examples into the caches (memory and disk) for the checkpoint the picker
        starts with, "auto" resolved per example as a Run would, with the page's default
        settings: once done, clicking an example and pressing Run skips the encoder. For a
        background thread at start-up at the lowest CPU priority (app.py). Returns how many
        examples it encoded (those already on disk are only brought into memory).

        A user's Run always goes first: an example starts only while no user's heavy event
        (Run, SAM instances) is reading, waiting or computing, and an encoding in progress gives
        way between two ViT blocks as soon as one arrives (then starts again later); it never
        evicts a loaded model that an open session decodes with. `stop` (set at shutdown) ends
        it the same way. Skipped: examples whose checkpoint is not on disk yet (this never
        downloads), examples it cannot read (maps missing), and everything with a lent GPU (a
        ZeroGPU call outside a user's request would spend a quota nobody asked to spend).
        """
        stop = stop if stop is not None else threading.Event()
        if self.gpu_device is not None or not self.examples:
            return 0
        initial = self.checkpoints.initial()
        jobs = []
        for row in self.examples:
            try:
                choice = self._concrete(initial, given_maps(*row))
                if self.checkpoints.needs_download(choice):
                    log.info("pre-encoding: skipping %s (%s is not downloaded yet)", Path(row[0]).name, choice)
                    continue
                check_maps(self.checkpoints.modalities(choice), row[1] is not None, row[2] is not None)
                jobs.append((choice, row))
            except InputError:
                continue
        # one checkpoint after the other (each loads once); the first example's last, so that
        # the model the gallery's first example needs stays loaded (with --max-models 1)
        first = jobs[0][0] if jobs else None
        jobs.sort(key=lambda job: job[0] == first)
        done = 0
        t0 = time.perf_counter()
        for choice, row in jobs:
            while not stop.is_set():
                try:
                    outcome = self._preencode_one(choice, row, stop)
                except Exception:  # noqa: BLE001  (a broken example: a user's Run reports it properly)
                    log.exception("pre-encoding %s failed", Path(row[0]).name)
                    outcome = False
                if outcome is not None:
                    done += int(outcome)
                    break
                stop.wait(idle_s)
        if jobs and not stop.is_set():
            log.info("pre-encoding: %d of %d example(s) encoded, the rest were cached (%.1f s)",
                     done, len(jobs), time.perf_counter() - t0)
        return done

    def _preencode_one(self, choice: str, row: List[Optional[str]], stop: threading.Event) -> Optional[bool]:
        """One example into the caches: True when encoded, False when it was cached already,
        None when it gave way (a user's heavy event, `stop`, or a model swap that would evict
        an open session's model): try again later."""
        def give_way(*_args: Any, **_kwargs: Any) -> None:  # the progress callback: between ViT blocks
            if self._users or stop.is_set():
                raise _Yield()

        if self._users or stop.is_set():
            return None
        key = self.checkpoints.key(choice, self.device, self.dtype)
        if (not self.registry.loaded(key) and len(self.registry) >= self.registry.max_models
                and self.store.model_keys()):
            return None  # loading this one would evict the model an open session clicks with
        notes: List[str] = []
        with self._decoding:  # small files, read while no user waits (checked just above)
            image, depth, normals, _name = load_inputs(*row, None, notes=notes)
        if not self._computing.acquire(blocking=False):
            return None
        try:
            give_way()
            timings: Dict[str, float] = {}
            *_, cached = self._embeddings(choice, key, tuple(row), (image, depth, normals), DEFAULT_MAX_DEPTH,
                                          None, give_way, timings, notes)
        except _Yield:
            return None
        finally:
            self._computing.release()
        if not cached:
            log.info("pre-encoded %s with %s (%.1f s)", Path(row[0]).name, choice, timings.get("encode", 0.0))
        return not cached


__all__ = ["ExamplePreencoding", "DEFAULT_MAX_DEPTH", "PREENCODE_IDLE_S"]
