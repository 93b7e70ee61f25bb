"""The app's temporary files on disk: whose they are, how long they stay, and a full disk.

One folder per process (`SessionStore.root`, locked while the process runs, see store.py) holds
every temporary file of the app, and the app points Gradio's cache (`GRADIO_TEMP_DIR`) at it:

    <root>/.owner.lock       held (flock) while the process runs: a later start deletes a dead one's root
    <root>/clients/<token>/  one browser tab's (or API client's) files: previews, views, export folders
    <root>/sessions/         the files of sessions without a client (the library, tests)
    <root>/uploads/<token>/  one upload request's files (`<sha>/<name>`, as Gradio names them)
    <root>/<hash>/<name>     Gradio's own copies (e.g. an example's maps when a client picks it)

`TempFiles` keeps the books on what is not a session's own:

* an upload belongs to the address it came from until an event uses it; then to the clients
  whose events used it (Gradio's session hash). Unused, it is deleted after `unused_s`
  seconds; an address has at most `upload_files` unused uploads and `upload_bytes` bytes;
  a client keeps at most `client_uploads` of them, the least recently used going first;
* Gradio's copies belong to the clients whose events showed them; files there before the
  first request (the examples' thumbnails, made with the page) are the app's own and stay;
  copies nobody's event named (e.g. a base64 upload decoded by Gradio) go after `unused_s`;
* `release(client)` deletes the client's folder and every file no other client still uses.

Writes are atomic (`write_atomic`, `atomic_folder` in store.py): a temporary name in the same
folder renamed into place, removed on failure. A full disk (`disk_full`) becomes `DiskFull`,
whose message names no path and no errno.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set, Tuple

from ..errors import PanoSAMicError

log = logging.getLogger(__name__)

DISK_FULL = "The server is out of disk space: try again in a few minutes."
UPLOADS_WAITING = ("Too many uploaded files are waiting to be used: press Run with the files you uploaded, "
                   "or try again in a few minutes.")



def _env_number(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(f"PANOSAMIC_{name}") or default)
    except ValueError:
        return default
    return value if value >= 0 else default


#: An upload no event used within this many seconds is deleted (the page uses one at once);
#: PANOSAMIC_UPLOAD_UNUSED_S.
UPLOAD_UNUSED_S = _env_number("UPLOAD_UNUSED_S", 300.0)
#: Unused uploads one address may hold: files and bytes (a full 8K RGB-D-N set is ~0.6 GB).
#: An upload is used within a second (the page's change event, an API client's call), so this
#: bounds what arrives at once from one address: users behind one NAT share it (20 users
#: starting together: 60 files); PANOSAMIC_UPLOAD_FILES, PANOSAMIC_UPLOAD_MB.
UPLOAD_FILES = int(_env_number("UPLOAD_FILES", 64))
UPLOAD_BYTES = int(_env_number("UPLOAD_MB", 2048) * 2**20)
#: Uploads one client keeps once used (a page holds at most three: panorama, depth, normals).
CLIENT_UPLOADS = 6
#: Below this much free space, a write that failed without an errno (OpenCV's) is a full disk.
LOW_SPACE_BYTES = 4 << 20

CLIENTS, SESSIONS, UPLOADS = "clients", "sessions", "uploads"
_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class DiskFull(PanoSAMicError):
    """The disk (or the app's --disk-mb budget) has no room for a file: try again later."""

    def __init__(self, message: str = DISK_FULL):
        super().__init__(message)


def disk_full(exc: Optional[BaseException]) -> bool:
    """Whether `exc`, or an exception it was raised from or during (Gradio wraps errors), is
    a full disk: ENOSPC / EDQUOT (errno 28 / 122), or `DiskFull`."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DiskFull) or (isinstance(exc, OSError) and exc.errno in _ERRNOS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def low_space(folder: Path) -> bool:
    """Whether the file system of `folder` (or the nearest existing parent) is about full."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free < LOW_SPACE_BYTES
    except OSError:
        return False


def as_disk_full(exc: BaseException, folder: Optional[Path] = None) -> Optional[DiskFull]:
    """`DiskFull` (raised from `exc`) when `exc` is a full disk, also an OSError without an
    errno (OpenCV's writers only say False) while `folder`'s file system is about full."""
    if disk_full(exc) or (isinstance(exc, OSError) and exc.errno is None and folder is not None
                          and low_space(folder)):
        full = DiskFull()
        full.__cause__ = exc
        return full
    return None


def write_atomic(path: Path, data: bytes) -> Path:
    """Writes `data` to `path` atomically: a reader sees the old file or the new one, and on any
    failure no temporary file is left (a full disk raises `DiskFull`)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        full = as_disk_full(exc) if isinstance(exc, Exception) else None
        if full is not None:
            raise full from exc
        raise
    return path


def tree_bytes(root: Path) -> int:
    """Disk space the files under `root` take (allocated blocks, as `du`)."""
    total = 0
    for folder, _dirs, names in os.walk(root):
        for name in names:
            try:
                st = os.lstat(os.path.join(folder, name))
            except OSError:  # deleted meanwhile
                continue
            total += getattr(st, "st_blocks", 0) * 512 or st.st_size
    return total


def remove(path: Path) -> None:
    """Deletes a file or folder, and its parent folder when that is left empty (Gradio's
    `<hash>/` folders, an upload's `<sha>/`); never raises."""
    path = Path(path)
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        path.parent.rmdir()
    except OSError:  # not empty, or gone
        pass


@dataclass
class _Upload:
    address: str
    nbytes: int
    files: int
    created: float
    used: bool = False
    done: bool = False


@dataclass
class _Client:
    token: str
    last_seen: float
    uploads: List[str] = field(default_factory=list)  # upload paths, least recently used first
    copies: Set[str] = field(default_factory=set)      # Gradio's copies its events showed


class TempFiles:
    """The books on the files under `root` that are not one session's own (see the module
    docstring). Thread-safe; every method is quick except `release` and `sweep`, which delete."""

    def __init__(self, root: Path, unused_s: float = UPLOAD_UNUSED_S, upload_files: int = UPLOAD_FILES,
                 upload_bytes: int = UPLOAD_BYTES, client_uploads: int = CLIENT_UPLOADS):
        self.root = Path(root)
        self.unused_s = float(unused_s)
        self.upload_files = int(upload_files)
        self.upload_bytes = int(upload_bytes)
        self.client_uploads = int(client_uploads)
        self._lock = threading.Lock()
        self._pinned: Optional[Set[str]] = None
        self._clients: Dict[str, _Client] = {}
        self._uploads: Dict[str, _Upload] = {}        # upload folder -> its record
        self._owners: Dict[str, Set[str]] = {}        # an upload or a copy -> clients using it
        self._usage: Tuple[int, float] = (0, -1e9)    # (bytes, when counted)
        self.deleted = {"uploads_unused": 0, "uploads": 0, "copies": 0, "clients": 0, "strays": 0}

    # ----------------------------------------------------------------- layout
    def _part(self, path: str) -> Optional[Tuple[str, ...]]:
        """`path`'s parts below root, or None when it is not under root."""
        try:
            rel = Path(os.path.abspath(path)).relative_to(self.root)
        except ValueError:
            return None
        return rel.parts or None

    def is_ours(self, path: str) -> bool:
        """Whether `path` lies in the root (where every temporary file of the app is)."""
        return self._part(path) is not None

    def client_folder(self, client: str) -> Path:
        """The folder for `client`'s files (made on first use)."""
        with self._lock:
            record = self._client(client)
        folder = self.root / CLIENTS / record.token
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _client(self, client: str) -> _Client:
        record = self._clients.get(client)
        if record is None:
            record = self._clients[client] = _Client(secrets.token_hex(8), time.monotonic())
        return record

    def pin_existing(self) -> None:
        """Marks every file of Gradio's now in the root as the app's own (made with the page:
        the examples' thumbnails), never deleted before shutdown. Once; later calls do nothing."""
        if self._pinned is not None:
            return
        pinned = set()
        for entry in self._gradio_entries():
            for folder, _dirs, names in os.walk(entry):
                pinned.update(os.path.join(folder, n) for n in names)
        with self._lock:
            if self._pinned is None:
                self._pinned = pinned

    def _gradio_entries(self) -> List[Path]:
        try:
            return [p for p in self.root.iterdir() if p.name not in (CLIENTS, SESSIONS, UPLOADS)
                    and not p.name.startswith(".")]
        except OSError:
            return []

    # ----------------------------------------------------------------- uploads
    def upload_refusal(self, address: str, nbytes: int) -> Optional[str]:
        """Why `address` may not upload `nbytes` more now (too many unused uploads), or None."""
        with self._lock:
            mine = [u for u in self._uploads.values() if u.address == address and not u.used]
            if sum(u.files for u in mine) >= self.upload_files or sum(u.nbytes for u in mine) + nbytes > self.upload_bytes:
                return UPLOADS_WAITING
        return None

    def allowance(self, address: str) -> Tuple[int, int]:
        """(files, bytes) `address` may still upload unused."""
        with self._lock:
            mine = [u for u in self._uploads.values() if u.address == address and not u.used]
            return (max(0, self.upload_files - sum(u.files for u in mine)),
                    max(0, self.upload_bytes - sum(u.nbytes for u in mine)))

    def new_upload(self, address: str, nbytes: int) -> Path:
        """A new, empty folder for one upload request of `address`, `nbytes` reserved."""
        folder = self.root / UPLOADS / secrets.token_hex(12)
        folder.mkdir(parents=True)
        with self._lock:
            self._uploads[str(folder)] = _Upload(address, int(nbytes), 1, time.monotonic())
        return folder

    def upload_done(self, folder: Path, paths: Iterable[str]) -> None:
        """The upload into `folder` succeeded with `paths`."""
        paths = list(paths)
        size = sum(os.path.getsize(p) for p in paths if os.path.exists(p))
        with self._lock:
            u = self._uploads.get(str(folder))
            if u is not None:
                u.nbytes, u.files, u.done = size, max(1, len(paths)), True
            self._added(size)

    def upload_failed(self, folder: Path) -> None:
        """The upload into `folder` failed: it goes, whatever it holds."""
        with self._lock:
            self._uploads.pop(str(folder), None)
        shutil.rmtree(folder, ignore_errors=True)

    def _upload_of(self, parts: Tuple[str, ...]) -> Optional[str]:
        return str(self.root / UPLOADS / parts[1]) if len(parts) >= 3 and parts[0] == UPLOADS else None

    # ----------------------------------------------------------------- events
    def seen(self, client: Optional[str], paths: Iterable[str]) -> List[str]:
        """An event of `client` named `paths` (its inputs and outputs): each upload or copy
        among them is now used by the client. Returns the paths under root that no longer
        exist (deleted when their session closed), for the caller to say so."""
        missing: List[str] = []
        drop: List[str] = []
        with self._lock:
            record = self._client(client) if client else None
            if record is not None:
                record.last_seen = time.monotonic()
            for path in paths:
                parts = self._part(path)
                if parts is None or parts[0] in (CLIENTS, SESSIONS):
                    continue
                if not os.path.exists(path):
                    missing.append(path)
                    continue
                if record is None:  # no client to own it: it stays unused (and goes as such)
                    continue
                upload = self._upload_of(parts)
                if upload is not None and upload in self._uploads:
                    self._uploads[upload].used = True
                self._owners.setdefault(path, set()).add(client)
                if upload is not None:
                    if path in record.uploads:
                        record.uploads.remove(path)
                    record.uploads.append(path)
                    while len(record.uploads) > self.client_uploads:
                        old = record.uploads.pop(0)
                        if self._disown(old, client):
                            drop.append(old)
                else:
                    record.copies.add(path)
        for path in drop:
            self._delete(path, "uploads")
        return missing

    def _disown(self, path: str, client: str) -> bool:
        """`client` no longer uses `path`; True when nobody does and it may go (under the lock)."""
        owners = self._owners.get(path)
        if owners is not None:
            owners.discard(client)
            if owners:
                return False
            del self._owners[path]
        return self._pinned is None or path not in self._pinned

    def _delete(self, path: str, kind: str) -> None:
        parts = self._part(path)
        upload = self._upload_of(parts) if parts else None
        remove(Path(path))
        if upload is not None:
            try:
                next(Path(upload).rglob("*"))
            except StopIteration:  # its last file went: the upload goes
                with self._lock:
                    self._uploads.pop(upload, None)
                shutil.rmtree(upload, ignore_errors=True)
            except OSError:
                pass
        self.deleted[kind] = self.deleted.get(kind, 0) + 1
        self._forget_usage()

    def touch(self, client: Optional[str]) -> None:
        """`client` is active now (an event on its session)."""
        if client:
            with self._lock:
                record = self._clients.get(client)
                if record is not None:
                    record.last_seen = time.monotonic()

    def known(self, client: str) -> bool:
        with self._lock:
            return client in self._clients

    def last_seen(self, client: str) -> Optional[float]:
        with self._lock:
            record = self._clients.get(client)
            return None if record is None else record.last_seen

    def clients(self) -> List[Tuple[str, float]]:
        """(client, last seen) of every client with files, least recently seen first."""
        with self._lock:
            return sorted(((c, r.last_seen) for c, r in self._clients.items()), key=lambda cr: cr[1])

    def release(self, client: Optional[str]) -> int:
        """`client` is gone (tab closed, idle, evicted): its folder goes, and every upload and
        copy no other client uses. Returns how many files went."""
        if not client:
            return 0
        with self._lock:
            record = self._clients.pop(client, None)
            if record is None:
                return 0
            gone = [p for p in [*record.uploads, *record.copies] if self._disown(p, client)]
        folder = self.root / CLIENTS / record.token
        n = sum(len(names) for _f, _d, names in os.walk(folder))
        shutil.rmtree(folder, ignore_errors=True)
        for path in gone:
            self._delete(path, "uploads" if path in record.uploads else "copies")
        self.deleted["clients"] += 1
        self._forget_usage()
        return n + len(gone)

    def sweep(self, now: Optional[float] = None) -> int:
        """Deletes uploads no event used within `unused_s` seconds, and Gradio's copies that no
        client's event named and that are older than that; returns how many went."""
        now = time.monotonic() if now is None else now
        with self._lock:
            stale = [f for f, u in self._uploads.items() if u.done and not u.used and now - u.created > self.unused_s]
            for f in stale:
                del self._uploads[f]
            known = set(self._owners) | (self._pinned or set())
        for f in stale:
            shutil.rmtree(f, ignore_errors=True)
            self.deleted["uploads_unused"] += 1
        strays = 0
        if self._pinned is not None:
            wall = time.time()
            for entry in self._gradio_entries():
                for folder, _dirs, names in os.walk(entry):
                    for name in names:
                        path = os.path.join(folder, name)
                        try:
                            age = wall - os.stat(path).st_ctime
                        except OSError:
                            continue
                        if path not in known and age > self.unused_s:
                            remove(Path(path))
                            strays += 1
            self.deleted["strays"] += strays
        if stale or strays:
            self._forget_usage()
        return len(stale) + strays

    def drop_leaks(self) -> int:
        """Deletes the empty `tmp*` files gr.File's preprocess leaves in the root at each event
        (it makes a NamedTemporaryFile and keeps only the upload's name); nothing else of
        anyone's is named so there (Gradio's writes go into `<hash>/` folders, uploads into
        `uploads/`)."""
        n = 0
        try:
            with os.scandir(self.root) as entries:
                for entry in entries:
                    if entry.name.startswith("tmp") and entry.is_file(follow_symlinks=False) \
                            and entry.stat(follow_symlinks=False).st_size == 0:
                        try:
                            os.unlink(entry.path)
                            n += 1
                        except OSError:
                            pass
        except OSError:
            pass
        return n

    # ----------------------------------------------------------------- disk use
    def _added(self, nbytes: int) -> None:
        b, t = self._usage
        self._usage = (b + int(nbytes), t)

    def added(self, nbytes: int) -> None:
        """`nbytes` were just written under root (counted until the next scan)."""
        with self._lock:
            self._added(nbytes)

    def _forget_usage(self) -> None:
        with self._lock:
            self._usage = (self._usage[0], -1e9)

    def usage(self, fresh: bool = False, max_age_s: float = 1.0) -> int:
        """Bytes under root: counted at most `max_age_s` ago (plus what was written since), or
        now with `fresh`."""
        with self._lock:
            b, t = self._usage
        now = time.monotonic()
        if fresh or now - t > max_age_s:
            b = tree_bytes(self.root)
            with self._lock:
                self._usage = (b, now)
        return b

    def stats(self) -> Dict[str, int]:
        """Counts for the log and the tests."""
        with self._lock:
            return {"clients": len(self._clients), "uploads": len(self._uploads),
                    "uploads_unused": sum(1 for u in self._uploads.values() if not u.used),
                    "copies_owned": len(self._owners), **{f"deleted_{k}": v for k, v in self.deleted.items()}}


__all__ = ["TempFiles", "DiskFull", "DISK_FULL", "UPLOADS_WAITING", "disk_full", "as_disk_full", "low_space",
           "write_atomic", "tree_bytes", "remove", "UPLOAD_UNUSED_S", "UPLOAD_FILES", "UPLOAD_BYTES",
           "CLIENT_UPLOADS"]
