"""PanoSAMic Studio's logic: imported by `app.py` only (client.py by the app's gradio_client
users). Only page.py and refusals.py are written for Gradio (the page's handlers and how they
refuse); the rest knows no UI toolkit.

    settings.py     the app's flags and their PANOSAMIC_* variables; the ZeroGPU lender
    page.py         Studio: the page's handlers, each answering {component: value}
    refusals.py     a handler's exception as one plain message; the panorama input's check

    checkpoints.py  the picker's choices (and what a client may ask for), models loaded lazily
    backend.py      StudioBackend: the work behind each event, shared state
    session.py      one user's panorama at the working size: labels, edits, undo, prompts, candidates
    selection.py    its prompts and candidates, frozen values the session replaces whole
    edits.py        its refined masks and undo stack
    store.py        sessions' lifetime: idle timeout, memory and disk budgets, a user's files
    lifecycle.py    a session's lock, last use, why it closed, export folder (the store writes them)
    files.py        the app's temporary files: whose they are, how long they stay, a full disk
    serving.py      Gradio's side of them: its cache in the app's folder, the upload route, events
    cache.py        embeddings (PanoramaState) shared between users by content hash
    prompts.py      the /prompt JSON, checked strictly
    uploads.py      reading uploads; the example list
    render.py       pictures: the ERP view, legend, 3D figures; RenderCache, what is kept of them
    downloads.py    the files, written at the input size on request
    messages.py     user-facing texts: errors with a fix, status lines
    shutdown.py     every handler's job, and a graceful stop on SIGTERM
    client.py       for gradio_client users: a server that stopped mid-call, said in words

Importing it does not import torch or gradio (the page opens before any model code loads;
serving.py imports gradio in its functions; page.py and refusals.py, which app.py imports, at
their top).
"""

from .backend import StudioBackend, load_predictor
from .cache import EmbeddingCache, content_key
from .checkpoints import DEFAULT_SUBFOLDER, HUB_REPO, MODALITY_NAMES, Checkpoints, ModelKey, ModelRegistry
from .messages import edit_status, requirements_text, run_message, user_message
from .session import WORK_MAX_WIDTH, Session, working_size
from .store import SessionExpired, SessionStore
from .uploads import example_caption, find_examples, input_path, load_inputs, preview_image

__all__ = ["StudioBackend", "load_predictor", "EmbeddingCache", "content_key", "Checkpoints", "ModelKey",
           "ModelRegistry", "Session", "SessionStore", "SessionExpired", "working_size", "user_message",
           "requirements_text", "edit_status", "run_message", "find_examples", "example_caption", "input_path", "load_inputs",
           "preview_image", "HUB_REPO", "DEFAULT_SUBFOLDER", "MODALITY_NAMES", "WORK_MAX_WIDTH"]
