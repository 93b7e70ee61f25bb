"""The lifetime of the sessions of all users: one owner for when a session's memory and files go.

A session is released (its arrays dropped, its export folder deleted) when

* its browser tab closes (the app calls `close`),
* it has been idle longer than `idle_s` (a single sweeper thread checks),
* the sessions together hold more than `budget_bytes`: the least recently used idle ones go
  first; their users are told to press Run again,
* or the app shuts down (`close_all`).

Using a released session raises `SessionExpired` with that message.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
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
from .messages import exact_duration
from .session import Session

log = logging.getLogger(__name__)

TMP_PREFIX = "panosamic-studio-"
EXPIRED = {
    "idle": "This session was closed after {idle} of inactivity to free memory: press Run again.",
    "memory": "This session was closed to make room for other users: press Run again.",
    "closed": "This session has ended: press Run again.",
}


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


def clean_stale_folders(parent: Optional[Path] = None) -> int:
    """Deletes the export folders of studio processes that no longer run (killed, crashed,
    the container restarted); returns how many went. A running process holds its folder's
    OWNER_LOCK (`hold_folder`), so only folders nobody holds go."""
    parent = Path(parent or tempfile.gettempdir())
    removed = 0
    for folder in parent.glob(TMP_PREFIX + "*"):
        if folder.is_dir() and _owner_dead(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


class SessionStore:
    """Owns the sessions' lifetime and export folders (see the module docstring).

    Args:
        budget_bytes: memory for all sessions together (`Session.nbytes`); 0 = no budget.
        idle_s: a session unused this long is released; 0 = never.
        root: the folder for export folders (default: a new one in the system temp folder). The
            store holds its OWNER_LOCK while the process runs, so that a later start can delete
            it if we are killed (`clean_stale_folders`).
    """

    def __init__(self, budget_bytes: int = 4 << 30, idle_s: float = 3600.0, root: Optional[Path] = None):
        self.budget_bytes = int(budget_bytes)
        self.idle_s = float(idle_s)
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self._owner_lock = hold_folder(self.root)
        self._sessions: "OrderedDict[int, Session]" = OrderedDict()  # least recently used first
        self._by_client: dict = {}  # the UI's client (browser tab) id -> its current session
        self._lock = threading.Lock()
        self._sweeper: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self.released = {"idle": 0, "memory": 0, "closed": 0}

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
        that `close_client` can release the session when the tab closes."""
        if replaces is not None and replaces is not s:
            self.close(replaces, "closed")
        with self._lock:
            self._sessions[id(s)] = s
            if client:
                old = self._by_client.get(client)
                self._by_client[client] = s
            else:
                old = None
        if old is not None and old is not s:
            self.close(old, "closed")
        self._enforce_budget(keep=s)

    def close_client(self, client: Optional[str]) -> None:
        """The browser tab `client` closed: its session goes now."""
        with self._lock:
            s = self._by_client.pop(client, None) if client else None
        if s is not None:
            self.close(s, "closed")
            release_free_memory()

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
            s.last_used = time.monotonic()
            try:
                yield s
            finally:
                s.last_used = time.monotonic()

    def export_dir(self, s: Session) -> Path:
        """A new, empty export folder for `s`; its previous one is deleted (the UI has
        already copied those files into its own cache)."""
        old = s.export_dir
        s.export_dir = Path(tempfile.mkdtemp(prefix=f"{id(s):x}-", dir=self.root))
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return s.export_dir

    def write_view(self, s: Session, jpeg: bytes) -> str:
        """Writes the session's current ERP picture (JPEG bytes) to its one view file and returns
        the path, for the UI to serve (it copies the file into its own cache). Atomic: a reader
        sees the previous picture or this one, never part of one."""
        path = self._view_path(s)
        tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
        tmp.write_bytes(jpeg)
        os.replace(tmp, path)
        return str(path)

    def _view_path(self, s: Session) -> Path:
        return self.root / f"{id(s):x}-view.jpg"

    # ----------------------------------------------------------------- release
    def close(self, s: Session, reason: str = "closed") -> None:
        """Releases a session's memory and files (its tab closed, or `reason`); an event
        running on it finishes first."""
        with self._lock:
            self._sessions.pop(id(s), None)
            for client in [c for c, v in self._by_client.items() if v is s]:
                del self._by_client[client]
        with s.lock:
            if s.closed is None:
                self.released[reason] = self.released.get(reason, 0) + 1
                log.info("session %x released: %s", id(s), reason)
            if s.export_dir is not None:
                shutil.rmtree(s.export_dir, ignore_errors=True)
                s.export_dir = None
            self._view_path(s).unlink(missing_ok=True)
            s.release(reason)

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
            self.close(s, "memory")
        if victims:
            release_free_memory()
        return len(victims)

    def sweep(self, now: Optional[float] = None) -> int:
        """Releases sessions idle for longer than `idle_s`; returns how many."""
        if not self.idle_s:
            return 0
        now = time.monotonic() if now is None else now
        with self._lock:
            idle = [s for s in self._sessions.values() if now - s.last_used > self.idle_s]
        closed = 0
        for s in idle:
            if not s.lock.acquire(blocking=False):  # an event is running on it: not idle
                continue
            try:
                self.close(s, "idle")
                closed += 1
            finally:
                s.lock.release()
        if closed:
            release_free_memory()
        return closed

    def start_sweeper(self, interval_s: Optional[float] = None) -> None:
        """One background thread that sweeps idle sessions (every idle_s / 4, at most a minute)."""
        if self._sweeper is not None or not self.idle_s:
            return
        interval = interval_s or max(1.0, min(60.0, self.idle_s / 4))

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.sweep()
                except Exception:  # noqa: BLE001  (never let the sweeper die)
                    log.exception("session sweep failed")

        self._sweeper = threading.Thread(target=loop, name="panosamic-session-sweeper", daemon=True)
        self._sweeper.start()

    def close_all(self) -> None:
        """Shutdown: every session released, the export root deleted."""
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
           "TMP_PREFIX", "OWNER_LOCK"]
