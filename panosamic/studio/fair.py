"""Heavy jobs (Run, SAM instances) shared fairly between the users of one server.

The UI's queue serves events first come, first served: one client (a script, a tab with many
Runs) could fill it, and every other user would wait behind all of them. `FairGate` lets each
client (the UI's id of a browser tab or API client) have one heavy job running and one
waiting; a further one is refused at once with `Busy`. When a slot is free, the waiting job
that starts is that of the client served longest ago (never served first; ties in order of
arrival) among those with no job running, so users take turns: a second user's Run goes
ahead of the first user's next one.

The UI lets more heavy events in than there are slots (page.py's HEAVY_WAITING), so that they
wait here, where their client is known, rather than in its own queue. Gradio-free, no torch.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional

from .store import EXPIRED, SessionExpired
from ..errors import InputError

BUSY = "Your previous Run is still going: wait for it to finish."


class Busy(InputError):
    """A client asked for a heavy job while it has one running and one waiting."""

    def __init__(self, message: str = BUSY):
        super().__init__(message)


class _Ticket:
    __slots__ = ("client", "cancelled")

    def __init__(self, client: Any) -> None:
        self.client = client
        self.cancelled = False


class FairGate:
    """Heavy jobs in turns (see the module docstring).

    Args:
        slots: heavy jobs running at once (over all clients).
        per_client: jobs a client may have running or waiting; one of them runs at a time.
    """

    def __init__(self, slots: int = 2, per_client: int = 2):
        self.slots = int(slots)
        self.per_client = int(per_client)
        self._cond = threading.Condition()
        self._jobs: Dict[Any, int] = {}     # client -> its jobs running or waiting
        self._running: Dict[Any, int] = {}  # client -> its jobs running (0 or 1)
        self._waiting: List[_Ticket] = []   # in order of arrival
        self._served: Dict[Any, int] = {}   # client with jobs -> when its last job started
        self._starts = 0

    @property
    def running(self) -> int:
        with self._cond:
            return sum(self._running.values())

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    @contextmanager
    def turn(self, client: Optional[str], progress: Optional[Callable[..., Any]] = None) -> Iterator[None]:
        """`with gate.turn(client):` one heavy job of `client`: raises `Busy` at once when the
        client has its share, else waits for its turn (saying so on `progress`) and holds a
        slot until the block ends. Without a client id (an in-process call) a job is a client
        of its own."""
        key: Any = client if client else object()
        with self._cond:
            if self._jobs.get(key, 0) >= self.per_client:
                raise Busy()
            self._jobs[key] = self._jobs.get(key, 0) + 1
            ticket = _Ticket(key)
            self._waiting.append(ticket)
            try:
                said = None
                while not self._may_start(ticket):
                    if ticket.cancelled:
                        raise SessionExpired(EXPIRED["closed"])
                    text = self._wait_text(ticket)
                    if progress is not None and text != said:
                        progress(0.0, desc=text)
                        said = text
                    self._cond.wait()
            except BaseException:
                self._waiting.remove(ticket)
                self._done(key, running=False)
                raise
            self._waiting.remove(ticket)
            self._running[key] = self._running.get(key, 0) + 1
            self._served[key] = self._starts
            self._starts += 1
        try:
            yield
        finally:
            with self._cond:
                self._done(key, running=True)

    def wrap(self, fn: Callable[..., Any], client: Optional[str],
             progress: Optional[Callable[..., Any]] = None) -> Callable[..., Any]:
        """`fn` run inside `turn(client, progress)`."""

        def in_turn(*args: Any, **kwargs: Any) -> Any:
            with self.turn(client, progress):
                return fn(*args, **kwargs)

        in_turn.__name__ = getattr(fn, "__name__", "job")
        return in_turn

    def cancel(self, client: Optional[str]) -> int:
        """The client went away (its tab closed): its waiting jobs end without running
        (`SessionExpired`); a running one finishes. Returns how many were waiting."""
        with self._cond:
            tickets = [t for t in self._waiting if client and t.client == client]
            for t in tickets:
                t.cancelled = True
            self._cond.notify_all()
        return len(tickets)

    # ----------------------------------------------------------------- the lock held
    def _may_start(self, ticket: _Ticket) -> bool:
        """A free slot, and `ticket` is next: of the waiting jobs whose client runs nothing,
        that of the client served longest ago (the first to arrive among equals)."""
        if ticket.cancelled or sum(self._running.values()) >= self.slots:
            return False
        ready = [t for t in self._waiting if not t.cancelled and not self._running.get(t.client)]
        return bool(ready) and min(ready, key=lambda t: self._served.get(t.client, -1)) is ticket

    def _wait_text(self, ticket: _Ticket) -> str:
        if self._running.get(ticket.client):
            return "Waiting for your previous Run to finish"
        others = sum(self._running.values()) + len(self._waiting) - 1
        return f"Waiting for your turn: {others} other job{'s' if others != 1 else ''} running or waiting"

    def _done(self, key: Any, running: bool) -> None:
        for table in (self._jobs, self._running) if running else (self._jobs,):
            table[key] -= 1
            if not table[key]:
                del table[key]
        if key not in self._jobs:
            self._served.pop(key, None)  # nothing in flight: a client like any new one
        self._cond.notify_all()


__all__ = ["FairGate", "Busy", "BUSY"]
