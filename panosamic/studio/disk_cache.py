"""Encoded panoramas kept on disk, so that a restart, a Space waking up, or the next visitor
with the same files skips the encoder.

`DiskEmbeddingCache` stores one file per key, `<key>.safetensors` (the key is the backend's
`content_key`: the uploaded files' bytes, the settings, the checkpoint and its weights files),
holding a `PanoramaState`'s two tensors and, in the safetensors metadata, its input size and
encoder timings. The tensors are stored in their own dtype (float32; bfloat16 under that
autocast), so a disk hit gives exactly the labels and masks of the encoding it saved: float16
would halve the files but round the embeddings. A ViT-H RGB-D-N dual-view panorama is
6 x 256 x 64 x 64 x 4 B = 25 MB, so the default 4096 MB keeps about 160 of them.

* `put` writes a temporary file in the same folder and renames it over `<key>.safetensors`
  (`os.replace`, atomic on POSIX): a reader, in this process or another one sharing the
  folder, sees the whole file or none. Then the least recently used files go until the folder
  fits `max_bytes`.
* `get` reads the file whole (a copy in memory: the file may be evicted right after) and
  touches its mtime, which is the LRU order (shared by every process using the folder). A file
  that does not parse (torn by a power loss: the rename is not fsynced) is removed and counts
  as a miss.

Nothing here raises to a user: a full or read-only disk is logged and the app runs on without
the files. File names are hashes; the folder is made private (0700) since the embeddings are
derived from users' uploads.

Importing this module does not import torch (`get` and `put` do).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

log = logging.getLogger(__name__)

#: The layout of a file; a file of another layout is ignored (and removed) as a miss.
FORMAT = "1"
SUFFIX = ".safetensors"
TMP_SUFFIX = ".tmp"
#: A temporary file older than this (seconds) was left by a killed writer: eviction removes it.
#: A write takes well under a second (25 MB), so 10 minutes never removes one still written.
STALE_TMP_S = 600.0
_KEY_RE = re.compile(r"^[0-9a-f]{16,128}$")
_TENSORS = ("embeddings", "semantic_logits")


class DiskEmbeddingCache:
    """`PanoramaState`s in `folder`, one file per key, bounded by `max_bytes` on disk, least
    recently used first (see the module docstring). `max_bytes=0` or `folder=None` disables it:
    `get` misses and `put` stores nothing (the folder is never made)."""

    def __init__(self, folder: Union[str, os.PathLike, None], max_bytes: int):
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.folder = None if folder is None else Path(folder).expanduser()
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._warned = False
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.damaged = 0

    @classmethod
    def from_megabytes(cls, folder: Union[str, os.PathLike, None], mb: float) -> "DiskEmbeddingCache":
        return cls(folder, int(float(mb) * 1024 * 1024))

    @property
    def enabled(self) -> bool:
        return self.folder is not None and self.max_bytes > 0

    def path(self, key: str) -> Path:
        """The file of `key` (a hex digest: anything else could name a path outside the folder)."""
        if not self.enabled:
            raise ValueError("the disk cache is disabled")
        if not _KEY_RE.match(str(key)):
            raise ValueError("a disk cache key is a lower-case hex digest")
        assert self.folder is not None
        return self.folder / f"{key}{SUFFIX}"

    # ------------------------------------------------------------------ reading
    def get(self, key: str) -> Any:
        """The `PanoramaState` stored under `key` (its tensors on the CPU, now most recently
        used), or None: not there, disabled, or a damaged file (then removed)."""
        if not self.enabled:
            return None
        path = self.path(key)
        try:
            state = _read(path, key)
        except FileNotFoundError:  # not stored, or evicted by another process meanwhile
            self.misses += 1
            return None
        except Exception as exc:  # noqa: BLE001  (torn, foreign or unreadable: never a user's error)
            self.misses += 1
            if not path.exists():  # evicted by another process between the look and the read
                return None
            self.damaged += 1
            log.warning("embedding cache: ignoring and removing a damaged entry %s (%s)", path.name,
                        type(exc).__name__)
            _unlink(path)
            return None
        try:
            os.utime(path)  # the LRU order: most recently used now
        except OSError:
            pass
        self.hits += 1
        return state

    def __contains__(self, key: str) -> bool:
        return self.enabled and self.path(key).is_file()

    # ------------------------------------------------------------------ writing
    def put(self, key: str, state: Any) -> bool:
        """Stores `state` under `key` atomically, then evicts the least recently used files
        until the folder fits. False when not stored: disabled, larger than the whole cache, or
        the disk refused (logged once)."""
        if not self.enabled:
            return False
        path = self.path(key)
        tensors = {name: getattr(state, name).detach().to("cpu").contiguous() for name in _TENSORS}
        size = sum(t.element_size() * t.nelement() for t in tensors.values())
        if size > self.max_bytes:
            return False
        metadata = {"format": FORMAT, "key": key,
                    "input_size": json.dumps([int(v) for v in state.input_size]),
                    "timings": json.dumps({k: float(v) for k, v in (state.timings or {}).items()})}
        with self._lock:
            tmp: Optional[str] = None
            try:
                assert self.folder is not None
                self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
                # mkstemp: a unique name (two processes may write the same key) and mode 0600
                fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}-", suffix=TMP_SUFFIX, dir=self.folder)
                os.close(fd)
                from safetensors.torch import save_file

                save_file(tensors, tmp, metadata=metadata)
                os.replace(tmp, path)
                tmp = None
            except OSError as exc:
                if not self._warned:
                    self._warned = True
                    log.warning("embedding cache: cannot write to %s (%s); runs go on without it",
                                self.folder, exc)
                return False
            finally:
                if tmp is not None:
                    _unlink(Path(tmp))
            self._evict(keep=path)
        return True

    def _evict(self, keep: Optional[Path] = None) -> None:
        """Removes the least recently used entries (oldest mtime first) until the folder's
        files fit `max_bytes`; temporary files count too (a write in progress in another
        process), and those a killed writer left are removed. Files that vanish meanwhile
        (another process evicting) are skipped."""
        now = time.time()
        entries: List[Tuple[float, int, Path]] = []
        total = 0
        for path, size, mtime in self._files():
            if path.name.endswith(TMP_SUFFIX):
                if now - mtime > STALE_TMP_S:
                    _unlink(path)
                    continue
            elif path != keep:
                entries.append((mtime, size, path))
            total += size
        entries.sort(key=lambda e: (e[0], e[2].name))
        for _mtime, size, path in entries:
            if total <= self.max_bytes:
                break
            _unlink(path)
            total -= size
            self.evictions += 1

    def _files(self) -> List[Tuple[Path, int, float]]:
        """(path, bytes, mtime) of the entries and temporary files in the folder."""
        out = []
        try:
            names = os.listdir(self.folder) if self.folder is not None else []
        except OSError:
            return out
        for name in names:
            if not (name.endswith(SUFFIX) or name.endswith(TMP_SUFFIX)):
                continue
            path = self.folder / name  # type: ignore[operator]
            try:
                st = path.stat()
            except OSError:  # removed meanwhile
                continue
            out.append((path, st.st_size, st.st_mtime))
        return out

    def keys(self) -> List[str]:
        """The stored keys, least recently used first."""
        files = sorted((m, p.name) for p, _s, m in self._files() if p.name.endswith(SUFFIX))
        return [name[:-len(SUFFIX)] for _m, name in files]

    @property
    def nbytes(self) -> int:
        """Bytes on disk: the entries and any temporary file."""
        return sum(size for _p, size, _m in self._files())

    def stats(self) -> Dict[str, Any]:
        files = self._files()
        return {"entries": sum(1 for p, _s, _m in files if p.name.endswith(SUFFIX)),
                "bytes": sum(s for _p, s, _m in files), "max_bytes": self.max_bytes, "hits": self.hits,
                "misses": self.misses, "evictions": self.evictions, "damaged": self.damaged}


def _read(path: Path, key: str):
    """The `PanoramaState` in `path`; ValueError (or safetensors' error) when it is not a
    complete file of this layout for `key`."""
    from safetensors import safe_open

    from ..predictor import PanoramaState

    if not path.is_file():
        raise FileNotFoundError(path)
    # safe_open checks the header against the file's length: a torn file fails here
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT or meta.get("key") != key or set(f.keys()) != set(_TENSORS):
            raise ValueError("not an entry of this layout for this key")
        # clone: get_tensor maps the file, and a file cut short under a mapping would be a SIGBUS
        emb, logits = f.get_tensor("embeddings").clone(), f.get_tensor("semantic_logits").clone()
    if emb.ndim != 4 or logits.ndim != 4:
        raise ValueError("unexpected tensor shapes")
    input_size = tuple(int(v) for v in json.loads(meta["input_size"]))
    if len(input_size) != 2:
        raise ValueError("unexpected input size")
    timings = {str(k): float(v) for k, v in json.loads(meta.get("timings", "{}")).items()}
    return PanoramaState(emb, logits, input_size, timings)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:  # gone already (another process), or not ours to remove
        pass


__all__ = ["DiskEmbeddingCache", "FORMAT", "STALE_TMP_S"]
