"""A session's lifetime as the `SessionStore` (store.py) keeps it: the only writer of these
fields is store.py (tests/test_imports.py checks that no other module assigns them); the
session holds one and shows them read-only (`Session.lock`, `.last_used`, `.closed`,
`.export_dir`)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional


@dataclass(eq=False)
class Lifecycle:
    """lock: one event at a time per session (re-entrant: a handler's `store.use` encloses the
    backend's); last_used: `time.monotonic()` seconds of the last event (the idle sweep and the
    least-recently-used order read it); closed: why the session was released ("idle",
    "memory", "disk", "closed"), None while open; export_dir: the folder of its latest export."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    last_used: float = field(default_factory=time.monotonic)
    closed: Optional[str] = None
    export_dir: Optional[Path] = None


__all__ = ["Lifecycle"]
