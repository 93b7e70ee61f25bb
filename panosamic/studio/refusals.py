"""How the page's handlers refuse: every exception of a handler becomes one plain message (a
pop-up for API clients, the whole text on a status line for the page's own events), never a
traceback or a server path; and the panorama input, which refuses a file it cannot read with a
message instead of PIL's error. Gradio's side of `messages.user_message`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
from typing import Any, Optional

import gradio as gr

from ..errors import PanoSAMicError
from ..io.headers import read_header
from . import messages
from .fair import FairGate
from .shutdown import Shutdown

log = logging.getLogger("panosamic.app")


def pop_up(message: str) -> gr.Error:
    """The error pop-up for `message`. Gradio shows a pop-up's text as HTML, so it is escaped
    here, where the app's messages become page content: `--checkpoint <folder>` keeps its
    `<folder>`, and HTML typed into a prompt key or a file's name stays text."""
    return gr.Error(messages.html_text(message), duration=None, print_exception=False)


def friendly(fn, shutdown: Optional[Shutdown] = None, quick: bool = False, nice: int = 0, status: Any = None,
             gate: Optional[FairGate] = None):
    """Turns every exception of a handler into a user-facing message (a job cut short
    included): a gr.Error for API clients, or, with `status` (the page's own events), the
    whole message on that status line, the other outputs left as they were. With `shutdown`
    the handler runs as one of its jobs: refused while the server stops, answered in plain
    words when the stop cuts it short (`quick` handlers, milliseconds long, run inline: see
    `Shutdown.run`). With `gate` it takes its turn among the heavy jobs of all clients
    (panosamic.studio.fair), its client read from the gr.Request among its arguments, and the
    wait shown on its gr.Progress."""

    def refuse(exc: BaseException):
        text = messages.user_message(exc)
        if status is not None:
            return {status: messages.status_error(text)}
        raise pop_up(text) from None

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            call = fn
            if gate is not None:
                given = (*args, *kwargs.values())
                request = next((a for a in given if isinstance(a, gr.Request)), None)
                progress = next((a for a in given if isinstance(a, gr.Progress)), None)
                call = gate.wrap(fn, getattr(request, "session_hash", None), progress)
            if shutdown is None:
                return call(*args, **kwargs)
            return shutdown.run(call, *args, inline=quick, nice=nice, **kwargs)
        except gr.Error:
            raise
        except (asyncio.CancelledError, concurrent.futures.CancelledError, KeyboardInterrupt) as exc:
            # A job cut short (a cancelled task, a GPU worker stopped, the server shutting down):
            # asyncio's CancelledError is a BaseException, so `except Exception` would let it out bare.
            log.warning("handler %s was cut short (%s)", fn.__name__, type(exc).__name__)
            return refuse(exc)
        except Exception as exc:  # noqa: BLE001
            if isinstance(exc, PanoSAMicError) or messages.disk_full(exc):
                # an expected refusal (bad input, a closed session, a full disk): one line, no traceback
                log.info("%s refused (%s): %s", fn.__name__, type(exc).__name__, messages.user_message(exc))
            else:
                log.exception("handler %s failed", fn.__name__)
            return refuse(exc)

    return wrapper


def panorama_input(**kwargs) -> gr.Image:
    """gr.Image for the panorama upload that reports a file it cannot decode with a clear
    message (a plain gr.Image fails inside PIL before the handler runs). The check wraps the
    instance's preprocess: a gr.Image subclass would make Gradio write an app.pyi stub."""
    image = gr.Image(**kwargs)
    preprocess = image.preprocess

    def checked(payload):
        path = getattr(payload, "path", None)
        if path:  # the header first: Gradio's own preprocess opens the file with PIL
            try:
                read_header(path, "image")
            except PanoSAMicError as exc:
                log.info("panorama refused (%s): %s", type(exc).__name__, messages.user_message(exc))
                raise pop_up(messages.user_message(exc)) from None
        try:
            return preprocess(payload)
        except Exception as exc:  # noqa: BLE001
            name = getattr(payload, "orig_name", None) or "the file"
            log.info("panorama refused (%s): %s cannot be read", type(exc).__name__, name)
            raise pop_up(f"{name} is not an image that can be read: upload a JPEG or PNG panorama "
                         "(equirectangular, width = 2 x height).") from None

    image.preprocess = checked  # type: ignore[method-assign]
    return image


__all__ = ["pop_up", "friendly", "panorama_input"]
