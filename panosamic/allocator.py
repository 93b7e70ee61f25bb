"""A fast memory allocator for the processes the project starts (CLI, bench, app).

SAM's global attention allocates and frees buffers of hundreds of MB per block. glibc's
malloc serves each of them with a fresh `mmap` and unmaps it on free, so every block faults
its pages in again (on a 2-core machine the vit_b encoder spends more time in the kernel
than in the matrix products). tcmalloc keeps and reuses that memory.

`use_fast_allocator()`, called first thing in a `__main__`, does one of:

- tcmalloc already runs in this process: nothing.
- `libtcmalloc_minimal.so.4` is found (Debian/Ubuntu `libtcmalloc-minimal4`, conda
  `gperftools`, or the path in PANOSAMIC_TCMALLOC): re-executes the same command line once
  with it in LD_PRELOAD (Linux only; an environment variable guards against loops).
- otherwise, on glibc: tunes glibc in this process (`mallopt`) so that large blocks come from
  the heap and stay there instead of being mapped and unmapped each time; a server
  (`use_fast_allocator(arenas=SERVER_ARENAS)`, the app) also caps glibc's arenas.

PANOSAMIC_ALLOCATOR chooses: "auto" (default: the above), "tcmalloc" (the same, and says so
on stderr if it cannot), "glibc" (only the in-process tuning, no re-exec) or "system"
(leave the allocator alone). `allocator_info()` says which one runs (from /proc/self/maps).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import subprocess
import sys
from typing import Any, Dict, List, Optional

ENV_CHOICE = "PANOSAMIC_ALLOCATOR"
ENV_LIBRARY = "PANOSAMIC_TCMALLOC"
# Set in the re-executed process so that it never re-executes again (even if the preload failed).
ENV_GUARD = "PANOSAMIC_ALLOCATOR_REEXEC"
CHOICES = ("auto", "tcmalloc", "glibc", "system")
TCMALLOC_NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")

# glibc mallopt parameters (malloc.h) and the values we set: keep blocks up to 2 GiB in the heap
# and do not hand freed memory back to the OS until 2 GiB sit free at its top. mallopt takes an
# int, so 2**31 - 1 is the largest value it can express.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_GLIBC_TUNING = {"mmap_threshold": (_M_MMAP_THRESHOLD, 2**31 - 1), "trim_threshold": (_M_TRIM_THRESHOLD, 2**31 - 1)}
_glibc_tuned: Dict[str, int] = {}

# glibc gives each thread that allocates an arena of its own, up to 8 per core, and a block
# freed goes back to its thread's arena. A server's threads come and go (Gradio serves events
# from a pool of up to 40 threads), so every arena ends up holding freed pieces between live
# ones that malloc_trim cannot hand back. Measured with `python -m devtools.soak` (6 clients
# looping whole visits, demo checkpoint, 2-core machine): RSS ended 29-42 % above its level
# after the first loop with glibc's default, 2 % with two arenas. MALLOC_ARENA_MAX, when set,
# is the user's choice and stands.
_M_ARENA_MAX = -8
SERVER_ARENAS = 2


def _choice() -> str:
    value = os.environ.get(ENV_CHOICE, "auto").strip().lower() or "auto"
    if value not in CHOICES:
        print(f"panosamic: {ENV_CHOICE}={value!r} is not one of {', '.join(CHOICES)}; using auto",
              file=sys.stderr)
        return "auto"
    return value


def _mapped_libraries() -> List[str]:
    """Paths of the shared objects mapped into this process (Linux), else []."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            paths = {line.split(None, 5)[5].strip() for line in f if len(line.split(None, 5)) == 6}
    except OSError:
        return []
    return sorted(p for p in paths if ".so" in os.path.basename(p))


def running_tcmalloc() -> Optional[str]:
    """The tcmalloc (or jemalloc) library mapped into this process, or None."""
    for path in _mapped_libraries():
        name = os.path.basename(path)
        if name.startswith(("libtcmalloc", "libjemalloc")):
            return path
    return None


def find_tcmalloc() -> Optional[str]:
    """Path of an installed `libtcmalloc_minimal.so.4` (or `libtcmalloc.so.4`), or None.

    Looks at PANOSAMIC_TCMALLOC, then the dynamic linker's cache (`ldconfig -p`), then the
    usual library folders and an active conda environment.
    """
    explicit = os.environ.get(ENV_LIBRARY)
    if explicit:
        return explicit if os.path.isfile(explicit) else None
    if not sys.platform.startswith("linux"):
        return None
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=5,
                             env={"PATH": "/sbin:/usr/sbin:/bin:/usr/bin:" + os.environ.get("PATH", "")}).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for name in TCMALLOC_NAMES:
        for line in out.splitlines():
            parts = line.strip().split(" => ")
            # skip 32-bit copies (a 64-bit interpreter cannot preload them)
            if len(parts) == 2 and parts[0].split()[0] == name and "32" not in parts[0].split("(")[-1] \
                    and os.path.isfile(parts[1]):
                return parts[1]
    folders = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/lib/x86_64-linux-gnu",
               "/usr/lib64", "/usr/lib", "/usr/local/lib"]
    if os.environ.get("CONDA_PREFIX"):
        folders.insert(0, os.path.join(os.environ["CONDA_PREFIX"], "lib"))
    for name in TCMALLOC_NAMES:
        for folder in folders:
            for path in glob.glob(os.path.join(folder, name)):
                if os.path.isfile(path):
                    return path
    return None


def _is_glibc() -> bool:
    import platform

    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def tune_glibc() -> Dict[str, int]:
    """Keeps large blocks in glibc's heap (mallopt). Returns what was set ({} when not glibc)."""
    if all(name in _glibc_tuned for name in _GLIBC_TUNING) or not _is_glibc():
        return dict(_glibc_tuned)
    for name, (param, value) in _GLIBC_TUNING.items():
        if _mallopt(param, value):
            _glibc_tuned[name] = value
    return dict(_glibc_tuned)


def _mallopt(param: int, value: int) -> bool:
    """glibc's mallopt(param, value); False where it refused or libc cannot be loaded."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    return libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) == 1


def limit_arenas(count: int = SERVER_ARENAS) -> Optional[int]:
    """Caps glibc's malloc arenas at `count` (mallopt M_ARENA_MAX; call before the threads
    start). Returns the cap in force: `count`, the user's MALLOC_ARENA_MAX when it is set (then
    nothing is changed), or None where glibc's malloc does not run (tcmalloc, macOS, musl)."""
    if count < 1:
        raise ValueError("count must be at least 1")
    if not _is_glibc() or running_tcmalloc():
        return None
    user = os.environ.get("MALLOC_ARENA_MAX", "").strip()
    if user.isdigit() and int(user) > 0:
        _glibc_tuned["arena_max"] = int(user)
        return int(user)
    if not _mallopt(_M_ARENA_MAX, count):
        return None
    _glibc_tuned["arena_max"] = count
    return count


def _reexec_argv() -> Optional[List[str]]:
    """The command line that started this interpreter, when it can be run again as is."""
    orig = list(getattr(sys, "orig_argv", []) or [])
    if len(orig) < 2 or not sys.executable or sys.flags.interactive:
        return None
    if sys.argv and sys.argv[0] in ("", "-"):  # a script from stdin cannot be read twice
        return None
    return [sys.executable] + orig[1:]


def use_fast_allocator(arenas: Optional[int] = None) -> Dict[str, Any]:
    """Call first thing in a program's `__main__` (before heavy imports and threads).

    May replace the process (os.execv, same command line and environment plus LD_PRELOAD):
    never call it from library code or tests. Returns `allocator_info()` when it does not.
    `arenas`: on glibc also cap its malloc arenas at this many (`limit_arenas`; a server that
    serves events from many threads passes `SERVER_ARENAS`).
    """
    choice = _choice()
    if choice == "system" or running_tcmalloc():
        return allocator_info()
    if choice in ("auto", "tcmalloc") and not os.environ.get(ENV_GUARD) and sys.platform.startswith("linux"):
        library = find_tcmalloc()
        argv = _reexec_argv()
        if library and argv:
            env = dict(os.environ)
            env[ENV_GUARD] = library
            env["LD_PRELOAD"] = ":".join(p for p in (library, env.get("LD_PRELOAD", "")) if p)
            sys.stdout.flush()
            sys.stderr.flush()
            try:
                os.execve(argv[0], argv, env)
            except OSError as e:  # fall through to the in-process tuning
                print(f"panosamic: could not restart with tcmalloc ({e})", file=sys.stderr)
        elif choice == "tcmalloc":
            print("panosamic: tcmalloc not found (install libtcmalloc-minimal4 or set "
                  f"{ENV_LIBRARY}); using glibc's allocator, tuned", file=sys.stderr)
    if os.environ.get(ENV_GUARD) and choice == "tcmalloc" and not running_tcmalloc():
        print(f"panosamic: preloading {os.environ[ENV_GUARD]} failed; using glibc's allocator, tuned",
              file=sys.stderr)
    tune_glibc()
    if arenas is not None:
        limit_arenas(arenas)
    return allocator_info()


def allocator_info() -> Dict[str, Any]:
    """Which allocator this process runs: {"name": "tcmalloc"|"jemalloc"|"glibc"|"system",
    "library": path or None, "glibc_tuning": {mallopt parameter: value} ({} if untouched)}."""
    library = running_tcmalloc()
    if library:
        name = "jemalloc" if "jemalloc" in os.path.basename(library) else "tcmalloc"
    else:
        name = "glibc" if _is_glibc() else "system"
    return {"name": name, "library": library, "glibc_tuning": dict(_glibc_tuned) if not library else {}}


def describe_allocator() -> str:
    """One line for logs, e.g. "tcmalloc (/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4)"."""
    info = allocator_info()
    if info["library"]:
        return f"{info['name']} ({info['library']})"
    if info["glibc_tuning"]:
        arenas = info["glibc_tuning"].get("arena_max")
        return "glibc, tuned (large blocks kept in the heap" + (f", {arenas} arenas)" if arenas else ")")
    return info["name"]
