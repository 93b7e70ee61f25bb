"""Stopping the server gracefully: a Space restart or `docker stop` sends SIGTERM, and each
user still hears in plain words what happened to their job.

`Shutdown` runs every job of the app (`run`) and, once `drain` starts:

1. refuses new jobs with `ServerRestarting` ("try again in a minute");
2. lets the running jobs finish for up to `grace_s` seconds;
3. ends the jobs still running then with `JobCutShort` ("press Run again"): each job runs on a
   daemon thread while the caller waits for it, so the caller can answer at once and the
   job's thread simply stops with the process (a model load or an encoder pass cannot be
   interrupted from outside);
4. waits up to `deliver_s` seconds more until those answers left: `settled()` (the UI's queue
   has nothing waiting, running or undelivered, and no request came) held for `SETTLE_S`.

The process then exits. With Docker's default stop timeout (10 s, then SIGKILL) the defaults
(7 s + 2 s) still get the answers out; SIGKILL itself cannot be answered: clients then see
the connection drop.
"""

from __future__ import annotations

import contextvars
import os
import threading
import time
from typing import Any, Callable, Optional, Set

from ..errors import PanoSAMicError

#: Seconds the running jobs get to finish after SIGTERM (`app.py --shutdown-grace-s`).
SHUTDOWN_GRACE_S = 7.0
#: Seconds after the grace for the answers of the jobs cut short to reach their clients.
DELIVER_S = 2.0
#: Seconds `settled()` must hold before the answers count as delivered: a client fetches a
#: result's pictures after its message arrives (a round trip over the internet).
SETTLE_S = 1.0
_POLL_S = 0.05


class ServerRestarting(PanoSAMicError):
    """A job asked for while the server stops."""

    def __init__(self, message: str = "The server is restarting: try again in a minute."):
        super().__init__(message)


class JobCutShort(PanoSAMicError):
    """A job still running when the server's grace period ended."""

    def __init__(self, message: str = "The server restarted while this ran: press Run again."):
        super().__init__(message)


class _Job:
    __slots__ = ("ended", "finished", "result", "error")

    def __init__(self) -> None:
        self.ended = threading.Event()  # finished, or cut short
        self.finished = False
        self.result: Any = None
        self.error: Optional[BaseException] = None


class Shutdown:
    """The server's jobs and its graceful stop (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: Set[_Job] = set()
        self._closing = False

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._running)

    def run(self, fn: Callable[..., Any], *args: Any, inline: bool = False, nice: int = 0, **kwargs: Any) -> Any:
        """fn(*args, **kwargs) as one job: its result or its exception; `ServerRestarting`
        once `drain` began, `JobCutShort` when the grace ended first. `fn` runs in a copy of
        the caller's context (a UI's progress bar and notices keep working). `inline`: for
        jobs that take milliseconds (clicks, edits), which always finish within the grace:
        they run in the caller's thread, without the hop to a thread of their own. `nice`:
        the job's thread runs at this lower CPU priority (Linux), and so do the worker threads
        it starts (torch's, the decoders'), which inherit it."""
        job = _Job()
        with self._lock:
            if self._closing:
                raise ServerRestarting()
            self._running.add(job)
        if inline:
            try:
                return fn(*args, **kwargs)
            finally:
                with self._lock:
                    self._running.discard(job)
        context = contextvars.copy_context()

        def work() -> None:
            if nice:
                _lower_priority(nice)
            try:
                job.result = context.run(fn, *args, **kwargs)
            except BaseException as exc:  # noqa: BLE001  (handed to the caller as it is)
                job.error = exc
            job.finished = True
            job.ended.set()

        try:
            threading.Thread(target=work, name=f"job-{getattr(fn, '__name__', 'fn')}", daemon=True).start()
            job.ended.wait()
        finally:
            with self._lock:
                self._running.discard(job)
        if not job.finished:
            raise JobCutShort()
        if job.error is not None:
            error, job.error = job.error, None
            raise error
        return job.result

    def drain(self, grace_s: float = SHUTDOWN_GRACE_S, settled: Callable[[], bool] = lambda: True,
              deliver_s: float = DELIVER_S) -> Optional[int]:
        """Refuses new jobs, lets the running ones finish for up to `grace_s` seconds, cuts
        the rest short, then waits up to `deliver_s` seconds for `settled()`. Returns how many
        jobs were cut short, or None when a drain had already begun (a second SIGTERM)."""
        with self._lock:
            if self._closing:
                return None
            self._closing = True
        if self._wait(lambda: self.running == 0 and settled(), grace_s):
            return 0
        with self._lock:
            cut = list(self._running)
        for job in cut:
            job.ended.set()
        self._wait(lambda: self.running == 0 and settled(), deliver_s)
        return len(cut)

    @staticmethod
    def _wait(done: Callable[[], bool], timeout: float) -> bool:
        """Whether `done()` held for `SETTLE_S` seconds on end before `timeout` seconds passed."""
        now = time.monotonic()
        deadline, since = now + max(0.0, float(timeout)), None
        while True:
            if not done():
                since = None
            elif since is None:
                since = now
            elif now - since >= SETTLE_S:
                return True
            if now >= deadline:
                return False
            time.sleep(_POLL_S)
            now = time.monotonic()


def _lower_priority(nice: int) -> None:
    """Raises this thread's nice value by `nice` (Linux keeps one per thread); nothing where
    that is not possible."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
    except (AttributeError, OSError):  # not Linux, or not allowed
        pass


def lowest_priority() -> None:
    """This thread at the lowest CPU priority Linux has: nice 19 and the SCHED_IDLE policy,
    which runs only on a core nothing else wants (below nice 19, which still takes ~1.5 % of
    a core from a nice-0 task). The threads it starts afterwards (torch's, the decoders')
    inherit both. Nothing where that is not possible."""
    _lower_priority(19)
    try:
        os.sched_setscheduler(threading.get_native_id(), os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux, or not allowed
        pass


__all__ = ["Shutdown", "lowest_priority", "ServerRestarting", "JobCutShort", "SHUTDOWN_GRACE_S", "DELIVER_S",
           "SETTLE_S"]
