"""Where PanoSAMic checkpoints are: local files and folders, and the Hugging Face Hub.

A PanoSAMic checkpoint is a `model.safetensors` (`feature_fuser.*`, `semantic_decoder.*`),
optionally with a `config.json` and a SAM file beside it. `resolve_panosamic_checkpoint` finds
it in a local file, a local folder or a Hub repo id + subfolder (through `huggingface_hub`, so
its cache, `HF_HOME`, `HF_HUB_OFFLINE` and tokens work as usual); `list_subfolders` and
`cached_subfolders` say which subfolders hold one. Every failure raises `WeightsError` with a
message that says what to do.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from .config import RELEASED_SUBFOLDERS
from .errors import WeightsError

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

HUB_REPO_ID = "dfki-av/PanoSAMic"
PANOSAMIC_FILENAME = "model.safetensors"
CONFIG_FILENAME = "config.json"

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_path(text: str) -> bool:
    """True for a checkpoint spec that can only be a local path (not a Hub repo id)."""
    return (text.startswith((".", "/", "~", "\\")) or text.endswith((".safetensors", ".json"))
            or os.path.isabs(text) or not _REPO_ID.match(text))


def local_subfolders(root: Path, depth: int = 3) -> List[str]:
    """Subfolders of `root` (1 to `depth` levels down) holding a model.safetensors, as posix paths."""
    found = []
    for level in range(1, depth + 1):  # glob per level: a bounded walk, even for a large folder
        pattern = "/".join(["*"] * level) + "/" + PANOSAMIC_FILENAME
        found.extend(p.parent.relative_to(root).as_posix() for p in root.glob(pattern))
    return sorted(found)


def find_companions(checkpoint: PathLike) -> Dict[str, Optional[Path]]:
    """Optional files next to a model.safetensors: `config` (config.json) and `sam` (sam.pth or sam_vit_*.pth)."""
    folder = Path(checkpoint).parent
    config = folder / CONFIG_FILENAME
    sam = folder / "sam.pth"
    if not sam.is_file():
        candidates = sorted(folder.glob("sam_vit_*.pth"))
        sam = candidates[0] if candidates else None
    return {"config": config if config.is_file() else None, "sam": sam}


def resolve_panosamic_checkpoint(spec: PathLike = HUB_REPO_ID, subfolder: Optional[str] = None,
                                 revision: Optional[str] = None, token: Union[str, bool, None] = None) -> Path:
    """Local path of a PanoSAMic `model.safetensors`.

    `spec` is a local `.safetensors` file, a local folder holding `[subfolder/]model.safetensors`,
    or a Hub repo id (default `dfki-av/PanoSAMic`) whose `subfolder/model.safetensors` is fetched
    with `huggingface_hub.hf_hub_download` (`revision` and `token` are passed through; the HF
    cache, `HF_HOME`/`HF_HUB_CACHE`, `HF_HUB_OFFLINE` and stored tokens apply as usual).
    """
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.is_file():
        if subfolder:
            raise WeightsError(f"subfolder={subfolder!r} was given with the file {path}: pass the folder that "
                               "contains the subfolder instead, or drop subfolder")
        return path
    if path.is_dir():
        target = path / subfolder / PANOSAMIC_FILENAME if subfolder else path / PANOSAMIC_FILENAME
        if target.is_file():
            return target
        known = local_subfolders(path)
        hint = (f"subfolders with a {PANOSAMIC_FILENAME}: {', '.join(known)}" if known
                else f"no subfolder of {path} holds one either")
        raise WeightsError(f"{target} does not exist; {hint}")
    if looks_like_path(text):
        raise WeightsError(f"PanoSAMic checkpoint {text!r} not found: no such file or folder "
                           f"(a Hub repo id looks like {HUB_REPO_ID!r})")
    if text == HUB_REPO_ID and not subfolder:
        # The official repo keeps every model in its own folder: say so without a network round trip.
        raise WeightsError(f"{HUB_REPO_ID} holds several models: pass subfolder=..., e.g. one of "
                           f"{', '.join(RELEASED_SUBFOLDERS)} (list_subfolders() shows what the Hub has)")
    return hub_download(text, PANOSAMIC_FILENAME, subfolder, revision, token, required=True)


def companion_config(checkpoint: Path, spec: PathLike, subfolder: Optional[str] = None,
                     revision: Optional[str] = None, token: Union[str, bool, None] = None) -> Optional[Path]:
    """config.json beside the checkpoint: on disk, else (for a Hub checkpoint) fetched from the Hub."""
    local = checkpoint.parent / CONFIG_FILENAME
    if local.is_file():
        return local
    text = os.fspath(spec)
    if not Path(text).expanduser().exists() and not looks_like_path(text):
        return hub_download(text, CONFIG_FILENAME, subfolder, revision, token, required=False)
    return None


# --- the Hugging Face Hub ------------------------------------------------------------------------


def hub_cache_dir() -> str:
    """The HF cache folder huggingface_hub uses now (`HF_HUB_CACHE`, else under `HF_HOME`)."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    """True when huggingface_hub does not go online (`HF_HUB_OFFLINE`)."""
    from huggingface_hub import constants

    is_offline = getattr(constants, "is_offline_mode", None)
    return bool(is_offline()) if callable(is_offline) else bool(constants.HF_HUB_OFFLINE)


def hub_download(repo_id: str, filename: str, subfolder: Optional[str], revision: Optional[str],
                 token: Union[str, bool, None], required: bool) -> Optional[Path]:
    """`hf_hub_download` with errors turned into WeightsError (or None when not `required`)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError,
                                        LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    where = f"{repo_id}/{subfolder + '/' if subfolder else ''}{filename}"
    at_rev = f" at revision {revision!r}" if revision else ""
    try:
        return Path(hf_hub_download(repo_id, filename, subfolder=subfolder or None, revision=revision, token=token))
    except LocalEntryNotFoundError:
        # Not in the cache, and the Hub was not asked (offline) or could not be reached.
        if not required:
            return None
        if hub_offline():
            why = "HF_HUB_OFFLINE is set, so huggingface_hub does not download"
            fix = "unset HF_HUB_OFFLINE and run once with network access to fill the cache"
        else:
            why = "the Hugging Face Hub could not be reached (no network?)"
            fix = "run once with network access to fill the cache"
        raise WeightsError(
            f"{where}{at_rev} is not in the Hugging Face cache ({hub_cache_dir()}) and {why}. To fix: {fix}, "
            f"or download the file elsewhere and pass its local path (or its folder) instead of {repo_id!r}. "
            f"{_known_subfolders_hint(_offline_subfolders(repo_id, revision), repo_id)}"
        ) from None
    except GatedRepoError:
        raise WeightsError(f"{repo_id} is gated: accept its terms on huggingface.co and log in "
                           "(`hf auth login`, or pass token=...)") from None
    except RepositoryNotFoundError:
        raise WeightsError(f"Hub repo {repo_id!r} not found (or private: log in with `hf auth login` or pass "
                           f"token=...). The released weights are in {HUB_REPO_ID!r}.") from None
    except RevisionNotFoundError:
        raise WeightsError(f"revision {revision!r} not found in {repo_id}") from None
    except EntryNotFoundError:
        if not required:
            return None
        raise WeightsError(f"{where}{at_rev} does not exist on the Hub. "
                           f"{_known_subfolders_hint(list_subfolders(repo_id, revision, token), repo_id)}") from None
    except (HfHubHTTPError, OSError) as e:
        if not required:
            return None
        raise WeightsError(f"fetching {where}{at_rev} from the Hugging Face Hub failed ({e}). Pass a local "
                           "path instead, or try again later.") from None


def _known_subfolders_hint(known: Sequence[str], repo_id: str) -> str:
    if not known:
        return "No subfolder with a model.safetensors is known for this repo."
    return f"Known subfolders of {repo_id}: {', '.join(known)}."


def cached_subfolders(repo_id: str, revision: Optional[str] = None) -> List[str]:
    """Subfolders with a model.safetensors in the local HF cache of `repo_id` (any snapshot if no
    revision; `revision` is a commit hash or a ref such as "main"), from `scan_cache_dir`."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        cache = scan_cache_dir(hub_cache_dir())
    except (CacheNotFound, OSError):  # no cache yet, or unreadable
        return []
    found = set()
    for repo in cache.repos:
        if repo.repo_type != "model" or repo.repo_id != repo_id:
            continue
        for rev in repo.revisions:
            if revision and revision != rev.commit_hash and revision not in rev.refs:
                continue
            for f in rev.files:
                if f.file_name == PANOSAMIC_FILENAME:
                    sub = f.file_path.parent.relative_to(rev.snapshot_path).as_posix()
                    if sub != ".":
                        found.add(sub)
    return sorted(found)


def _offline_subfolders(repo_id: str, revision: Optional[str] = None) -> List[str]:
    """What is known without the network: cached subfolders, plus the released ones for the official repo."""
    known = set(cached_subfolders(repo_id, revision))
    if repo_id == HUB_REPO_ID:
        known.update(RELEASED_SUBFOLDERS)
    return sorted(known)


def list_subfolders(repo_id: str = HUB_REPO_ID, revision: Optional[str] = None,
                    token: Union[str, bool, None] = None) -> List[str]:
    """Subfolders of a Hub repo that hold a model.safetensors, sorted.

    Asks the Hub; offline or when it cannot be reached, falls back to what the local HF cache
    holds plus, for the official repo, `RELEASED_SUBFOLDERS`.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        if hub_offline():
            raise ConnectionError("HF_HUB_OFFLINE is set")
        files = HfApi().list_repo_files(repo_id, revision=revision, token=token)
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise WeightsError(f"Hub repo {repo_id!r}{' revision ' + repr(revision) if revision else ''} not found "
                           "(or private: log in or pass token=...)") from None
    except Exception as e:  # noqa: BLE001  (offline, DNS, proxy, timeouts: many exception types)
        logger.info("listing %s on the Hub failed (%s); using the cache and the released list", repo_id, e)
        return _offline_subfolders(repo_id, revision)
    suffix = "/" + PANOSAMIC_FILENAME
    return sorted({f[: -len(suffix)] for f in files if f.endswith(suffix)})
