"""The lifetime of the sessions of all users: one owner for when a session's memory and files go.

A session is released (its arrays dropped, its views and export folders deleted) when

* its user replaces it (a new Run, a new upload),
* its browser tab closes (the app calls `close_client`),
* it has been idle longer than `idle_s` (a single sweeper thread checks),
* the sessions together hold more than `budget_bytes` of memory, or the app's temporary files
  more than `disk_bytes` of disk: the least recently used idle ones go first; their users are
  told to press Run again,
* or the app shuts down (`close_all`).

A user's files (a client's: their uploads, previews, views and exports, see files.py) go with
them: when the tab closes, when the client was idle for `idle_s`, when its session is evicted,
and at shutdown. Using a released session raises `SessionExpired` with that message.

The store is the only writer of a session's `lifecycle` (lifecycle.py: its lock's use, last
use, why it closed, its export folder); the session shows those fields read-only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

try:
    import fcntl
except ImportError:  # Windows: no flock; stale folders are then told by their PID alone
    fcntl = None  # type: ignore[assignment]

from ..errors import InputError
from .files import SESSIONS, DiskFull, TempFiles, as_disk_full, write_atomic
from .messages import exact_duration
from .session import Session

log = logging.getLogger(__name__)

TMP_PREFIX = "panosamic-studio-"
_GONE = "its files were deleted: upload them again (or pick the example again) and press Run again."
EXPIRED = {
    "idle": "This session was closed after {idle} of inactivity, and " + _GONE,
    "memory": "This session was closed to make room for other users, and " + _GONE,
    "disk": "This session was closed to make room for other users, and " + _GONE,
    "closed": "This session has ended: press Run again.",
}
#: A view or export folder replaced by a newer one stays this many seconds: the client that got
#: it may still be fetching it (gradio_client downloads each result's files after its message;
#: a burst of clicks queues several).
RETIRED_S = 60.0
#: Views kept per session at most, the one shown included (rapid clicks: each makes a picture).
VIEWS_KEPT = 8


class SessionExpired(InputError):
    """The session was released (idle, memory budget, closed tab): the user presses Run again."""


def release_free_memory() -> None:
    """Hands freed heap pages back to the OS (glibc's malloc_trim; tcmalloc's own call), so
    that the process shrinks after sessions go instead of staying at its peak."""
    libc_name = ctypes.util.find_library("c")
    try:
        process = ctypes.CDLL(None)
        release = getattr(process, "MallocExtension_ReleaseFreeMemory", None)  # tcmalloc preloaded
        if release is not None:
            release()
            return
        if libc_name:
            ctypes.CDLL(libc_name).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        pass


#: The file inside an export root that its process holds locked (flock) while it runs.
OWNER_LOCK = ".owner.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def hold_folder(folder: Path) -> Optional[int]:
    """Locks `folder`'s OWNER_LOCK file for as long as the returned descriptor stays open (this
    process's life: the kernel drops the lock when the process dies, however it dies). None
    where there is no flock (Windows)."""
    if fcntl is None:
        return None
    # locked under another name first, then renamed: the lock file never shows unlocked
    tmp = folder / f"{OWNER_LOCK}.{os.getpid()}.{threading.get_ident()}"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.replace(tmp, folder / OWNER_LOCK)
    return fd


def _owner_dead(folder: Path) -> bool:
    """Whether the process that made `folder` is gone: its OWNER_LOCK can be locked. The PID in
    the name cannot tell: in a container the app is PID 1 at every start, and a PID is reused.
    A folder without the lock file (being made right now, or by an older version) is judged by
    its PID."""
    lock = folder / OWNER_LOCK
    if fcntl is None or not lock.exists():
        try:
            pid = int(folder.name[len(TMP_PREFIX):].split("-")[0])
        except ValueError:
            return False
        return pid != os.getpid() and not _pid_alive(pid)
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:  # another user's folder, or gone meanwhile: not ours to judge
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False  # held: its process runs (this one included, for another store)
        raise
    finally:
        os.close(fd)  # our lock, if we took it, goes with the descriptor
    return True


def temp_parent() -> Path:
    """Where the app's temporary root goes: `GRADIO_TEMP_DIR` as the operator set it (the app
    then points that variable at its own root, see app.py), else the system's temp folder."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or tempfile.gettempdir())


def clean_stale_folders(parent: Optional[Path] = None) -> int:
    """Deletes the temporary roots of studio processes that no longer run (killed, crashed,
    the container restarted), Gradio's cache of that process included; returns how many went.
    A running process holds its root's OWNER_LOCK (`hold_folder`), so only roots nobody holds
    go, and only folders named as the app names them (`TMP_PREFIX`)."""
    parent = Path(parent or tempfile.gettempdir())
    removed = 0
    for folder in parent.glob(TMP_PREFIX + "*"):
        if folder.is_dir() and _owner_dead(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


class SessionStore:
    """Owns the sessions' lifetime and the app's temporary files (see the module docstring).

    Args:
        budget_bytes: memory for all sessions together (`Session.nbytes`); 0 = no budget.
        idle_s: a session (and a client) unused this long is released; 0 = never.
        root: the app's temporary root (default: a new one in `parent`). The store holds its
            OWNER_LOCK while the process runs, so that a later start can delete it if we are
            killed (`clean_stale_folders`). The app points Gradio's cache at it.
        disk_bytes: disk for everything under root (Gradio's cache included); 0 = no budget.
        parent: where the default root is made (default: `temp_parent()`).
    """

    def __init__(self, budget_bytes: int = 4 << 30, idle_s: float = 3600.0, root: Optional[Path] = None,
                 disk_bytes: int = 0, parent: Optional[Path] = None):
        self.budget_bytes = int(budget_bytes)
        self.disk_bytes = int(disk_bytes)
        self.idle_s = float(idle_s)
        if root:
            self.root = Path(root)
        else:
            base = Path(parent or temp_parent())
            base.mkdir(parents=True, exist_ok=True)
            self.root = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-", dir=base))
        self.root.mkdir(parents=True, exist_ok=True)
        self._owner_lock = hold_folder(self.root)
        self.files = TempFiles(self.root)
        self._sessions: "OrderedDict[int, Session]" = OrderedDict()  # least recently used first
        self._by_client: dict = {}  # the UI's client (browser tab) id -> its current session
        self._client_of: dict = {}  # id(session) -> its client
        self._views: dict = {}      # id(session) -> [(view file, when it was replaced or None)], oldest first
        self._retired: list = []    # [(when, export folder of id(session))] replaced, kept RETIRED_S
        self._lock = threading.Lock()
        self._room = threading.Lock()  # one eviction for disk at a time
        self._sweeper: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self.released = {"idle": 0, "memory": 0, "disk": 0, "closed": 0}

    # ----------------------------------------------------------------- registry
    def __len__(self) -> int:
        return len(self._sessions)

    def model_keys(self) -> set:
        """The models (`ModelKey`s) the open sessions decode with."""
        with self._lock:
            return {s.model_key for s in self._sessions.values() if s.model_key is not None}

    def add(self, s: Session, replaces: Optional[Session] = None, client: Optional[str] = None) -> None:
        """Registers a new session (the user's previous one, `replaces`, is released at once)
        and keeps the total within the budget. `client`: the UI's id of the browser tab, so
        that `close_client` can release the session when the tab closes; the session's files
        go into the client's folder."""
        if replaces is not None and replaces is not s:
            self.close(replaces, "closed")
        with self._lock:
            self._sessions[id(s)] = s
            if client:
                old = self._by_client.get(client)
                self._by_client[client] = s
                self._client_of[id(s)] = client
            else:
                old = None
        if old is not None and old is not s:
            self.close(old, "closed")
        self._enforce_budget(keep=s)

    def client_of(self, s: Session) -> Optional[str]:
        with self._lock:
            return self._client_of.get(id(s))

    def close_client(self, client: Optional[str]) -> None:
        """The browser tab `client` closed: its session and its files go now."""
        with self._lock:
            s = self._by_client.pop(client, None) if client else None
        if s is not None:
            self.close(s, "closed")
            release_free_memory()
        self.files.release(client)

    @contextmanager
    def use(self, s: Optional[Session]) -> Iterator[Session]:
        """`with store.use(s):` one event on a session: it must be alive; events of one
        session run one at a time; it becomes the most recently used."""
        if s is None:
            raise InputError("Press Run first: clicks, prompts and edits work on a segmented panorama.")
        with s.lock:
            if s.closed:
                raise SessionExpired(EXPIRED[s.closed].format(idle=exact_duration(self.idle_s)))
            with self._lock:
                if id(s) in self._sessions:
                    self._sessions.move_to_end(id(s))
            s.lifecycle.last_used = time.monotonic()
            self.files.touch(self._client_of.get(id(s)))
            try:
                yield s
            finally:
                s.lifecycle.last_used = time.monotonic()

    # ----------------------------------------------------------------- files
    def folder(self, s: Optional[Session] = None, client: Optional[str] = None) -> Path:
        """Where the files of `s` (or of `client`) go: its client's folder, else the folder of
        sessions without a client."""
        client = client or (self.client_of(s) if s is not None else None)
        if client:
            return self.files.client_folder(client)
        folder = self.root / SESSIONS
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def make_room(self, nbytes: int, keep: Optional[Session] = None) -> None:
        """Makes room for `nbytes` more under the disk budget: the least recently used idle
        sessions go first (and their clients' files; their users are told), then clients with
        files but no session, least recently seen first. `DiskFull` when there is still no room.
        Nothing without a budget."""
        if not self.disk_bytes or self.files.usage() + nbytes <= self.disk_bytes:
            return
        with self._room:
            keep_client = self.client_of(keep) if keep is not None else None
            if self.prune(everything=True):  # replaced views and exports go before anyone's session
                if self.files.usage(fresh=True) + nbytes <= self.disk_bytes:
                    return
            while self.files.usage(fresh=True) + nbytes > self.disk_bytes:
                victim = self._next_victim(keep, keep_client)
                if victim is None:
                    raise DiskFull()
                s, client = victim
                if s is None:
                    log.info("disk budget: deleting the files of an idle client")
                    self.files.release(client)
                    continue
                try:  # its lock is held (taken without waiting): no event can start on it meanwhile
                    log.info("disk budget: releasing session %x", id(s))
                    self._expire(s, "disk")
                finally:
                    s.lock.release()

    def _next_victim(self, keep: Optional[Session], keep_client: Optional[str]):
        """(session, client) to release next for disk: the least recently used of the idle
        sessions (returned with its lock held: the caller releases it) and of the clients
        without a session; None when nothing is left to release."""
        with self._lock:
            sessions = [s for s in self._sessions.values() if s is not keep]
            with_session = set(self._by_client)
        candidates = [(s.last_used, 0, s, None) for s in sessions]
        candidates += [(seen, 1, None, client) for client, seen in self.files.clients()
                       if client not in with_session and client != keep_client]
        for _, _, s, client in sorted(candidates, key=lambda c: (c[0], c[1])):
            if s is None:
                return None, client
            if s.lock.acquire(blocking=False):  # not in use: idle
                if not s.closed:
                    return s, None
                s.lock.release()
        return None

    def write_view(self, s: Session, jpeg: bytes) -> str:
        """Writes the session's current ERP picture (JPEG bytes) to a new view file and returns
        its path, for the UI to serve (Gradio's cache is the root: it serves the file as it
        is, without a copy). Atomic, and a new name each time (a page showing the previous one
        is never given stale bytes); a replaced view stays `RETIRED_S` seconds (its client may
        still fetch it), `VIEWS_KEPT` at most."""
        self.make_room(len(jpeg), keep=s)
        path = self.folder(s) / f"{id(s):x}-view-{secrets.token_hex(4)}.jpg"
        write_atomic(path, jpeg)
        self.files.added(len(jpeg))
        now = time.monotonic()
        with self._lock:
            views = self._views.setdefault(id(s), [])
            views[:] = [(v, now if when is None else when) for v, when in views]
            views.append((path, None))
            old = [v for v, when in views[:-1] if now - when > RETIRED_S] + [v for v, _ in views[:-VIEWS_KEPT]]
            views[:] = [(v, when) for v, when in views if v not in old]
        for p in old:
            p.unlink(missing_ok=True)
        return str(path)

    def write_preview(self, client: Optional[str], jpeg: bytes) -> str:
        """A picture of a new upload for `client`'s page (its previous one is replaced)."""
        self.make_room(len(jpeg))
        folder = self.folder(client=client)
        for old in folder.glob("preview-*.jpg"):
            old.unlink(missing_ok=True)
        path = write_atomic(folder / f"preview-{secrets.token_hex(4)}.jpg", jpeg)
        self.files.added(len(jpeg))
        return str(path)

    @contextmanager
    def export_dir(self, s: Session, nbytes: int = 0) -> Iterator[Path]:
        """`with store.export_dir(s) as folder:` writes a new export of `s` into `folder` (a
        temporary one, room for about `nbytes` made first); when the block ends without an
        error, the folder takes its final name (`s.export_dir`) and the previous export goes.
        On an error it is deleted whole: no partial file survives (a full disk: `DiskFull`)."""
        self.make_room(nbytes, keep=s)
        staging = Path(tempfile.mkdtemp(prefix=f"{id(s):x}-", suffix=".partial", dir=self.folder(s)))
        try:
            yield staging
            final = staging.with_name(staging.name[:-len(".partial")])
            os.replace(staging, final)
        except BaseException as exc:
            shutil.rmtree(staging, ignore_errors=True)
            full = as_disk_full(exc, staging.parent) if isinstance(exc, Exception) else None
            if full is not None:
                raise full from exc
            raise
        old, s.lifecycle.export_dir = s.export_dir, final
        if old is not None:  # its client may still be fetching it: it goes in RETIRED_S seconds
            with self._lock:
                self._retired.append((time.monotonic(), id(s), old))
        self.prune()
        self.files.added(sum(p.stat().st_size for p in final.iterdir()))
        self.make_room(0, keep=s)  # the estimate was short: others' idle files go

    def prune(self, now: Optional[float] = None, everything: bool = False) -> int:
        """Deletes the views and export folders replaced more than `RETIRED_S` seconds ago
        (with `everything`: all replaced ones, to make room); returns how many went."""
        now = time.monotonic() if now is None else now
        with self._lock:
            gone = [f for when, _, f in self._retired if everything or now - when > RETIRED_S]
            self._retired = [r for r in self._retired if r[2] not in gone]
            for views in self._views.values():
                old = [v for v, when in views if when is not None and (everything or now - when > RETIRED_S)]
                views[:] = [(v, when) for v, when in views if v not in old]
                gone += old
        for f in gone:
            if f.is_dir():
                shutil.rmtree(f, ignore_errors=True)
            else:
                f.unlink(missing_ok=True)
        return len(gone)

    def _remove_files(self, s: Session) -> None:
        if s.export_dir is not None:
            shutil.rmtree(s.export_dir, ignore_errors=True)
            s.lifecycle.export_dir = None
        with self._lock:
            views = self._views.pop(id(s), [])
            exports = [f for _, owner, f in self._retired if owner == id(s)]
            self._retired = [r for r in self._retired if r[1] != id(s)]
        for p, _ in views:
            p.unlink(missing_ok=True)
        for f in exports:
            shutil.rmtree(f, ignore_errors=True)

    # ----------------------------------------------------------------- release
    def close(self, s: Session, reason: str = "closed") -> None:
        """Releases a session's memory and own files (views, exports) for `reason`; an event
        running on it finishes first. Its client's other files stay (see `_expire`)."""
        with self._lock:
            self._sessions.pop(id(s), None)
            for client in [c for c, v in self._by_client.items() if v is s]:
                del self._by_client[client]
        with s.lock:
            if s.closed is None:
                self.released[reason] = self.released.get(reason, 0) + 1
                log.info("session %x released: %s", id(s), reason)
            self._remove_files(s)
            s.lifecycle.closed = reason  # later use says why
            s.release()
        with self._lock:
            self._client_of.pop(id(s), None)

    def _expire(self, s: Session, reason: str) -> None:
        """Releases `s` for `reason` (memory, disk) with its client's files: the user is told
        to upload again and press Run."""
        client = self.client_of(s)
        self.close(s, reason)
        with self._lock:
            replaced = client is not None and client in self._by_client  # a newer session of it
        if client is not None and not replaced:
            self.files.release(client)

    def _enforce_budget(self, keep: Optional[Session] = None) -> int:
        """Releases least recently used idle sessions until the total fits; returns how many."""
        if not self.budget_bytes:
            return 0
        victims = []
        with self._lock:
            total = sum(s.nbytes for s in self._sessions.values())
            for s in list(self._sessions.values()):
                if total <= self.budget_bytes:
                    break
                if s is keep or not s.lock.acquire(blocking=False):  # in use: not idle
                    continue
                s.lock.release()
                total -= s.nbytes
                victims.append(s)
        for s in victims:
            self._expire(s, "memory")
        if victims:
            release_free_memory()
        return len(victims)

    def sweep(self, now: Optional[float] = None) -> int:
        """Releases sessions idle for longer than `idle_s`, and the files of clients idle that
        long; deletes uploads no event used (files.py); returns how many sessions went."""
        now = time.monotonic() if now is None else now
        closed = 0
        if self.idle_s:
            with self._lock:
                idle = [s for s in self._sessions.values() if now - s.last_used > self.idle_s]
            for s in idle:
                if not s.lock.acquire(blocking=False):  # an event is running on it: not idle
                    continue
                try:
                    self.close(s, "idle")
                    closed += 1
                finally:
                    s.lock.release()
            for client, seen in self.files.clients():
                if now - seen > self.idle_s:
                    with self._lock:
                        s = self._by_client.get(client)
                    if s is None or s.closed:
                        self.files.release(client)
        self.files.sweep(now)
        self.prune(now)
        if closed:
            release_free_memory()
        return closed

    def start_sweeper(self, interval_s: Optional[float] = None) -> None:
        """One background thread that sweeps idle sessions and unused uploads (every idle_s / 4,
        at most a minute, and often enough for uploads unused for `files.unused_s`)."""
        if self._sweeper is not None:
            return
        interval = interval_s or max(1.0, min(RETIRED_S / 2, self.files.unused_s / 4,
                                              self.idle_s / 4 if self.idle_s else 60.0))

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.sweep()
                except Exception:  # noqa: BLE001  (never let the sweeper die)
                    log.exception("session sweep failed")

        self._sweeper = threading.Thread(target=loop, name="panosamic-session-sweeper", daemon=True)
        self._sweeper.start()

    def close_all(self) -> None:
        """Shutdown: every session released, the whole root deleted (Gradio's cache in it)."""
        self._stop.set()
        with self._lock:
            sessions = list(self._sessions.values())
        for s in sessions:
            self.close(s, "closed")
        shutil.rmtree(self.root, ignore_errors=True)
        if self._owner_lock is not None:
            os.close(self._owner_lock)
            self._owner_lock = None


__all__ = ["SessionStore", "SessionExpired", "release_free_memory", "clean_stale_folders", "hold_folder",
           "temp_parent", "TMP_PREFIX", "OWNER_LOCK", "EXPIRED", "VIEWS_KEPT", "RETIRED_S"]
