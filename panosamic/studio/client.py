"""For `gradio_client` users of PanoSAMic Studio: a server that went away, said in words.

When the app's process dies in the middle of an event (kill -9, a crash, the kernel's OOM
killer), nothing on the server can answer: gradio_client then raises a bare
`concurrent.futures.CancelledError()` (its event stream closed without a result) for the call
in flight, and `httpx.ConnectError` for the calls after it. These helpers turn both into
`ServerStopped` with `messages.SERVER_STOPPED` ("The server stopped; press Run again."), as
the page says on its status line (static/connection.js)::

    from gradio_client import Client, handle_file
    from panosamic.studio.client import ServerStopped, predict

    c = Client("http://127.0.0.1:7860/")
    try:
        out = predict(c, handle_file("room.jpg"), api_name="/segment")
    except ServerStopped as e:
        print(e)            # The server stopped; press Run again.

The app's own refusals stay gradio_client's `AppError` with the app's message. Only
gradio_client and httpx (its HTTP library) are needed, imported when a call fails.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
from typing import Any, Iterator, Optional

from ..errors import PanoSAMicError
from .messages import SERVER_STOPPED


class ServerStopped(PanoSAMicError, ConnectionError):
    """The app's server stopped (or cannot be reached) before it answered: press Run again
    once it is back (its sessions went with it)."""

    def __init__(self, message: str = SERVER_STOPPED):
        super().__init__(message)


def _server_gone(exc: BaseException) -> bool:
    """Whether `exc` from gradio_client means the connection to the server was lost or refused.
    A time-out is not (a busy server is still there)."""
    if isinstance(exc, concurrent.futures.CancelledError):  # its event stream closed without a result
        return True
    try:
        import httpx
    except ImportError:  # gradio_client without httpx cannot have raised one of its errors
        return isinstance(exc, ConnectionError)
    return isinstance(exc, (httpx.NetworkError, httpx.RemoteProtocolError, ConnectionError))


@contextlib.contextmanager
def server_stopped_in_words() -> Iterator[None]:
    """Inside it, a lost or refused connection to the server raises `ServerStopped` instead of
    gradio_client's bare CancelledError or httpx's ConnectError; everything else passes as is."""
    try:
        yield
    except ServerStopped:
        raise
    except BaseException as exc:  # CancelledError is an Exception here, but be exact about what we keep
        if _server_gone(exc):
            raise ServerStopped() from None
        raise


def predict(client: Any, *data: Any, api_name: str, **kwargs: Any) -> Any:
    """`client.predict(*data, api_name=..., **kwargs)` (a gradio_client.Client), with a server
    that stopped before answering raised as `ServerStopped`."""
    with server_stopped_in_words():
        return client.predict(*data, api_name=api_name, **kwargs)


def result(job: Any, timeout: Optional[float] = None) -> Any:
    """`job.result(timeout)` of a `client.submit(...)` job, with a server that stopped before
    answering raised as `ServerStopped`. A job you cancelled yourself (`job.cancel()`) still
    raises CancelledError."""
    communicator = getattr(job, "communicator", None)  # gradio_client's Job: cancel() sets should_cancel
    if job.cancelled() or getattr(communicator, "should_cancel", False) is True:
        return job.result(timeout)
    with server_stopped_in_words():
        return job.result(timeout)


__all__ = ["ServerStopped", "server_stopped_in_words", "predict", "result"]
