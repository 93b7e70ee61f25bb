"""A bounded, thread-safe LRU cache sized in bytes, for panorama embeddings.

Keys are content hashes of everything that determines the embeddings (`content_key`),
so two users who upload the same panorama with the same checkpoint and settings share
one entry. Values need a size: `nbytes` given to `put`, else `value.nbytes`.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from typing import Any, Hashable, Optional

import numpy as np

log = logging.getLogger(__name__)


def content_key(*arrays: Optional[np.ndarray], **params: Any) -> str:
    """SHA-256 hex digest of arrays (shape, dtype and bytes; None allowed) and keyword params.

    `content_key(image, depth, normals, max_depth=10.0, checkpoint="...")`
    """
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"<none>")
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    for name in sorted(params):
        h.update(f"|{name}={params[name]!r}".encode())
    return h.hexdigest()


def _size_of(value: Any) -> int:
    size = getattr(value, "nbytes", None)
    if size is None:
        raise TypeError(f"cannot size a {type(value).__name__}: pass nbytes= to put()")
    return int(size)


class EmbeddingCache:
    """LRU by bytes: `put` evicts the least recently used entries until the total fits
    `max_bytes`; an entry larger than `max_bytes` is not stored at all. `max_bytes=0`
    disables caching."""

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = int(max_bytes)
        self._items: "OrderedDict[Hashable, tuple]" = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    @classmethod
    def from_megabytes(cls, mb: float) -> "EmbeddingCache":
        return cls(int(float(mb) * 1024 * 1024))

    @property
    def nbytes(self) -> int:
        """Total size of the stored entries."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def keys(self):
        """Keys, least recently used first."""
        with self._lock:
            return list(self._items)

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The value (now most recently used), or `default` on a miss."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return default
            self._items.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: Hashable, value: Any, nbytes: Optional[int] = None) -> bool:
        """Stores `value`; returns False when it is larger than the whole cache (not stored)."""
        size = _size_of(value) if nbytes is None else int(nbytes)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if size > self.max_bytes:
                return False
            self._items[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, s) = self._items.popitem(last=False)
                self._bytes -= s
                self.evictions += 1
            entries, total, evictions = len(self._items), self._bytes, self.evictions
        # the server log's view of the memory the cache holds (sizes only, never a key), which
        # a soak compares with the process's RSS (devtools/soak.py)
        log.info("embedding cache: %d entries, %.1f of %.1f MB, %d evicted",
                 entries, total / 2**20, self.max_bytes / 2**20, evictions)
        return True

    def pop(self, key: Hashable, default: Any = None) -> Any:
        with self._lock:
            item = self._items.pop(key, None)
            if item is None:
                return default
            self._bytes -= item[1]
            return item[0]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def stats(self) -> dict:
        with self._lock:
            return {"entries": len(self._items), "bytes": self._bytes, "max_bytes": self.max_bytes,
                    "hits": self.hits, "misses": self.misses, "evictions": self.evictions}


__all__ = ["EmbeddingCache", "content_key"]
