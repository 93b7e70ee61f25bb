"""What the app says: exceptions turned into one plain line with a fix, what Run still
needs, the edit status and the Run summary. Never a stack trace, never a server path."""

from __future__ import annotations

import asyncio
import concurrent.futures
import html
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..errors import PanoSAMicError
from .checkpoints import MODALITY_NAMES, Checkpoints
from .files import DISK_FULL, disk_full
from .candidates import fit_words
from .session import Session

# A web address in a message, shown as it is (where to download a file is no secret), less
# any credentials and query (a private mirror's password, a signed link); or an absolute path
# (POSIX or Windows) that does not start inside a word (`~/.cache/...`, a relative `a/b/c`
# are no server folders), of which only the last part is shown.
_PATH_RE = re.compile(r"(?P<url>\b(?:https?|ftp)://(?:[^\s/'\"`<>@]*@)?(?P<site>[^\s'\"`<>?#]+)[^\s'\"`<>]*)"
                      r"|(?<![\w~.\-])(?:[A-Za-z]:\\|/)(?:[^\s'\"`:,;()]+[/\\])+(?P<name>[^\s'\"`:,;()/\\]*)")
# Folders the README and the errors name, shown whole under `~`: the SAM downloads' default
# folder and the Hugging Face cache's (the places a user is told to put a file).
DOCUMENTED_FOLDERS = (".cache/panosamic", ".cache/huggingface")
# The placeholder the errors' examples use (sam='/path/to/sam_vit_h_4b8939.pth').
_EXAMPLE_PATH = "/path/to/"


#: An event on no session from a page (or API client) served before the server last started:
#: its session went with the previous process (see page.py's Studio.start_id).
RESTARTED_SINCE = "The server restarted since this page was opened: press Run again."

#: A server that went away without answering (kill -9, a crash, out of memory): its clients
#: lost the connection mid-event (the page's static/connection.js, panosamic.studio.client).
SERVER_STOPPED = "The server stopped; press Run again."

JOB_CUT_SHORT = ("The job was stopped before it finished (cancelled, timed out, or the server is restarting). "
                 "Nothing of it was kept: press the button again.")


CLICK_BEFORE_RUN = "Press Run first: clicks refine a segmented panorama."


# What Markdown reads as formatting (CommonMark's backslash escapes), `<` and `&` aside.
_MARKDOWN_RE = re.compile(r"([\\`*_{}\[\]()#+\-.!|~$])")


def html_text(text: str) -> str:
    """`text` for a pop-up (gr.Error, gr.Info), which Gradio shows as HTML: `<`, `>` and `&` as
    entities, so that `--checkpoint <folder>` and a prompt key typed as HTML stay text."""
    return html.escape(text, quote=False)


def markdown_text(text: str) -> str:
    """`text` not written by the app (a class name from a checkpoint's config.json) as itself
    inside the app's Markdown: no formatting, link or HTML of its own."""
    return html.escape(_MARKDOWN_RE.sub(r"\\\1", text), quote=False)


def hide_paths(text: str) -> str:
    """`text` with every absolute path replaced by its last part (a server's folders are
    nobody's business; the log keeps the details). Web addresses stay whole (without
    credentials or query), and so do paths inside the documented cache folders, written under
    `~` (`DOCUMENTED_FOLDERS`: "put it at ~/.cache/panosamic/sam/..." says where)."""
    home = str(Path.home())
    documented = [os.path.join(home, folder) for folder in DOCUMENTED_FOLDERS] if home != os.sep else []

    def shown(m: "re.Match[str]") -> str:
        if m.group("url"):
            scheme = m.group("url").split("://", 1)[0]
            return f"{scheme}://{m.group('site')}"
        path = m.group(0)
        if any(path == folder or path.startswith(folder + os.sep) for folder in documented):
            return "~" + path[len(home):]
        if path.startswith(_EXAMPLE_PATH):
            return path
        return m.group("name") or "…"

    return _PATH_RE.sub(shown, text)


def user_message(exc: BaseException) -> str:
    """A short explanation and a fix, never a stack trace or a server path."""
    name = type(exc).__name__
    if isinstance(exc, (asyncio.CancelledError, concurrent.futures.CancelledError, KeyboardInterrupt)):
        return JOB_CUT_SHORT
    if disk_full(exc):  # errno 28 with the paths of the copy that failed: neither is the user's business
        return DISK_FULL
    text = hide_paths(str(exc) or name)
    if "OutOfMemory" in name or "out of memory" in text.lower():
        return ("Not enough GPU memory for this checkpoint. Close other GPU programs, start the app with "
                "`--dtype bfloat16` (or float16), pick a smaller checkpoint, or run on the CPU with `--device cpu`.")
    if isinstance(exc, PanoSAMicError):
        if type(exc).__name__ == "WeightsError":
            return (f"Could not load the checkpoint: {text} For offline use, start the app with "
                    "`--checkpoint <folder>` holding model.safetensors and sam.pth (config.json optional); "
                    "to try the app without weights, pick Demo in the checkpoint list.")
        return text
    if isinstance(exc, FileNotFoundError):
        return f"A file is missing: {text}"
    if isinstance(exc, (ConnectionError, TimeoutError)) or "connection" in text.lower():
        return (f"No network: {text[:200]}. Pick Demo, or download the checkpoint elsewhere and start the app "
                "with `--checkpoint <folder>`.")
    if isinstance(exc, MemoryError):
        return "Out of memory: try a smaller panorama."
    if isinstance(exc, RecursionError):
        return "That input is nested too deeply: send plain lists of numbers."
    return f"Unexpected error ({name}). Details are in the server log."


def message_markdown(text: str) -> str:
    """A message of the app's for a Markdown status line: angle brackets and ampersands outside `code spans`
    escaped, so that "<folder>" or HTML typed by a user shows as text instead of vanishing as
    a tag (inside a code span Markdown shows them as they are)."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):  # the even parts are outside code spans
        parts[i] = html.escape(parts[i], quote=False)
    if len(parts) % 2 == 0:  # an unmatched backtick: no code span after it
        parts[-2:] = [parts[-2] + "`" + html.escape(parts[-1], quote=False)]
    return "`".join(parts)


def status_error(text: str) -> str:
    """A refusal as the page's status line shows it: the whole message, marked as a problem."""
    return f"⚠ {message_markdown(text)}"


def given_maps(pano: Any, depth: Any, normals: Any) -> Tuple[str, ...]:
    """The modalities present among the inputs (only presence matters: any non-None marker)."""
    return tuple(m for m, v in (("image", pano), ("depth", depth), ("normals", normals)) if v is not None)


def requirements_text(checkpoints: Checkpoints, choice: Optional[str], pano: Any, depth: Any,
                      normals: Any, estimates: bool = False) -> Tuple[str, bool]:
    """(Markdown: what the selected checkpoint needs and what is missing, whether Run can start).

    Only presence matters: `pano`, `depth` and `normals` are the inputs, or any non-None marker.
    "Automatic" names the checkpoint it takes for the maps given (`Checkpoints.for_maps`).
    `estimates`: a missing depth map (and so the normals) is estimated from the photo.
    """
    maps = given_maps(pano, depth, normals)
    value = (choice or checkpoints.default).strip() or checkpoints.default
    prefix = ""
    if value == checkpoints.AUTO:
        value = checkpoints.concrete(value, maps)
        prefix = f"Automatic: **{checkpoints.label(value)}**. "
    mods = checkpoints.modalities(value)
    unavailable = False
    have = {"image": pano is not None, "depth": depth is not None, "normals": normals is not None}
    if mods is None:
        need = "This checkpoint's inputs are read when it loads."
        missing: List[str] = []
    else:
        need = "Needs " + ", ".join(f"**{MODALITY_NAMES[m]}**" for m in mods) + "."
        missing = [m for m in mods if not have[m]]
    if value in checkpoints.demos:
        need += " A toy model: it knows only the project's rendered rooms."
    elif checkpoints.needs_download(value):
        if checkpoints.hub.known_unreachable():
            demo = checkpoints.demo_for(maps)
            offline = f" Pick **{checkpoints.label(demo)}** to work offline." if demo else ""
            need += f" ⚠ Not downloaded, and the Hugging Face Hub cannot be reached.{offline}"
            unavailable = True
        else:
            need += " Downloaded on the first Run."
    need = prefix + need
    if pano is None:
        return f"{need} Upload a panorama or pick an example.", False
    derived = "normals" in missing and have["depth"]
    if derived:
        missing.remove("normals")
    estimated = [m for m in missing if estimates]
    missing = [m for m in missing if m not in estimated]
    if missing:
        names = " and ".join(MODALITY_NAMES[m] for m in missing)
        return (f"⚠ {need} Missing: {names}. Upload it, or pick **Automatic**, which takes the checkpoint "
                "for the maps you have.", False)
    unused = [m for m in ("depth", "normals") if have[m] and mods is not None and m not in mods]
    note = f" The {' and '.join(unused)} map is not used by this checkpoint." if unused else ""
    if derived:
        note += " The normals will be derived from the depth map."
    if estimated:
        note += f" The {' and '.join(MODALITY_NAMES[m] for m in estimated)} will be estimated from the photo."
    return f"{need}{'' if unavailable else ' Ready: press **Run**.'}{note}", True


def edit_status(s: Session) -> str:
    """One line: the prompts, the selected mask and the number of edits."""
    parts = []
    if s.points:
        pos = sum(s.point_labels)
        parts.append(f"{pos} positive / {len(s.points) - pos} negative point(s)")
    if s.box is not None:
        parts.append("box across the seam" if s.box[0] > s.box[2] else "box")
    if s.pending_corner is not None:
        parts.append("first box corner set: click the opposite corner")
    if s.candidates is not None:
        mc = s.majority_class()
        share = 100.0 * float(s.selected_mask.mean())
        parts.append(f"mask #{s.selected + 1} selected ({share:.1f}% of the panorama, fit {s.selected_score:.2f} "
                     f"({fit_words(s.selected_score)}), mostly {markdown_text(s.classes[mc]) if mc is not None else '-'})")
    if not parts:
        parts.append("Click on the panorama to select a region.")
    if s.refined:
        parts.append(f"{len(s.refined)} edit(s)")
    return " · ".join(parts)


#: What the results say when a toy model made them (the bundled demos, trained on rendered rooms).
TOY_NOTE = ("Made by a toy model (a bundled demo trained on a few rendered rooms): expect a rough map, "
            "above all on real photos. A released checkpoint gives the real thing.")


def toy_note(s: Session) -> str:
    """TOY_NOTE when the session's labels come from a bundled demo checkpoint, else ""."""
    return TOY_NOTE if getattr(s, "toy", False) else ""


def about_duration(seconds: float) -> str:
    """'a second', '40 s', '12 min', '1.5 h': an estimate rounded the way a person says it."""
    if seconds < 1.5:
        return "a second"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def exact_duration(seconds: float) -> str:
    """'90 s', '2.5 min': a setting as it was given (e.g. the idle time in the expiry message)."""
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def run_message(s: Session, total: float, timings: Optional[Dict[str, float]] = None) -> str:
    """Markdown after Run: input size, total seconds and each stage (default s.timings), then
    the session's notes about its inputs (one paragraph each). Whether the embeddings came
    from the cache is not said: it would tell a user that someone else ran the same files (a
    Run from the cache simply lists no encoder stage; the server log says it)."""
    timings = s.timings if timings is None else timings
    stages = " · ".join(f"{k} {v:.2f} s" for k, v in timings.items() if k != "last_prompt")
    h, w = s.input_size
    notes = "".join(f"\n\n⚠ {n}" for n in getattr(s, "notes", ()))
    by = getattr(s, "checkpoint_label", None)
    by = f" with {by}" if by else ""
    toy = f"\n\n⚠ {TOY_NOTE}" if getattr(s, "toy", False) else ""
    return f"**Segmented {w}×{h} in {total:.2f} s**{by} — {stages}{toy}{notes}"


__all__ = ["user_message", "DISK_FULL", "hide_paths", "html_text", "markdown_text", "JOB_CUT_SHORT", "CLICK_BEFORE_RUN",
           "RESTARTED_SINCE", "SERVER_STOPPED", "requirements_text", "given_maps", "message_markdown", "status_error",
           "edit_status", "run_message", "toy_note", "TOY_NOTE",
           "about_duration", "exact_duration"]
